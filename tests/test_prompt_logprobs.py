"""prompt_logprobs (vLLM's): each prompt token's log-probability given the tokens before it,
equal to transformers' log_softmax, however the prompt is chunked and whatever runs beside
it; position 0 is None."""

import pytest
import torch

from models import hf_model, random_prompts
from sarathi import LLM, SamplingParams

TOP = 3


@pytest.fixture(scope="module")
def llama(tiny_models):
    return tiny_models["llama"]


@pytest.fixture(scope="module")
def reference(llama):
    """prompt -> transformers' log_softmax at every position."""
    model = hf_model(llama)

    def ref(prompt: list[int]) -> torch.Tensor:
        with torch.no_grad():
            return torch.log_softmax(model(torch.tensor([prompt])).logits[0].float(), dim=-1)

    return ref


def _check(prompt, got, ref, top=TOP):
    assert len(got) == len(prompt) and got[0] is None
    for j in range(1, len(prompt)):
        row, tok, entry = ref[j - 1], prompt[j], got[j]
        assert abs(entry[tok].logprob - row[tok].item()) < 1e-4, j
        assert entry[tok].rank == int((row > row[tok]).sum()) + 1
        best = row.topk(top)
        assert set(best.indices.tolist()) <= set(entry), j
        for tid, value in zip(best.indices.tolist(), best.values.tolist(), strict=True):
            assert abs(entry[tid].logprob - value) < 1e-4
        assert len(entry) <= top + 1  # the prompt token and the top alternatives


@pytest.mark.parametrize("overlap", [False, True])
def test_prompt_logprobs_equal_transformers_across_chunks_beside_decodes(llama, reference, overlap):
    # Prompts several chunks long; the first request decodes while the others prefill.
    llm = LLM(llama, chunk_size=16, max_num_seqs=8, overlap_scheduling=overlap)
    prompts = [[5, 6, 7]] + random_prompts(4, 384, seed=31, min_len=17, max_len=70)
    decoding = SamplingParams(temperature=0, max_tokens=40, ignore_eos=True)
    scored = SamplingParams(temperature=0, max_tokens=4, ignore_eos=True, prompt_logprobs=TOP)
    outs = llm.generate(prompts, [decoding] + [scored] * 4, use_tqdm=False)
    assert outs[0].prompt_logprobs is None
    for prompt, out in zip(prompts[1:], outs[1:], strict=True):
        _check(prompt, out.prompt_logprobs, reference(prompt))
    # Asking for them changes nothing else.
    plain = llm.generate(
        prompts[1:], SamplingParams(temperature=0, max_tokens=4, ignore_eos=True), use_tqdm=False
    )
    assert [o.outputs[0].token_ids for o in plain] == [o.outputs[0].token_ids for o in outs[1:]]


def test_one_chunk_n_choices_top_0_and_a_one_token_prompt(llama, reference):
    llm = LLM(llama, max_num_seqs=8)
    prompt = random_prompts(1, 384, seed=32, min_len=30, max_len=31)[0]
    params = SamplingParams(n=3, temperature=1.0, seed=2, max_tokens=3, prompt_logprobs=0)
    out = llm.generate([prompt, [9]], params, use_tqdm=False)
    _check(prompt, out[0].prompt_logprobs, reference(prompt), top=0)
    assert all(len(e) == 1 for e in out[0].prompt_logprobs[1:])
    assert len(out[0].outputs) == 3
    assert out[1].prompt_logprobs == [None]


def test_preempted_prefills_report_each_position_once(llama, reference):
    prompts = random_prompts(8, 384, seed=33, min_len=40, max_len=70)
    probe = LLM(llama, chunk_size=16, max_num_seqs=8)
    block = probe.engine.executor.worker.cache.geometry.block_bytes
    tight = LLM(
        llama,
        chunk_size=16,
        max_num_seqs=8,
        kv_cache_memory=8 * block,
        expected_request_tokens=32,
    )
    params = SamplingParams(temperature=0, max_tokens=24, ignore_eos=True, prompt_logprobs=1)
    outs = tight.generate(prompts, params, use_tqdm=False)
    assert tight.engine.stats.preemptions > 0
    for prompt, out in zip(prompts, outs, strict=True):
        _check(prompt, out.prompt_logprobs, reference(prompt), top=1)


def test_every_streamed_output_carries_them_complete(llama):
    llm = LLM(llama, chunk_size=16, max_num_seqs=4)
    engine = llm.engine
    prompt = random_prompts(1, 384, seed=34, min_len=50, max_len=51)[0]
    engine.add_request(prompt, SamplingParams(max_tokens=5, prompt_logprobs=2), "r")
    outputs = []
    while engine.has_unfinished_requests():
        outputs += engine.step()
    assert outputs and outputs[-1].finished
    assert all(len(o.prompt_logprobs) == len(prompt) for o in outputs)
    assert sum(o.outputs[0].num_new_tokens for o in outputs) == 5


@pytest.mark.parametrize("bad", [-2, -10, True, 1.5])  # the cap is the engine's; -1 is the whole vocabulary
def test_prompt_logprobs_are_validated(bad):
    with pytest.raises(ValueError, match="prompt_logprobs"):
        SamplingParams(prompt_logprobs=bad)
