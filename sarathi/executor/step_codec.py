"""A ``StepInput`` as one flat byte message, for the ranks of a tensor-parallel executor.

The driver encodes each step once and every rank decodes it, without pickle: pickle would
let whoever can write the channel run code in a rank, and it walks an object graph per
step where a few flat integer arrays say the same.

Layout (little-endian, native to every host the ranks run on):

- a header of ``_HEADER_LEN`` int64: a format tag, flags, then the count of every
  variable part below;
- an int64 body: decode seq ids, positions and tokens; seven fields per chunk (seq id,
  start, tokens, flags, prompt logprobs, next prompt token, history length); the chunks'
  tokens back to back, then their history heads back to back; preempted; finished; cache
  registrations as triples; cache evictions; prefix hits as keys, lengths and entries back
  to back; the token masks' rows;
- the token masks' bits as int32, row-major;
- new sequences as UTF-8 JSON (once per sequence, so rare): their sampling options are
  dataclasses of plain values, written with an explicit tag per container type so that
  tuples, sets and dicts with integer keys come back as they went.
"""

from __future__ import annotations

import dataclasses
import json
import struct
import sys
from typing import Any

import numpy as np

from sarathi.core.scheduler_output import NewSequence, ScheduledChunk, StepInput, TokenMasks
from sarathi.sampling_params import RequestOutputKind, SamplingParams, StructuredOutputsParams

# Bumped when the layout changes: a rank from another build fails loudly, not subtly.
_FORMAT = 0x5354_4550_0001  # "STEP", version 1
(
    _FORMAT_AT,
    _FLAGS,
    _DECODES,
    _CHUNKS,
    _CHUNK_TOKENS,
    _HISTORY_TOKENS,
    _PREEMPTED,
    _FINISHED,
    _REGISTRATIONS,
    _EVICTIONS,
    _PREFIX_HITS,
    _PREFIX_HIT_ENTRIES,
    _MASK_ROWS,
    _MASK_WORDS,
    _JSON_BYTES,
    _HEADER_LEN,
) = range(16)

_MASKS_FOLLOW = 1
_HAS_MASKS = 2

_CHUNK_FIELDS = 7
_SAMPLE = 1
_HAS_PROMPT_LOGPROBS = 2
_HAS_NEXT_PROMPT_TOKEN = 4
_HAS_HISTORY_HEAD = 8

if sys.byteorder != "little":  # the layout is written with the host's byte order
    raise ImportError("sarathi.executor.step_codec supports little-endian hosts only")


def encode_step(step: StepInput) -> bytes:
    """``step`` as one message that ``decode_step`` turns back into an equal ``StepInput``."""
    chunk_fields: list[int] = []
    chunk_tokens: list[int] = []
    history: list[int] = []
    for c in step.chunks:
        flags = (
            (_SAMPLE if c.sample else 0)
            | (_HAS_PROMPT_LOGPROBS if c.prompt_logprobs is not None else 0)
            | (_HAS_NEXT_PROMPT_TOKEN if c.next_prompt_token is not None else 0)
            | (_HAS_HISTORY_HEAD if c.history_head is not None else 0)
        )
        head = c.history_head or []
        chunk_fields += (
            c.seq_id,
            c.start,
            len(c.token_ids),
            flags,
            c.prompt_logprobs or 0,
            c.next_prompt_token or 0,
            len(head),
        )
        chunk_tokens += c.token_ids
        history += head
    registrations = [x for triple in step.cache_registrations for x in triple]
    hit_entries = [e for entries in step.prefix_hits.values() for e in entries]
    masks = step.token_masks
    mask_rows: list[int] = [] if masks is None else masks.rows.tolist()
    mask_words = 0 if masks is None else int(masks.bits.shape[1])
    new_json = (
        json.dumps([_new_sequence_to_json(s) for s in step.new_sequences]).encode()
        if step.new_sequences
        else b""
    )
    n = len(step.decode_seq_ids)
    if not len(step.decode_positions) == len(step.decode_tokens) == n:
        raise ValueError("a StepInput's decode lists must have one entry per decode")
    header = [0] * _HEADER_LEN
    header[_FORMAT_AT] = _FORMAT
    header[_FLAGS] = (_MASKS_FOLLOW if step.masks_follow else 0) | (
        _HAS_MASKS if masks is not None else 0
    )
    header[_DECODES] = n
    header[_CHUNKS] = len(step.chunks)
    header[_CHUNK_TOKENS] = len(chunk_tokens)
    header[_HISTORY_TOKENS] = len(history)
    header[_PREEMPTED] = len(step.preempted)
    header[_FINISHED] = len(step.finished)
    header[_REGISTRATIONS] = len(step.cache_registrations)
    header[_EVICTIONS] = len(step.cache_evictions)
    header[_PREFIX_HITS] = len(step.prefix_hits)
    header[_PREFIX_HIT_ENTRIES] = len(hit_entries)
    header[_MASK_ROWS] = len(mask_rows)
    header[_MASK_WORDS] = mask_words
    header[_JSON_BYTES] = len(new_json)
    # One list display: chained ``+`` would copy the growing list once per part.
    values = [
        *header,
        *step.decode_seq_ids,
        *step.decode_positions,
        *step.decode_tokens,
        *chunk_fields,
        *chunk_tokens,
        *history,
        *step.preempted,
        *step.finished,
        *registrations,
        *step.cache_evictions,
        *step.prefix_hits,
        *(len(entries) for entries in step.prefix_hits.values()),
        *hit_entries,
        *mask_rows,
    ]
    # One conversion of one list: struct is the cheapest way from Python ints to int64
    # (measured about three times quicker than array.array or numpy.array).
    body = struct.pack(f"<{len(values)}q", *values)
    if masks is None:
        return body + new_json
    bits = np.ascontiguousarray(masks.bits, dtype=np.int32).tobytes()
    return b"".join((body, bits, new_json))


def decode_step(message: bytes | bytearray | memoryview) -> StepInput:
    """The ``StepInput`` that ``encode_step`` wrote into ``message`` (which is not kept)."""
    header = np.frombuffer(message, dtype=np.int64, count=_HEADER_LEN).tolist()
    if header[_FORMAT_AT] != _FORMAT:
        raise ValueError(f"not a step message of this build (format tag {header[_FORMAT_AT]:#x})")
    n = header[_DECODES]
    num_chunks = header[_CHUNKS]
    sizes = [
        n,
        n,
        n,
        num_chunks * _CHUNK_FIELDS,
        header[_CHUNK_TOKENS],
        header[_HISTORY_TOKENS],
        header[_PREEMPTED],
        header[_FINISHED],
        3 * header[_REGISTRATIONS],
        header[_EVICTIONS],
        header[_PREFIX_HITS],
        header[_PREFIX_HITS],
        header[_PREFIX_HIT_ENTRIES],
        header[_MASK_ROWS],
    ]
    body_len = sum(sizes)
    # One conversion to Python ints, then list slices (a copy of pointers each).
    body = np.frombuffer(message, dtype=np.int64, count=body_len, offset=8 * _HEADER_LEN).tolist()
    parts: list[list[int]] = []
    at = 0
    for size in sizes:
        parts.append(body[at : at + size])
        at += size
    (
        seq_ids,
        positions,
        tokens,
        chunk_fields,
        chunk_tokens,
        history,
        preempted,
        finished,
        registrations,
        evictions,
        hit_keys,
        hit_lens,
        hit_entries,
        mask_rows,
    ) = parts

    chunks = []
    tok_at = hist_at = 0
    for i in range(0, len(chunk_fields), _CHUNK_FIELDS):
        seq_id, start, num, flags, plp, npt, num_hist = chunk_fields[i : i + _CHUNK_FIELDS]
        chunks.append(
            ScheduledChunk(
                seq_id=seq_id,
                start=start,
                token_ids=chunk_tokens[tok_at : tok_at + num],
                sample=bool(flags & _SAMPLE),
                prompt_logprobs=plp if flags & _HAS_PROMPT_LOGPROBS else None,
                next_prompt_token=npt if flags & _HAS_NEXT_PROMPT_TOKEN else None,
                history_head=(
                    history[hist_at : hist_at + num_hist] if flags & _HAS_HISTORY_HEAD else None
                ),
            )
        )
        tok_at += num
        hist_at += num_hist

    prefix_hits: dict[int, list[int]] = {}
    at = 0
    for key, size in zip(hit_keys, hit_lens, strict=True):
        prefix_hits[key] = hit_entries[at : at + size]
        at += size

    end = 8 * (_HEADER_LEN + body_len)
    token_masks = None
    if header[_FLAGS] & _HAS_MASKS:
        rows, words = header[_MASK_ROWS], header[_MASK_WORDS]
        # A copy: the message may be a shared buffer that is reused once this returns.
        bits = np.frombuffer(message, dtype=np.int32, count=rows * words, offset=end).copy()
        token_masks = TokenMasks(np.array(mask_rows, dtype=np.int64), bits.reshape(rows, words))
        end += 4 * rows * words
    json_bytes = header[_JSON_BYTES]
    new_sequences = (
        [
            _new_sequence_from_json(s)
            for s in json.loads(bytes(memoryview(message)[end : end + json_bytes]))
        ]
        if json_bytes
        else []
    )
    return StepInput(
        decode_seq_ids=seq_ids,
        decode_positions=positions,
        decode_tokens=tokens,
        chunks=chunks,
        new_sequences=new_sequences,
        preempted=preempted,
        finished=finished,
        token_masks=token_masks,
        masks_follow=bool(header[_FLAGS] & _MASKS_FOLLOW),
        cache_registrations=[
            (registrations[i], registrations[i + 1], registrations[i + 2])
            for i in range(0, len(registrations), 3)
        ],
        cache_evictions=evictions,
        prefix_hits=prefix_hits,
    )


# -- the rare parts: new sequences and their sampling options, as tagged JSON ----------------


def _new_sequence_to_json(s: NewSequence) -> dict[str, Any]:
    return {
        "seq_id": s.seq_id,
        "prompt_len": s.prompt_len,
        "seed": s.seed,
        "params": params_to_json(s.params),
    }


def _new_sequence_from_json(d: dict[str, Any]) -> NewSequence:
    return NewSequence(
        seq_id=d["seq_id"],
        params=params_from_json(d["params"]),
        prompt_len=d["prompt_len"],
        seed=d["seed"],
    )


def params_to_json(params: SamplingParams) -> dict[str, Any]:
    """Every field of ``params`` (those the engine sets after construction included) as
    JSON-ready values; ``params_from_json`` gives back an equal ``SamplingParams``."""
    return {f.name: _to_json(getattr(params, f.name)) for f in dataclasses.fields(params)}


def params_from_json(d: dict[str, Any]) -> SamplingParams:
    fields = dataclasses.fields(SamplingParams)
    names = {f.name for f in fields}
    if set(d) != names:
        raise ValueError(
            "sampling options of another build: fields "
            f"{sorted(set(d) ^ names)} are not shared with this one"
        )
    values = {name: _from_json(v) for name, v in d.items()}
    # The constructor validates again; the fields it does not take (set by the engine or
    # derived) are then restored as they were sent.
    params = SamplingParams(**{f.name: values[f.name] for f in fields if f.init})
    for f in fields:
        if not f.init:
            setattr(params, f.name, values[f.name])
    return params


# Every container is a one-key object naming its type (a JSON array or object alone would
# lose tuple vs list, set vs list, and integer dict keys); scalars stay themselves.
def _to_json(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, list):
        return {"list": [_to_json(v) for v in value]}
    if isinstance(value, tuple):
        return {"tuple": [_to_json(v) for v in value]}
    if isinstance(value, (set, frozenset)):
        return {type(value).__name__: [_to_json(v) for v in value]}
    if isinstance(value, dict):
        return {"dict": [[_to_json(k), _to_json(v)] for k, v in value.items()]}
    if isinstance(value, RequestOutputKind):
        return {"output_kind": value.name}
    if isinstance(value, StructuredOutputsParams):
        return {
            "structured_outputs": {
                f.name: _to_json(getattr(value, f.name)) for f in dataclasses.fields(value)
            }
        }
    raise TypeError(f"sampling options cannot carry a {type(value).__name__} to the ranks")


def _from_json(value: Any) -> Any:
    if not isinstance(value, dict):
        return value
    ((kind, body),) = value.items()
    if kind == "list":
        return [_from_json(v) for v in body]
    if kind == "tuple":
        return tuple(_from_json(v) for v in body)
    if kind == "set":
        return {_from_json(v) for v in body}
    if kind == "frozenset":
        return frozenset(_from_json(v) for v in body)
    if kind == "dict":
        return {_from_json(k): _from_json(v) for k, v in body}
    if kind == "output_kind":
        return RequestOutputKind[body]
    if kind == "structured_outputs":
        return StructuredOutputsParams(**{k: _from_json(v) for k, v in body.items()})
    raise ValueError(f"unknown tag {kind!r} in sampling options")
