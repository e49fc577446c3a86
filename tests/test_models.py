"""Our native models against transformers on the same random weights (float32)."""

import pytest
import torch

from models import ARCHS, hf_greedy, hf_model, random_prompts
from sarathi import LLM, SamplingParams

NUM_PROMPTS, NEW_TOKENS = 8, 32


@pytest.fixture(scope="module")
def references(tiny_models):
    """arch -> (prompts, transformers greedy continuations)."""
    refs = {}
    for arch in ARCHS:
        model = hf_model(tiny_models[arch])
        prompts = random_prompts(NUM_PROMPTS, model.config.vocab_size, seed=1, max_len=90)
        refs[arch] = (prompts, [hf_greedy(model, p, NEW_TOKENS) for p in prompts])
    return refs


@pytest.mark.parametrize("arch", ARCHS)
def test_prefill_logits_match_transformers(tiny_models, arch):
    path = tiny_models[arch]
    model = hf_model(path)
    llm = LLM(path, max_num_seqs=4)
    for prompt in random_prompts(3, model.config.vocab_size, seed=2, max_len=120):
        ours = llm.engine.executor.worker.runner.forward_logits(prompt)
        with torch.no_grad():
            ref = model(torch.tensor([prompt])).logits[0]
        rel = ((ours - ref).norm() / ref.norm()).item()
        assert rel < 1e-4, f"{arch}: relative error {rel:.2e}"


@pytest.mark.parametrize("scheduler", ["sarathi", "vllm"])
@pytest.mark.parametrize("chunk_size", [8, 64, 512])
@pytest.mark.parametrize("arch", ARCHS)
def test_greedy_matches_transformers_generate(tiny_models, references, arch, chunk_size,
                                              scheduler):
    prompts, expected = references[arch]
    llm = LLM(tiny_models[arch], chunk_size=chunk_size, scheduler=scheduler, max_num_seqs=8)
    outs = llm.generate(prompts, SamplingParams(temperature=0, max_tokens=NEW_TOKENS,
                                                ignore_eos=True))
    for i, (out, ref) in enumerate(zip(outs, expected)):
        assert out.outputs[0].token_ids == ref, f"{arch} prompt {i} (len {len(prompts[i])})"
        assert out.outputs[0].finish_reason == "length"


def test_unsupported_architecture_names_the_supported_ones(tmp_path):
    import json

    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["GPT2LMHeadModel"]}))
    with pytest.raises(ValueError, match="LlamaForCausalLM.*Qwen3ForCausalLM"):
        LLM(str(tmp_path))


@pytest.mark.parametrize("arch", ARCHS)
def test_a_config_without_architectures_is_read_by_its_model_type(tmp_path, tiny_models, arch):
    # Such a config (transformers builds the model_type's causal LM) was "unsupported model
    # architecture 'mistral'", naming a family that is supported.
    import json
    import shutil

    shutil.copytree(tiny_models[arch], tmp_path, dirs_exist_ok=True)
    cfg = json.loads((tmp_path / "config.json").read_text())
    del cfg["architectures"]
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    prompt = [5, 9, 2, 7]
    ref = LLM(tiny_models[arch], max_num_seqs=2).engine.executor.worker.runner.forward_logits(
        prompt
    )
    ours = LLM(str(tmp_path), max_num_seqs=2).engine.executor.worker.runner.forward_logits(prompt)
    assert torch.equal(ours, ref)


def test_pickle_checkpoints_are_refused(tmp_path, tiny_models):
    import shutil

    src = tiny_models["llama"]
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(f"{src}/{name}", tmp_path / name)
    (tmp_path / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(ValueError, match="safetensors"):
        LLM(str(tmp_path))


def test_sharded_checkpoint_loads(tmp_path, tiny_models):
    from models import hf_model as load

    model = load(tiny_models["qwen3"])
    model.save_pretrained(tmp_path, safe_serialization=True, max_shard_size="100KB")
    import shutil

    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(f"{tiny_models['qwen3']}/{name}", tmp_path / name)
    assert (tmp_path / "model.safetensors.index.json").exists()
    prompt = [5, 6, 7, 8, 9]
    a = LLM(str(tmp_path)).generate([prompt], SamplingParams(temperature=0, max_tokens=8))
    b = LLM(tiny_models["qwen3"]).generate([prompt], SamplingParams(temperature=0, max_tokens=8))
    assert a[0].outputs[0].token_ids == b[0].outputs[0].token_ids
