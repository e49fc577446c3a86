"""Structured outputs: constrained decoding with llguidance.

A request's constraint (``SamplingParams.structured_outputs``: a JSON schema, any JSON
object, a regex, a choice or a grammar) becomes a grammar over the *model's* vocabulary,
including an AdaptiVocab PatchTokenizer's n-gram tokens (each taken as the bytes it stands
for). Each sequence gets a matcher that follows its tokens; before a step samples, the
matchers write a bit mask per constrained row, and the sampler sets the logits of every
masked token to -inf on the device.

Masks depend on the token sampled just before, so with overlapped scheduling the engine
queues step N+1's forward first, then processes step N's tokens and computes N+1's masks
while that forward runs, and only then queues N+1's sampling (``masks_follow``).

    vocabulary.py   the tokenizer as llguidance sees it (token id -> bytes)
    compiler.py     a constraint -> a validated grammar (cached)
    manager.py      per-sequence matchers; the masks of a step's rows
"""

from sarathi.structured_output.manager import StructuredOutputManager

__all__ = ["StructuredOutputManager"]
