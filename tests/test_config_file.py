"""``--config FILE`` (vLLM's): a command's flags from YAML, the command line winning."""

from __future__ import annotations

import pytest

from sarathi.entrypoints.cli import _parse, build_parser, main
from sarathi.entrypoints.cli_args import config_from_args


def _args(*argv: str):
    args, unknown = _parse(build_parser(), list(argv))
    assert not unknown
    return args


def _write(tmp_path, text: str) -> str:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return str(path)


SERVE = """
model: demo
port: 9001
max_num_seqs: 8
max-model-len: 512
enforce-eager: true
enable-prefix-caching: false
api-key: [k1, k2]
allowed-origins: ["https://app.example"]
served-model-name: my-model
max-logprobs: -1
"""


def test_a_serve_config_sets_every_kind_of_flag(tmp_path):
    args = _args("serve", "--config", _write(tmp_path, SERVE))
    assert args.command == "serve" and args.port == 9001
    assert args.api_key == ["k1", "k2"] and args.allowed_origins == ["https://app.example"]
    assert args.served_model_name == ["my-model"]
    config = config_from_args(args)
    assert config.model.model == "demo" and config.model.max_model_len == 512
    assert config.scheduler.max_num_seqs == 8 and config.model.enforce_eager is True
    assert config.cache.enable_prefix_caching is False and config.model.max_logprobs == -1


def test_the_command_line_wins_over_the_file(tmp_path):
    path = _write(tmp_path, SERVE)
    args = _args("serve", "/some/model", "--config", path, "--max_num_seqs", "3",
                 "--api-key", "k3", "--no-enforce-eager", "--port=9002")  # fmt: skip
    assert args.port == 9002 and args.api_key == ["k3"]
    config = config_from_args(args)
    assert config.scheduler.max_num_seqs == 3 and config.model.enforce_eager is False
    assert config.model.model == "/some/model"  # the positional MODEL, as vLLM's
    assert config.model.max_model_len == 512  # the rest still from the file


def test_generate_takes_repeated_and_sampling_flags(tmp_path):
    path = _write(tmp_path, "prompt: [Hello, Bye]\ntemperature: 0\nmax-tokens: 3\n")
    args = _args("generate", "--config", path)
    assert args.prompt == ["Hello", "Bye"] and args.sp_temperature == 0.0
    args = _args("generate", "--config", path, "--prompt", "Only")
    assert args.prompt == ["Only"]  # replaced, not added to


def test_quoted_yes_and_no_are_text(tmp_path):
    path = _write(tmp_path, "prompt: x\nchoice: ['yes', 'no']\n")
    assert _args("generate", "--config", path).choice == ["yes", "no"]


def test_generate_runs_from_a_config(tmp_path, capsys):
    path = _write(tmp_path, "prompt: Hello\nmax-tokens: 2\nignore-eos: true\njson: true\n")
    assert main(["generate", "--config", path]) == 0
    assert '"prompt": "Hello"' in capsys.readouterr().out


@pytest.mark.parametrize("text,message", [
    ("no_such_flag: 1\n", "'no_such_flag' is not a flag of this command"),
    ("enforce-eager: 3\n", "enforce-eager: takes true or false"),
    ("config: other.yaml\n", "'config' is not a flag"),
    ("- a\n- b\n", "must be a mapping of flag names to values, not a list"),
    ("port: [1\n", "is not valid YAML"),
    # YAML's yes / no are booleans: a text flag got "true" / "false" in their place.
    ("served-model-name: yes\n", "served-model-name: got the boolean true"),
    ("api-key: [k1, no]\n", "quote the value ('yes')"),
])  # fmt: skip
def test_a_bad_file_is_an_error_naming_it(tmp_path, capsys, text, message):
    path = _write(tmp_path, text)
    assert main(["serve", "--config", path]) == 2
    err = capsys.readouterr().err
    assert message in err and path in err and "Traceback" not in err


def test_a_bad_value_in_the_file_is_reported_as_from_it(tmp_path, capsys):
    path = _write(tmp_path, "port: abc\n")
    with pytest.raises(SystemExit) as exit_:
        main(["serve", "--config", path])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert f"(in --config {path})" in err and "--port" in err


def test_a_missing_file_is_an_error(tmp_path, capsys):
    assert main(["serve", "--config", str(tmp_path / "none.yaml")]) == 2
    assert "cannot read --config" in capsys.readouterr().err
