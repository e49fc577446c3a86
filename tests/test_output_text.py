"""The output processor's text under forced tokens: stops, stop tokens, streamed deltas."""

import itertools

import pytest
from models import byte_fallback_tokenizer

from sarathi.core.scheduler_output import StepResult
from sarathi.engine.output_processor import OutputProcessor
from sarathi.engine.stats import EngineStats
from sarathi.sampling_params import SamplingParams
from sarathi.sequence import Request, SeqStatus, Sequence
from sarathi.transformers_utils.detokenizer import streaming_decoder

SPACE, OK, BARE_OK = 259, 260, 261  # "▁", "▁ok", "ok" in byte_fallback_tokenizer
_ids = itertools.count()


@pytest.fixture(scope="module")
def tokenizer():
    return byte_fallback_tokenizer()


def generate(tokenizer, prompt, out, params, final_only=False):
    """Feed ``out`` one token per step; the streamed deltas and the last output."""
    proc = OutputProcessor(streaming_decoder(tokenizer), frozenset({2}), 1000, EngineStats(),
                           eos_id=2)
    req = Request(f"r{next(_ids)}", None, list(prompt), params, final_only=final_only)
    req.seqs.append(Sequence(next(_ids), 0, req, list(prompt), len(prompt)))
    proc.add(req)
    seq, deltas, last = req.seqs[0], [], None
    for token in out:
        step = proc.process([seq], [len(seq.token_ids)], StepResult([token]))
        for o in step.outputs:
            last = o.outputs[0]
            deltas.append(last.text_delta)
        if step.stopped:
            seq.status = SeqStatus.FINISHED
            break
    return deltas, last


@pytest.mark.parametrize("final_only", [False, True])
def test_a_stop_token_with_text_only_in_context_is_left_out(tokenizer, final_only):
    """A lone "▁" decodes to "" alone but to " " after a word: as a stop token its space
    was kept in the text."""
    params = SamplingParams(max_tokens=8, stop_token_ids=[SPACE])
    deltas, last = generate(tokenizer, [1, OK], [OK, SPACE, OK], params, final_only)
    assert (last.text, last.finish_reason, last.stop_reason) == (" ok", "stop", SPACE)
    assert "".join(deltas) == last.text
    params = SamplingParams(max_tokens=8, stop_token_ids=[SPACE], include_stop_str_in_output=True)
    _, last = generate(tokenizer, [1, OK], [OK, SPACE, OK], params, final_only)
    assert last.text == " ok "
