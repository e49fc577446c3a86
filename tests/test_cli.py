"""The command line, as a user runs it."""

import json
import os
import subprocess
import sys

import pytest
from entry_points import call


def _run(*args, timeout=240, env_extra=None):
    env = dict(os.environ, **(env_extra or {}))
    return subprocess.run([sys.executable, "-m", "sarathi", *args], capture_output=True,
                          text=True, timeout=timeout, env=env)


def _call(*args):
    """`python -m sarathi ARGS` through its entry point in this process (the tests of the
    launch itself, help, version, a first run and signals, start the module with _run)."""
    from sarathi.entrypoints.cli import main

    return call(main, "sarathi", args)


def test_help_lists_subcommands():
    r = _run("--help")
    assert r.returncode == 0
    for cmd in ("serve", "generate", "info"):
        assert cmd in r.stdout


def test_info_names_the_demo_model_s_folder(tmp_path):
    """AdaptiVocab's commands take a model folder; the demo's was named only in serve's
    start-up line."""
    r = _run("info", env_extra={"SARATHI_CACHE": str(tmp_path)})
    assert r.returncode == 0, r.stderr
    assert f"demo model: {tmp_path}/demo-" in r.stdout and "(built on first use)" in r.stdout


def test_version_and_no_command():
    r = _run("--version")
    assert r.returncode == 0 and r.stdout.startswith("sarathi "), r
    r = _run()
    assert r.returncode == 0 and "usage:" in r.stdout


def test_generate_on_the_demo_model_says_weights_are_random():
    r = _run("generate", "--prompt", "Hello", "--max-tokens", "5", "--temperature", "0",
             "--max-model-len", "256")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip()
    assert "random weights" in r.stderr


def test_serve_help_renders():
    r = _run("serve", "--help")
    assert r.returncode == 0, r.stderr
    assert "--overlap-scheduling" in r.stdout


def test_generate_flags_come_from_the_config():
    r = _run("generate", "--help")
    for flag in ("--chunk-size", "--max-num-seqs", "--scheduler", "--kv-cache-backend",
                 "--model_name", "--model_block_size", "--patch_tokenizer_path", "--temperature",
                 "--stop"):
        assert flag in r.stdout


def test_bad_model_is_a_clean_error():
    r = _call("generate", "--model", "/does/not/exist", "--prompt", "x")
    assert r.returncode == 2
    assert "does not exist" in r.stderr and "Traceback" not in r.stderr


def test_bad_flag_value_is_a_clean_error():
    r = _call("generate", "--chunk-size", "0", "--prompt", "x")
    assert r.returncode == 2 and "chunk_size" in r.stderr and "Traceback" not in r.stderr


def test_vllm_launch_habits_are_understood():
    from sarathi.entrypoints.cli import build_parser
    from sarathi.entrypoints.cli_args import config_from_args

    args = build_parser().parse_args(
        ["serve", "demo", "-tp", "1", "--max-num-batched-tokens", "256",
         "--enable-prefix-caching", "--generation-config", "vllm"])
    config = config_from_args(args)
    assert config.model.model == "demo"
    assert config.parallel.tensor_parallel_size == 1
    assert config.scheduler.chunk_size == 256
    assert config.cache.enable_prefix_caching
    assert config.model.generation_config == "vllm"
    vllm_line = build_parser().parse_args(
        ["serve", "demo", "--disable-log-requests", "--disable-log-stats", "--swap-space", "4",
         "--enable-chunked-prefill", "--kv-cache-dtype", "auto", "--max-log-len", "100",
         "--uvicorn-log-level", "warning", "--distributed-executor-backend", "mp",
         "--task", "generate", "--max-seq-len-to-capture", "8192", "--cpu-offload-gb", "0",
         "--guided-decoding-backend", "guidance", "--enable-request-id-headers"])
    assert vllm_line.log_level == "warning"
    assert config_from_args(vllm_line).parallel.executor == "mp"
    for unkept in (["--kv-cache-dtype", "fp8"], ["--pipeline-parallel-size", "2"],
                   ["--task", "embed"], ["--cpu-offload-gb", "4"],
                   ["--guided-decoding-backend", "xgrammar"]):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["serve", "demo", *unkept])
    clash = build_parser().parse_args(["serve", "demo", "--model", "other"])
    with pytest.raises(ValueError, match="two models"):
        config_from_args(clash)


def _demo_copy(path, generation_config):
    import json
    import shutil

    from sarathi.transformers_utils.demo import demo_model_path

    src = demo_model_path()
    for name in os.listdir(src):
        shutil.copy(os.path.join(src, name), path)
    (path / "generation_config.json").write_text(json.dumps(generation_config))
    return str(path)


def test_generation_config_sets_request_defaults(tmp_path):
    from sarathi import LLM

    model = _demo_copy(
        tmp_path, {"temperature": 0.3, "top_k": 20, "eos_token_id": 1, "max_new_tokens": 7}
    )
    defaults = LLM(model).get_default_sampling_params()
    assert defaults.temperature == 0.3 and defaults.max_tokens == 7
    plain = LLM(model, generation_config="vllm").get_default_sampling_params()
    assert plain.temperature == 1.0 and plain.top_k == 0 and plain.max_tokens == 16


def test_override_generation_config_merges_over_the_models(tmp_path):
    from sarathi import LLM
    from sarathi.entrypoints.cli import build_parser
    from sarathi.entrypoints.cli_args import config_from_args

    model = _demo_copy(tmp_path, {"temperature": 0.3, "top_k": 20, "max_new_tokens": 7})
    # vLLM's: merged over generation_config.json ('auto'); a dict or JSON text.
    for override in ({"temperature": 0.5, "max_new_tokens": 9}, '{"temperature": 0.5, '
                     '"max_new_tokens": 9}'):  # fmt: skip
        llm = LLM(model, override_generation_config=override)
        defaults = llm.get_default_sampling_params()
        assert (defaults.temperature, defaults.top_k, defaults.max_tokens) == (0.5, 20, 9)
        llm.engine.shutdown()
    # Over SamplingParams' own defaults with --generation-config vllm.
    llm = LLM(model, generation_config="vllm", override_generation_config={"top_p": 0.9})
    defaults = llm.get_default_sampling_params()
    assert (defaults.temperature, defaults.top_p, defaults.top_k) == (1.0, 0.9, 0)
    llm.engine.shutdown()
    config = config_from_args(build_parser().parse_args(
        ["serve", model, "--override-generation-config", '{"min_p": 0.1}']))  # fmt: skip
    assert json.loads(config.model.override_generation_config) == {"min_p": 0.1}


@pytest.mark.parametrize("override,match", [
    ('{"seed": 1}', "cannot set seed; it sets temperature, top_p"),
    ('{"temperature": "hot"}', "temperature must be a number"),
    ('{"top_p": 0}', "override_generation_config: .*top_p"),
    ('{"max_new_tokens": 0}', "max_new_tokens must be an integer >= 1"),
    ("[1]", "must be a JSON object"), ("{", "is not valid JSON"),
])  # fmt: skip
def test_a_bad_override_generation_config_is_refused(override, match):
    from sarathi import LLM

    with pytest.raises(ValueError, match=match):
        LLM("demo", override_generation_config=override)


def test_generate_takes_the_models_defaults_for_flags_left_unset(tmp_path):
    import json

    model = _demo_copy(tmp_path, {"temperature": 0.0})
    texts = set()
    for seed in ("1", "2"):
        r = _call("generate", "--model", model, "--prompt", "Hi", "--seed", seed, "--json",
                 "--max-tokens", "8", "--ignore-eos", "--logprobs", "2")
        assert r.returncode == 0, r.stderr
        out = json.loads(r.stdout.strip().splitlines()[-1])["outputs"][0]
        texts.add(out["text"])
        assert len(out["logprobs"]) == 8 and out["cumulative_logprob"] <= 0
    assert len(texts) == 1  # greedy from generation_config.json, whatever the seed
    r = _call("generate", "--model", model, "--prompt", "Hi", "--temperature", "1",
             "--top-k", "5", "--max-tokens", "2")
    assert r.returncode == 0, r.stderr


def test_generate_takes_the_models_max_new_tokens_without_max_tokens(tmp_path):
    import json

    model = _demo_copy(tmp_path, {"max_new_tokens": 5, "temperature": 0.0})

    def tokens(*extra):
        r = _call("generate", "--model", model, "--prompt", "Hi", "--json", "--ignore-eos",
                  *extra)
        assert r.returncode == 0, r.stderr
        return len(json.loads(r.stdout.strip().splitlines()[-1])["outputs"][0]["token_ids"])

    assert tokens() == 5  # as LLM.generate's default, not the flag's 16
    assert tokens("--max-tokens", "7") == 7
    assert tokens("--generation-config", "vllm") == 16
    # A cap, as the server reads it: past the context the output stops there, not refused.
    model = _demo_copy(tmp_path, {"max_new_tokens": 100, "temperature": 0.0})
    assert 0 < tokens("--max-model-len", "32") < 32


@pytest.mark.parametrize("args,says", [
    (["serve", "--max-request-bytes", "-1"], "--max-request-bytes"),
    (["serve", "--request-read-timeout", "0"], "--request-read-timeout"),
    (["serve", "--max-waiting-requests", "-5"], "--max-waiting-requests"),
    (["generate", "--prompt", "x", "--device", "foo"], "unknown device"),
    (["generate", "--prompt", "x", "--seed", "-1"], "seed"),
    # Past 64 bits it failed after the model had loaded, as "Overflow when unpacking long long".
    (["generate", "--prompt", "x", "--seed", str(2**64)], "seed must be an integer in [0, 2**63)"),
    (["generate", "--prompt", "x", "--max-model-len", "100000"], "model's context of 2048"),
    # 0 was taken as "the default page size" without a word.
    (["generate", "--prompt", "x", "--page-bytes", "0"], "page_bytes must be positive"),
    (["generate", "--prompt", "x", "--block-tokens", "0"], "block_tokens must be positive"),
    # vAttention's cache options were dropped without a word by the paged backend's own cache.
    (["generate", "--prompt", "x", "--attention-backend", "paged", "--page-bytes", "8KiB"],
     "page_bytes configures vAttention's KV cache, which attention_backend 'paged' does not use"),
    (["generate", "--prompt", "x", "--attention-backend", "paged", "--kv-layout", "mega",
      "--kv-cache-backend", "dense"], "kv_cache_backend, kv_layout configure vAttention's"),
    # Checked when the flags are read, not after the model has loaded.
    (["serve", "--chat-template", "no/such/template.jinja"], "is not a file"),
    (["serve", "--chat-template", "."], "is a folder"),
    # Taken and unused without the ray executor.
    (["generate", "--prompt", "x", "--ray-address", "auto"], "add --executor ray"),
    # Asked for and silently not done: the ray executor does not overlap steps.
    (["generate", "--prompt", "x", "--executor", "ray", "--overlap-scheduling"],
     "overlap_scheduling is not done by the ray executor"),
    # Ray assigns each rank its GPU: the index was checked on this host and then not used.
    (["generate", "--prompt", "x", "--executor", "ray", "--device", "cuda:1"],
     "the ray executor places each rank on a GPU Ray assigns"),
    # No tokenizer is loaded: the one named was never read, a patch never applied.
    (["generate", "--prompt", "x", "--skip-tokenizer-init", "--tokenizer", "t"],
     "tokenizer is not loaded with skip_tokenizer_init"),
    (["generate", "--prompt", "x", "--skip-tokenizer-init", "--patch-tokenizer", "p"],
     "patch_tokenizer is not loaded with skip_tokenizer_init"),
    # The patch tokenizer (which carries its base tokenizer) was loaded, --tokenizer dropped.
    (["generate", "--prompt", "x", "--tokenizer", "t", "--patch-tokenizer", "p"],
     "tokenizer is not read with patch_tokenizer"),
    # An unset shell variable (--model "$MODEL") served the random-weight demo model.
    (["serve", "--model", ""], "model is empty"),
    # A size without its unit read as that many bytes: "1.5" was a 1-byte budget.
    (["serve", "--kv-cache-memory", "1.5"], "not a whole number of bytes; add a unit"),
    # An empty key turned authentication off: `--api-key "$KEY"` with KEY unset served all.
    (["serve", "--api-key", ""], "--api-key: the key is empty"),
    # Likewise an empty served name: the server answered every client's model with a 404.
    (["serve", "--served-model-name", ""], "--served-model-name: the name is empty"),
    (["serve", "--served-model-name", "a", " "], "--served-model-name: the name is empty"),
    # A body between the two was refused with 503 and Retry-After however often it came back.
    (["serve", "--max-body-bytes-in-flight", "1000"], "could never be taken"),
    # Taken for vLLM's command lines, where a negative length is no length either.
    (["serve", "--max-log-len", "-1"], "--max-log-len: must be >= 0"),
    # -1 is vLLM's "no cap"; any other negative cap is refused before the model loads.
    (["serve", "--max-logprobs", "-2"], "max_logprobs must be >= 0, or -1 for no cap"),
    (["generate", "--prompt", "x", "--max-logprobs", "-5"], "max_logprobs must be >= 0"),
    # The plain output is text only: the logprobs were computed and never printed.
    (["generate", "--prompt", "x", "--logprobs", "2"], "--logprobs is printed with --json"),
    # Each JSON line has its prompt: --echo was taken and never read.
    (["generate", "--prompt", "x", "--echo", "--json"], "--echo is for the plain output"),
])
def test_bad_values_of_other_flags_are_clean_errors(args, says):
    r = _call(*args)
    assert r.returncode == 2 and says in r.stderr and "Traceback" not in r.stderr, r.stderr


@pytest.mark.parametrize("args, says", [
    (["serve", "--port", "-1"], "python -m sarathi serve: error: argument --port: "),
    (["generate", "--dtype", "int8"], "python -m sarathi generate: error: argument --dtype: "),
    # An unknown flag is the command's, and points to the command's help.
    (["serve", "--bogus"], "python -m sarathi serve: error: unrecognized arguments: --bogus"),
    (["info", "--x"], "python -m sarathi info: error: unrecognized arguments: --x"),
    (["nope"], "python -m sarathi: error: argument COMMAND: invalid choice: 'nope'"),
    (["serve", "--max-logprobs", "many"],
     "python -m sarathi serve: error: argument --max-logprobs/--max_logprobs: invalid int value"),
    (["serve", "--reasoning-parser", "granite"],
     "python -m sarathi serve: error: argument --reasoning-parser/--reasoning_parser: invalid "
     "choice: 'granite'"),
])
def test_a_usage_error_is_one_line(args, says, monkeypatch):
    # argparse printed serve's whole usage (~60 lines of flags) above the one line that
    # says what was wrong.
    monkeypatch.setattr(sys, "argv", ["python -m sarathi"])
    r = _call(*args)
    assert r.returncode == 2 and r.stdout == "", r.stdout
    assert r.stderr.startswith(says) and r.stderr.count("\n") == 1, r.stderr
    assert r.stderr.rstrip().endswith(" --help)")


def test_a_cuda_cache_without_a_gpu_is_a_clean_error():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    r = _call("generate", "--prompt", "x", "--kv-cache-backend", "cuda")
    assert r.returncode == 2 and "cuda device" in r.stderr and "Traceback" not in r.stderr


def test_a_reasoning_parser_on_a_tokenizer_without_its_tags_is_a_clean_error():
    r = _call("serve", "--reasoning-parser", "qwen3", "--port", "0")
    assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr
    assert "the tokenizer has no <think> token" in r.stderr, r.stderr


def test_a_port_out_of_range_is_a_clean_error():
    r = _call("serve", "--port", "99999")
    assert r.returncode == 2 and "0-65535" in r.stderr and "Traceback" not in r.stderr


def test_generate_refuses_a_completion_that_cannot_fit_as_the_server_does():
    r = _call("generate", "--prompt", "hi", "--max-tokens", "5000")
    assert r.returncode == 2 and "context" in r.stderr and "Traceback" not in r.stderr
    assert "--max-tokens is 5000" in r.stderr


def test_a_prompt_that_cannot_fit_fails_alone():
    """One long prompt stopped the whole batch, after the model had loaded, naming a
    --max-tokens the user never gave (the default's 16)."""
    long = "hello world " * 1500
    r = _call("generate", "--prompt", long, "--prompt", "ok", "--json", "--max-tokens", "2")
    lines = [json.loads(line) for line in r.stdout.splitlines()]
    assert r.returncode == 1 and [d["prompt"] for d in lines] == [long, "ok"]
    assert "context of 2048" in lines[0]["error"] and lines[0]["outputs"] == []
    assert lines[1]["error"] is None and len(lines[1]["outputs"][0]["token_ids"]) == 2
    r = _call("generate", "--prompt", "ok", "--prompt", long)
    assert r.returncode == 1 and "max_tokens is 16 (the default" in r.stderr
    assert r.stdout.count("-" * 40) == 1  # the one output, in a batch of two


def test_an_unreachable_hub_id_says_so():
    r = _run("generate", "--model", "gpt2", "--prompt", "hi",
             env_extra={"HF_HUB_OFFLINE": "1"})
    assert r.returncode != 0 and "hub" in r.stderr and "Traceback" not in r.stderr


def test_generate_takes_an_output_constraint(tmp_path):
    import json

    schema = tmp_path / "schema.json"
    schema.write_text('{"type": "object", "properties": {"ok": {"type": "boolean"}}, '
                      '"required": ["ok"]}')
    r = _call("generate", "--prompt", "x", "--json-schema", str(schema), "--temperature", "1",
             "--json")
    assert r.returncode == 0, r.stderr
    text = json.loads(r.stdout.strip().splitlines()[-1])["outputs"][0]["text"]
    assert isinstance(json.loads(text)["ok"], bool)
    r = _call("generate", "--prompt", "x", "--regex", "a(b")
    assert r.returncode == 2 and "invalid regular expression" in r.stderr
    assert "Traceback" not in r.stderr


def test_a_bad_regex_is_refused_before_the_model_loads(tmp_path):
    r = _call("generate", "--model", str(tmp_path / "missing"), "--prompt", "x",
              "--regex", "a(b")
    assert r.returncode == 2, r.stderr
    assert "--regex 'a(b'" in r.stderr and "unclosed group" in r.stderr
    assert "Traceback" not in r.stderr
    # One line: llguidance's message drew carets under the pattern and the grammar it built.
    assert r.stderr.count("\n") == 1, r.stderr


def test_importing_sarathi_leaves_torch_for_first_use():
    # `python -m sarathi` imports the package before its command line can handle Ctrl-C: the
    # package itself must be quick to import, its API names loaded on first use.
    code = ("import sys, sarathi; assert 'torch' not in sys.modules, 'torch imported'; "
            "from sarathi import LLM, SamplingParams; print(LLM.__name__, sarathi.__version__)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["LLM", "0.1.0"]


@pytest.mark.parametrize("delay", [0.3, 1.0])
def test_ctrl_c_while_starting_exits_130_without_a_traceback(delay):
    import signal
    import time

    # Early enough to land in the imports or the model load on any machine; the long
    # generation keeps the process busy if it is fast.
    proc = subprocess.Popen(
        [sys.executable, "-m", "sarathi", "generate", "--prompt", "x", "--max-tokens", "1500",
         "--ignore-eos"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in err, err


def test_ctrl_c_while_the_original_launch_line_starts_exits_130():
    import signal
    import time

    # `python -m sarathi.entrypoints.openai_server.api_server` (Sarathi-Lean's line) did not
    # go through sarathi/__main__.py: a Ctrl-C during its imports or model load was swallowed
    # and the server started anyway, serving until killed.
    proc = subprocess.Popen(
        [sys.executable, "-m", "sarathi.entrypoints.openai_server.api_server", "--model_name",
         "demo", "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 130 and "Traceback" not in err, err


@pytest.mark.parametrize("command", ["serve", "generate"])
def test_help_never_says_default_none(command):
    # Options left unset have their default described in their help ("Default: 1024 on
    # GPUs ..."); "(default: None)" after that contradicted it.
    r = _run(command, "--help")
    assert r.returncode == 0, r.stderr
    assert "default: None" not in r.stdout
    chunk = r.stdout.split("--chunk-size CHUNK_SIZE,", 1)[1].split("\n  --", 1)[0]
    assert "512" in chunk and "None" not in chunk


def test_an_unusable_sarathi_cache_is_named_in_the_error(tmp_path):
    # The bare OSError ("[Errno 17] File exists: '...'") did not say that $SARATHI_CACHE,
    # where the demo model is built, was the setting at fault.
    not_a_folder = tmp_path / "cache"
    not_a_folder.write_text("")
    r = _run("generate", "--prompt", "x", env_extra={"SARATHI_CACHE": str(not_a_folder)})
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "SARATHI_CACHE" in r.stderr and "it is a file" in r.stderr, r.stderr


def test_prompt_file_problems_are_clean_errors_naming_the_flag(tmp_path, capsys):
    # A file of blank lines used to generate for the example prompt "Hello, my name is"
    # without a word; a missing file's error did not say which flag it came from. In this
    # process: the file is read before any model loads (an exception would fail the test).
    from sarathi.entrypoints.cli import main

    blank = tmp_path / "blank.txt"
    blank.write_text("\n  \n")
    binary = tmp_path / "binary.txt"
    binary.write_bytes(b"\xff\xfe\x00")
    for path, says in [(blank, "holds no prompts"), (tmp_path / "missing.txt", "No such file"),
                       (tmp_path, "Is a directory"), (binary, "not UTF-8")]:
        assert main(["generate", "--prompt-file", str(path), "--json"]) == 2, path
        out, err = capsys.readouterr()
        assert not out and "--prompt-file" in err and says in err, err


def test_an_unreadable_schema_or_grammar_file_is_named_with_its_flag(tmp_path, capsys):
    # A binary file's error was "'utf-8' codec can't decode byte 0xff ...", naming neither
    # the flag nor the file. In this process: the file is read before any model loads.
    from sarathi.entrypoints.cli import main

    binary = tmp_path / "binary.txt"
    binary.write_bytes(b"\xff\xfe\x00")
    for flag in ("--json-schema", "--grammar"):
        assert main(["generate", flag, str(binary)]) == 2, flag
        out, err = capsys.readouterr()
        assert not out and f"{flag} '{binary}' is not UTF-8" in err, err


def test_prompt_file_dash_reads_standard_input():
    r = subprocess.run([sys.executable, "-m", "sarathi", "generate", "--prompt-file", "-",
                        "--max-tokens", "1", "--json", "--max-model-len", "256"],
                       input="first\r\n\nsecond\n", capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr
    assert [json.loads(line)["prompt"] for line in r.stdout.splitlines()] == ["first", "second"]


def test_prompt_file_gives_one_prompt_per_non_blank_line(tmp_path):
    import json

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("first prompt\n\nsecond prompt\n")
    r = _run("generate", "--prompt-file", str(prompts), "--prompt", "extra", "--json",
             "--max-tokens", "2", "--max-model-len", "256")
    assert r.returncode == 0, r.stderr
    got = [json.loads(line)["prompt"] for line in r.stdout.strip().splitlines()]
    assert got == ["extra", "first prompt", "second prompt"]


def test_chat_template_is_a_file_or_the_templates_text(tmp_path):
    """vLLM's --chat-template takes either; the server gets the template's text."""
    from sarathi.entrypoints.openai_server.chat_template import load_chat_template

    inline = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    path = tmp_path / "t.jinja"
    path.write_text(inline, encoding="utf-8")
    assert load_chat_template(str(path)) == load_chat_template(inline) == inline
    assert load_chat_template(None) is None


def _parse_only(argv):
    from sarathi.entrypoints.cli import build_parser

    build_parser().parse_args(argv)
    return 0


def test_a_chat_template_that_is_not_valid_jinja_is_refused_at_start(tmp_path):
    # It used to start the server, then answer every chat request 400 ("the chat template
    # failed on these messages", param "messages"): the operator's mistake, the clients' error.
    broken = tmp_path / "broken.jinja"
    broken.write_text("{% for m in messages %}{{ m.content }", encoding="utf-8")
    for value, says in [(str(broken), "broken.jinja' is not valid Jinja: line 1"),
                        ("{% if %}", "the template is not valid Jinja: line 1")]:
        # The parser alone: should the check regress, no server starts and waits here.
        r = call(_parse_only, "sarathi", ["serve", "--chat-template", value])
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
        assert "--chat-template" in r.stderr and says in r.stderr, r.stderr
    # Transformers' own tags and filters still parse.
    from sarathi.entrypoints.openai_server.chat_template import load_chat_template

    ok = ("{% for m in messages %}{% generation %}{{ m.content | tojson }}{% endgeneration %}"
          "{% if loop.last %}{% break %}{% endif %}{% endfor %}")
    assert load_chat_template(ok) == ok



@pytest.mark.parametrize("script", ["attention_kernels", "decode_configs", "prefill_configs"])
def test_gpu_benchmarks_print_their_help_without_triton(script):
    # Their Triton kernels were imported at the top: --help was a ModuleNotFoundError
    # traceback wherever Triton is not installed (a CPU machine).
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    r = subprocess.run([sys.executable, os.path.join(root, "benchmarks", f"{script}.py"),
                        "--help"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.startswith("usage:"), r.stderr


def test_a_json_schema_that_is_neither_a_file_nor_json_is_named_before_the_model_loads(
        tmp_path, capsys):
    # A mistyped path was taken as the schema's text: after the model had loaded, "the JSON
    # schema is not valid JSON: Expecting value: line 1 column 1 (char 0)".
    from sarathi.entrypoints.cli import main

    bad = tmp_path / "bad.json"
    bad.write_text("{not json", encoding="utf-8")
    for value, says in [(str(tmp_path / "schema.jsn"), "is neither a file nor JSON"),
                        (str(tmp_path), "is a folder"), (str(bad), "does not hold JSON")]:
        assert main(["generate", "--prompt", "x", "--json-schema", value]) == 2, value
        out, err = capsys.readouterr()
        assert not out and f"error: --json-schema '{value}' {says}" in err, err
        assert "sarathi:" not in err, err  # nothing was loaded: no engine log line


def test_a_grammar_that_is_neither_a_file_nor_a_grammar_is_named_before_the_model_loads(
        tmp_path, capsys):
    from sarathi.entrypoints.cli import main

    for value, says in [(str(tmp_path / "grammar.lar"), "is neither a file nor a grammar"),
                        (str(tmp_path), "is a folder")]:
        assert main(["generate", "--prompt", "x", "--grammar", value]) == 2, value
        out, err = capsys.readouterr()
        assert not out and f"error: --grammar '{value}' {says}" in err, err
        assert "sarathi:" not in err, err


def test_every_flag_may_be_spelled_with_underscores_as_in_vllm(capsys):
    """vLLM's parser reads --foo_bar as --foo-bar for every flag: sampling and server flags
    too, not only the engine options (values keep their underscores)."""
    from sarathi.entrypoints.cli import main
    from sarathi.entrypoints.cli_args import dashed

    assert dashed(["--max_tokens", "3", "--stop=a_b", "--served_model_name=x_y", "--",
                   "--keep_me"]) == ["--max-tokens", "3", "--stop=a_b",
                                     "--served-model-name=x_y", "--", "--keep_me"]
    assert main(["generate", "--prompt", "hi", "--max_tokens", "2", "--temperature", "0",
                 "--ignore_eos"]) == 0
    assert capsys.readouterr().out.strip()


@pytest.mark.parametrize("damage,says", [
    ("lfs", "git lfs pull"),  # a clone made without git-lfs leaves pointer files
    ("cut", "model.safetensors"),  # an interrupted download
])
def test_a_damaged_weights_file_is_a_clean_error_naming_it(tmp_path, damage, says):
    # Both were a safetensors traceback.
    model = _demo_copy(tmp_path, {})
    weights = os.path.join(model, "model.safetensors")
    if damage == "lfs":
        text = "version https://git-lfs.github.com/spec/v1\noid sha256:00\nsize 1\n"
        with open(weights, "w") as f:
            f.write(text)
    else:
        with open(weights, "rb") as f:
            data = f.read()
        with open(weights, "wb") as f:
            f.write(data[: len(data) // 2])
    r = _call("generate", "--model", model, "--prompt", "Hi", "--max-tokens", "2")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "cannot read the weights file" in r.stderr and says in r.stderr, r.stderr


def test_serve_takes_several_served_model_names_as_vllm():
    # vLLM's --served-model-name takes several names; the second was read as the positional
    # MODEL (or refused as an unrecognized argument after one).
    from fastapi.testclient import TestClient

    from sarathi.engine.llm_engine import LLMEngine
    from sarathi.entrypoints.cli import build_parser
    from sarathi.entrypoints.cli_args import config_from_args
    from sarathi.entrypoints.openai_server.api_server import build_app

    args = build_parser().parse_args(["serve", "demo", "--served-model-name", "first", "second"])
    assert args.model_tag == "demo" and args.served_model_name == ["first", "second"]
    engine = LLMEngine(config_from_args(args))
    try:
        client = TestClient(build_app(engine, args))  # no lifespan: the engine loop is not run
        assert [m["id"] for m in client.get("/v1/models").json()["data"]] == ["first", "second"]
        assert client.get("/v1/models/second").status_code == 200
        assert client.get("/v1/models/third").status_code == 404
    finally:
        engine.shutdown()


def test_dtype_takes_vllms_names_half_and_float():
    # vLLM's advice on GPUs without bfloat16 is --dtype half; it was refused as a bad choice.
    from sarathi.config import EngineConfig
    from sarathi.entrypoints.cli import build_parser
    from sarathi.entrypoints.cli_args import config_from_args

    for given, dtype in (("half", "float16"), ("float", "float32"), ("bfloat16", "bfloat16")):
        args = build_parser().parse_args(["serve", "demo", "--dtype", given])
        assert config_from_args(args).model.dtype == dtype
        assert EngineConfig.from_kwargs(dtype=given).model.dtype == dtype
    r = _call("generate", "--prompt", "x", "--dtype", "int8")
    assert r.returncode == 2 and "invalid choice: 'int8'" in r.stderr


def test_the_help_of_the_options_paged_refuses_says_they_are_refused():
    # It said "Not read by --attention-backend paged", as of a flag taken and left unread
    # (those get a warning), while the config refuses them (above).
    import dataclasses

    from sarathi.config import CacheConfig

    helps = {f.name: f.metadata["help"] for f in dataclasses.fields(CacheConfig)}
    for name in ("kv_cache_backend", "kv_layout", "page_bytes"):
        assert "Refused with --attention-backend paged" in helps[name], name
        assert "Not read by" not in helps[name], name


def test_serve_takes_vllms_max_logprobs():
    # It was an "unrecognized arguments" error on vLLM command lines.
    from sarathi.entrypoints.cli import build_parser
    from sarathi.entrypoints.cli_args import config_from_args

    default = config_from_args(build_parser().parse_args(["serve", "demo"]))
    assert default.model.max_logprobs == 20  # vLLM's default
    for argv in (["--max-logprobs", "-1"], ["--max_logprobs=-1"]):
        config = config_from_args(build_parser().parse_args(["serve", "demo", *argv]))
        assert config.model.max_logprobs == -1
    config = config_from_args(build_parser().parse_args(["serve", "demo", "--max-logprobs", "0"]))
    assert config.model.max_logprobs == 0


def test_serve_takes_vllms_disable_custom_all_reduce():
    # It was an "unrecognized arguments" error on vLLM command lines.
    from sarathi.entrypoints.cli import build_parser
    from sarathi.entrypoints.cli_args import config_from_args

    def parsed(*flags):
        args = build_parser().parse_args(["serve", "demo", *flags])
        return config_from_args(args).parallel.disable_custom_all_reduce

    assert parsed() is False
    assert parsed("--disable-custom-all-reduce") is True
    assert parsed("--disable_custom_all_reduce") is True
    assert parsed("--no-disable-custom-all-reduce") is False


def test_serve_refuses_the_vllm_no_op_values_llm_refuses():
    # `serve --swap-space -1` started the server, while LLM(swap_space=-1) is a ValueError:
    # offline-api.md says the keywords are taken as `serve` takes their flags.
    from sarathi import LLM

    with pytest.raises(ValueError, match="swap_space"):
        LLM(swap_space=-1)
    r = call(_parse_only, "sarathi", ["serve", "--swap-space", "-1"])
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "--swap-space" in r.stderr and ">= 0" in r.stderr, r.stderr
    assert call(_parse_only, "sarathi", ["serve", "--swap-space", "4"]).returncode == 0


def test_serve_takes_several_api_keys_as_vllm():
    # vLLM's --api-key takes several keys, any of which is accepted; the second was read as
    # the positional MODEL ("'k2' is not a local folder ...") or refused after one.
    from fastapi.testclient import TestClient

    from sarathi.engine.llm_engine import LLMEngine
    from sarathi.entrypoints.cli import build_parser
    from sarathi.entrypoints.cli_args import config_from_args
    from sarathi.entrypoints.openai_server.api_server import build_app

    args = build_parser().parse_args(["serve", "demo", "--api-key", "k1", "k2"])
    assert args.model_tag == "demo"
    r = call(_parse_only, "sarathi", ["serve", "demo", "--api-key", "k1", ""])
    assert r.returncode == 2 and "--api-key: the key is empty" in r.stderr, r.stderr
    engine = LLMEngine(config_from_args(args))
    try:
        client = TestClient(build_app(engine, args))  # no lifespan: the engine loop is not run
        for key, status in (("k1", 200), ("k2", 200), ("k3", 401), ("k1 k2", 401)):
            got = client.get("/v1/models", headers={"Authorization": f"Bearer {key}"})
            assert got.status_code == status, key
        assert client.get("/v1/models").status_code == 401
    finally:
        engine.shutdown()


@pytest.mark.parametrize("flags", [["--chat-template", "{{ messages }}"],
                                   ["--tool-call-parser", "hermes"]])
def test_serve_refuses_chat_flags_with_skip_tokenizer_init(tmp_path, flags):
    # Without a tokenizer there is no chat: the template and the tool-call format were taken
    # and never read. Said before the model loads (a missing folder would be said after).
    r = _call("serve", "--skip-tokenizer-init", *flags, "--model", str(tmp_path / "missing"))
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert f"{flags[0]} is not read with --skip-tokenizer-init" in r.stderr, r.stderr


@pytest.mark.parametrize("flags", [["--allowed-methods", '["GET"]'],
                                   ["--allowed-headers", '["X-Trace"]'],
                                   ["--allow-credentials"]])
def test_cors_refinements_without_allowed_origins_are_refused(tmp_path, flags):
    # CORS is off without --allowed-origins (vLLM's default is '["*"]'): these were taken and
    # never read. Said before the model loads (a missing folder would be said after).
    r = _call("serve", *flags, "--model", str(tmp_path / "missing"))
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert f"{flags[0]} is read only with --allowed-origins" in r.stderr, r.stderr


def test_a_model_folder_after_api_key_is_not_taken_as_a_key(tmp_path):
    # --api-key takes every value after it: `serve --api-key KEY path/to/model` made the
    # folder a second key and served the demo model.
    (tmp_path / "config.json").write_text("{}")
    r = call(_parse_only, "sarathi", ["serve", "--api-key", "k1", str(tmp_path)])
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "is a model folder, not a key" in r.stderr, r.stderr
    assert call(_parse_only, "sarathi", ["serve", str(tmp_path), "--api-key", "k1"]).returncode == 0


def test_demo_after_several_api_keys_is_refused_not_taken_as_a_key():
    # `serve --api-key KEY demo` made "demo" a second key, which any client could send.
    r = _call("serve", "--api-key", "k1", "demo")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "'demo' after --api-key is read as a key" in r.stderr, r.stderr
