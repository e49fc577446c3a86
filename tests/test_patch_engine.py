"""AdaptiVocab inside the engine: load-time patching, patched folders, cache sizing."""

from importlib import resources

import pytest
import torch
from safetensors.torch import load_file

from models import random_prompts
from sarathi import LLM, SamplingParams


def _docs() -> list[str]:
    text = resources.files("sarathi.transformers_utils").joinpath("demo_corpus.txt").read_text()
    return [p for p in text.split("\n\n") if p.strip()] * 4


@pytest.fixture(scope="module")
def patch_dir(tiny_models, tmp_path_factory):
    from adaptivocab import BuildConfig, PatchTokenizer, build_patch, measure_reduction
    from adaptivocab.base import load_base_tokenizer

    base = load_base_tokenizer(tiny_models["llama"])
    patch, _ = build_patch(base, _docs(), BuildConfig(num_tokens=40, max_ngram=3,
                                                      progress=False))
    tok = PatchTokenizer(base, patch)
    stats = measure_reduction(tok, _docs()[:8])
    tok = PatchTokenizer(base, patch, reduction_stats=stats)
    out = tmp_path_factory.mktemp("patch")
    tok.save_pretrained(out)
    return str(out)


def test_load_time_patch_keeps_surviving_rows_bit_identical(tiny_models, patch_dir):
    from adaptivocab import PatchTokenizer

    path = tiny_models["llama"]
    llm = LLM(path, patch_tokenizer=patch_dir)
    tok = llm.get_tokenizer()
    assert isinstance(tok, PatchTokenizer) and tok.ngram_pieces
    ours = llm.engine.executor.worker.model
    base = load_file(f"{path}/model.safetensors")
    swapped = sorted(tok.ngram_pieces)
    keep = torch.ones(base["model.embed_tokens.weight"].shape[0], dtype=torch.bool)
    keep[swapped] = False
    for name, mine in (("model.embed_tokens.weight", ours.model.embed_tokens.weight),
                       ("lm_head.weight", ours.lm_head.weight)):
        assert torch.equal(mine[keep], base[name][keep]), name
        assert not torch.equal(mine[swapped], base[name][swapped]), name
    out = llm.generate(["the scheduler keeps three queues"],
                       SamplingParams(temperature=0, max_tokens=8, ignore_eos=True))[0]
    assert len(out.outputs[0].token_ids) == 8
    assert llm.engine.stats.base_prompt_tokens > llm.engine.stats.patched_prompt_tokens


def test_patched_folder_loads_directly_and_matches_load_time_patching(tiny_models, patch_dir,
                                                                      tmp_path):
    from adaptivocab import patch_model_folder

    from models import save_tiny_model

    # tied embeddings: one matrix serves both ends
    tied = save_tiny_model("llama", str(tmp_path / "tied"), tie_word_embeddings=True)
    out = tmp_path / "patched"
    patch_model_folder(tied, patch_dir, str(out), init="exp", progress=False)
    prompts = random_prompts(3, 384, seed=11)
    params = SamplingParams(temperature=0, max_tokens=10, ignore_eos=True)
    direct = LLM(str(out)).generate(prompts, params)
    at_load = LLM(tied, patch_tokenizer=patch_dir).generate(prompts, params)
    assert [o.outputs[0].token_ids for o in direct] == [o.outputs[0].token_ids for o in at_load]


@pytest.fixture(scope="module")
def other_patch_dir(tiny_models, tmp_path_factory):
    from adaptivocab import BuildConfig, PatchTokenizer, build_patch
    from adaptivocab.base import load_base_tokenizer

    base = load_base_tokenizer(tiny_models["llama"])
    patch, _ = build_patch(base, _docs()[::-1],
                           BuildConfig(num_tokens=10, max_ngram=2, progress=False))
    out = tmp_path_factory.mktemp("other-patch")
    PatchTokenizer(base, patch).save_pretrained(out)
    return str(out)


def test_a_patched_folder_takes_only_its_own_patch(tiny_models, patch_dir, other_patch_dir,
                                                   tmp_path):
    """Its swapped rows hold its own patch's n-grams: another patch, or the base tokenizer,
    would give those ids other meanings; re-patching it with another patch is refused too."""
    from adaptivocab import AdaptiVocabError, patch_model_folder

    out = tmp_path / "patched"
    patch_model_folder(tiny_models["llama"], patch_dir, str(out), init="exp", progress=False)
    with pytest.raises(ValueError, match="different patch tokenizer"):
        LLM(str(out), patch_tokenizer=other_patch_dir)
    with pytest.raises(ValueError, match="not its patch tokenizer"):
        LLM(str(out), tokenizer=tiny_models["llama"])
    with pytest.raises(AdaptiVocabError, match="different patch tokenizer"):
        patch_model_folder(str(out), other_patch_dir, str(tmp_path / "twice"), progress=False)
    again = tmp_path / "again"  # the same patch again: allowed, and no stale statistics
    patch_model_folder(str(out), patch_dir, str(again), init="exp", progress=False)
    assert load_file(f"{again}/model.safetensors").keys()


def test_a_patch_folder_given_as_tokenizer_patches_at_load(tiny_models, patch_dir):
    prompts = random_prompts(2, 384, seed=12)
    params = SamplingParams(temperature=0, max_tokens=8, ignore_eos=True)
    as_patch = LLM(tiny_models["llama"], patch_tokenizer=patch_dir).generate(prompts, params)
    as_tok = LLM(tiny_models["llama"], tokenizer=patch_dir).generate(prompts, params)
    assert [o.outputs[0].token_ids for o in as_tok] == [o.outputs[0].token_ids for o in as_patch]


def test_a_patch_tokenizer_for_another_vocab_size_fails_at_load(tmp_path, patch_dir):
    from models import save_tiny_model

    other = save_tiny_model("llama", str(tmp_path / "m"), vocab_size=512)
    with pytest.raises(ValueError, match="patch tokenizer"):
        LLM(other, patch_tokenizer=patch_dir)


def _with_another_tokenizer(src: str, dst) -> str:
    """A copy of the model folder ``src`` whose tokenizer.json gives two tokens each other's
    ids: the same size, another tokenizer."""
    import json
    import shutil

    shutil.copytree(src, dst)
    spec = json.loads((dst / "tokenizer.json").read_text())
    vocab = spec["model"]["vocab"]
    a, b = sorted(vocab, key=vocab.get)[300:302]
    vocab[a], vocab[b] = vocab[b], vocab[a]
    (dst / "tokenizer.json").write_text(json.dumps(spec))
    return str(dst)


def test_a_patch_built_from_another_tokenizer_of_the_same_size_fails_at_load(
        tiny_models, patch_dir, tmp_path):
    # check_vocab compares sizes only: a patch from another tokenizer loaded, and every id
    # then read the row of whatever token the model's own tokenizer gives it.
    other = _with_another_tokenizer(tiny_models["llama"], tmp_path / "m")
    for kwargs in ({"patch_tokenizer": patch_dir}, {"tokenizer": patch_dir}):
        with pytest.raises(ValueError, match="built from a different tokenizer than .*"
                                             r"\(2 of its \d+ tokens have other ids there\)"):
            LLM(other, **kwargs)


def test_init_method_is_read_only_where_a_patch_is_applied_at_load(tiny_models, patch_dir,
                                                                    tmp_path, caplog):
    """init_method initialises the rows a patch builds into a base checkpoint at load; given
    anywhere else it was taken and dropped without a word."""
    import logging

    from adaptivocab import patch_model_folder

    base = tiny_models["llama"]

    def rows(llm: LLM) -> torch.Tensor:
        return llm.engine.executor.worker.model.model.embed_tokens.weight.detach().clone()

    with caplog.at_level(logging.WARNING, logger="sarathi"):
        mean = LLM(base, patch_tokenizer=patch_dir, init_method="mean")
    assert "init_method" not in caplog.text
    assert not torch.equal(rows(mean), rows(LLM(base, patch_tokenizer=patch_dir)))
    with pytest.raises(ValueError, match="init_method initialises the rows of a patch"):
        LLM(base, init_method="mean")
    out = tmp_path / "patched"
    patch_model_folder(base, patch_dir, str(out), init="exp", progress=False)
    with caplog.at_level(logging.WARNING, logger="sarathi"):
        LLM(str(out), init_method="mean")
    assert "init_method mean is ignored" in caplog.text and "patched model folder" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="sarathi"):
        LLM(base, patch_tokenizer=patch_dir, init_method="mean", load_format="dummy")
    assert "init_method mean is ignored with load_format dummy" in caplog.text


def test_cache_slots_scale_with_the_measured_reduction(tiny_models):
    import torch as t

    from sarathi.config import CacheConfig
    from sarathi.model_executor.model_shape import load_model_shape
    from sarathi.worker.cache_engine import plan_cache

    shape = load_model_shape(tiny_models["llama"])
    cfg = CacheConfig(kv_cache_memory=64 * 1024**2, expected_request_tokens=1000)
    args = (cfg, shape, t.float32, t.device("cpu"), 100_000, 4096)
    base = plan_cache(*args, reduction_ratio=1.0)
    patched = plan_cache(*args, reduction_ratio=0.75)
    assert base.budget == patched.budget
    assert patched.max_slots / base.max_slots == pytest.approx(1 / 0.75, rel=0.05)
    assert patched.text_capacity_base_tokens == int(4096 / 0.75)


def test_the_engine_reads_the_ratio_from_the_patch_tokenizer(tiny_models, patch_dir):
    from adaptivocab import PatchTokenizer

    llm = LLM(tiny_models["llama"], patch_tokenizer=patch_dir, kv_cache_memory="8MiB",
              expected_request_tokens=64)
    ratio = PatchTokenizer.from_pretrained(patch_dir).reduction_ratio
    assert ratio is not None and ratio < 1
    assert llm.engine.setup.reduction_ratio == ratio
    assert llm.engine.cache_plan.expected_tokens == int(-(-64 * ratio // 1))


def test_a_patch_without_a_measured_ratio_says_how_the_cache_is_sized(
    tiny_models, patch_dir, tmp_path, caplog
):
    """Sizing falls back to ratio 1 aloud when the statistics are missing, and a ratio the
    cache cannot be sized from is refused naming where it came from."""
    import json
    import logging
    import shutil

    folder = tmp_path / "p"
    shutil.copytree(patch_dir, folder)
    (folder / "reduction_stats.json").unlink()
    with caplog.at_level(logging.WARNING, logger="sarathi"):
        llm = LLM(tiny_models["llama"], patch_tokenizer=str(folder), kv_cache_memory="1MiB")
    assert llm.engine.setup.reduction_ratio == 1.0
    assert "no measured reduction ratio" in caplog.text and str(folder) in caplog.text
    (folder / "reduction_stats.json").write_text(json.dumps({"ratio": 5.0}))
    with pytest.raises(ValueError, match="reduction_stats.json"):
        LLM(tiny_models["llama"], patch_tokenizer=str(folder), kv_cache_memory="1MiB")


def test_server_reports_tokens_saved(tiny_models, patch_dir):
    import httpx

    from server.live_server import start_server, stop_server

    live = start_server({"model": tiny_models["llama"], "patch_tokenizer": patch_dir})
    try:
        text = "The scheduler keeps three queues: waiting requests, running requests"
        r = httpx.post(live.url + "/v1/completions", timeout=60,
                       json={"model": tiny_models["llama"], "prompt": text, "max_tokens": 8,
                             "temperature": 0, "ignore_eos": True})
        assert r.status_code == 200, r.text
        live.engine.wait_idle(10)
        metrics = httpx.get(live.url + "/metrics", timeout=30).text
    finally:
        stop_server(live)
    saved = next(line for line in metrics.splitlines()
                 if line.startswith("sarathi:adaptivocab_prompt_tokens_saved_total"))
    assert float(saved.split()[-1]) > 0
    assert "sarathi:adaptivocab_reduction_ratio" in metrics
    assert "sarathi:kv_cache_text_capacity_base_tokens" in metrics


def test_prefix_caching_with_a_patch_tokenizer(tiny_models, patch_dir):
    """Prompts that share domain text hit the cache under the patch tokenizer, outputs are
    those without the cache, and a patched prompt never matches the base vocabulary's."""
    from sarathi.engine.llm_engine import prefix_fingerprint

    system = " ".join(_docs()[:3])
    prompts = [f"{system}\n\nQuestion {i}: what does the scheduler do?" for i in range(5)]
    params = SamplingParams(temperature=0, max_tokens=8, ignore_eos=True)
    path = tiny_models["llama"]
    want = LLM(path, patch_tokenizer=patch_dir, enable_prefix_caching=False,
               max_model_len=512).generate(prompts, params)
    patched = LLM(path, patch_tokenizer=patch_dir, max_model_len=512)
    got = patched.generate(prompts[:1], params) + patched.generate(prompts[1:], params)
    assert [o.outputs[0].token_ids for o in got] == [o.outputs[0].token_ids for o in want]
    assert patched.engine.prefix_cache.counters.hits > 0
    base = LLM(path, max_model_len=512)
    assert prefix_fingerprint(base.engine.setup) != prefix_fingerprint(patched.engine.setup)


@pytest.mark.parametrize("name", ["chat_template", "return_dict", "tools", "documents"])
def test_a_patch_tokenizer_refuses_template_variables_named_like_the_calls_parameters(
        patch_dir, name):
    """Its apply_chat_template passes **kwargs on to the base tokenizer's: a variable
    named chat_template there was the base call's template, a per-request template the
    server otherwise refuses (a Hugging Face tokenizer's chat refused it already)."""
    from adaptivocab import PatchTokenizer

    from sarathi.transformers_utils.chat import TemplateKwargsError, conversation_ids

    tok = PatchTokenizer.from_pretrained(patch_dir)
    tok.base_tokenizer.chat_template = "{{ messages[0]['content'] }}"
    with pytest.raises(TemplateKwargsError, match=name):
        conversation_ids(tok, [{"role": "user", "content": "hi"}], None,
                         template_kwargs={name: "injected {{ messages }}"})
