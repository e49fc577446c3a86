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
- the arrays that the sampling options' long integer lists and integer-keyed dicts were
  moved to (allowed_token_ids of up to 2**20 ids, logit_bias), each int32 where its values
  fit, else int64 (float64 for a dict's float values), each starting 8-byte aligned;
- the token masks' bits as int32, row-major;
- new sequences as UTF-8 JSON (rare): each distinct sampling options object once (a
  request's n sequences share one), then per sequence its fields and the index of its
  options. The options are dataclasses of plain values, written with an explicit tag per
  container type so that tuples, sets and dicts with integer keys come back as they went.
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
_FORMAT = 0x5354_4550_0002  # "STEP", version 2
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
    _ARRAY_BYTES,
    _JSON_BYTES,
    _HEADER_LEN,
) = range(17)

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
    arrays = _ArrayWriter()
    new_json = _new_sequences_to_json(step.new_sequences, arrays) if step.new_sequences else b""
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
    header[_ARRAY_BYTES] = arrays.nbytes
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
    bits = b"" if masks is None else np.ascontiguousarray(masks.bits, dtype=np.int32).tobytes()
    return b"".join((body, *arrays.parts, bits, new_json))


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
    # A view, read (and copied out by ``tolist``) before this returns.
    arrays = memoryview(message)[end : end + header[_ARRAY_BYTES]]
    end += header[_ARRAY_BYTES]
    token_masks = None
    if header[_FLAGS] & _HAS_MASKS:
        rows, words = header[_MASK_ROWS], header[_MASK_WORDS]
        # A copy: the message may be a shared buffer that is reused once this returns.
        bits = np.frombuffer(message, dtype=np.int32, count=rows * words, offset=end).copy()
        token_masks = TokenMasks(np.array(mask_rows, dtype=np.int64), bits.reshape(rows, words))
        end += 4 * rows * words
    json_bytes = header[_JSON_BYTES]
    new_sequences = (
        _new_sequences_from_json(bytes(memoryview(message)[end : end + json_bytes]), arrays)
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


def _new_sequences_to_json(new_sequences: list[NewSequence], arrays: _ArrayWriter) -> bytes:
    # Each distinct params object once, keyed by identity (the step holds every one, so no
    # id is reused while this runs): a request's n sequences share one, and its options may
    # hold a million allowed ids, which n copies would send n times.
    index: dict[int, int] = {}
    params: list[dict[str, Any]] = []
    sequences = []
    for s in new_sequences:
        at = index.get(id(s.params))
        if at is None:
            at = index[id(s.params)] = len(params)
            params.append(params_to_json(s.params, arrays))
        sequences.append([s.seq_id, s.prompt_len, s.seed, at])
    return json.dumps({"params": params, "sequences": sequences}).encode()


def _new_sequences_from_json(text: bytes, arrays: memoryview) -> list[NewSequence]:
    d = json.loads(text)
    # One object per distinct params, shared again by the sequences that shared it.
    params = [params_from_json(p, arrays) for p in d["params"]]
    return [
        NewSequence(seq_id=seq_id, params=params[at], prompt_len=prompt_len, seed=seed)
        for seq_id, prompt_len, seed, at in d["sequences"]
    ]


def params_to_json(params: SamplingParams, arrays: _ArrayWriter | None = None) -> dict[str, Any]:
    """Every field of ``params`` (those the engine sets after construction included) as
    JSON-ready values, but those ``verify`` derives (built again on the other side);
    ``params_from_json`` gives back an equal ``SamplingParams``. With ``arrays``, long
    integer lists and integer-keyed dicts go there, not into the JSON."""
    return {f.name: _to_json(getattr(params, f.name), arrays) for f in _sent_fields()}


def _sent_fields() -> list[dataclasses.Field[Any]]:
    return [f for f in dataclasses.fields(SamplingParams) if not f.metadata.get("derived")]


def params_from_json(d: dict[str, Any], arrays: memoryview | None = None) -> SamplingParams:
    fields = _sent_fields()
    names = {f.name for f in fields}
    if set(d) != names:
        raise ValueError(
            "sampling options of another build: fields "
            f"{sorted(set(d) ^ names)} are not shared with this one"
        )
    values = {name: _from_json(v, arrays) for name, v in d.items()}
    # The constructor validates again; the fields it does not take (set by the engine or
    # derived) are then restored as they were sent.
    params = SamplingParams(**{f.name: values[f.name] for f in fields if f.init})
    for f in fields:
        if not f.init:
            setattr(params, f.name, values[f.name])
    return params


# Lists and dicts shorter than this stay in the JSON: a reference to an array costs as much.
_ARRAY_MIN_LEN = 8
_INT32 = np.iinfo(np.int32)


class _ArrayWriter:
    """The arrays part of a message being written: ``add`` appends one array and gives the
    reference the JSON carries to it, ``[byte offset, dtype, count]``."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.nbytes = 0

    def add(self, array: np.ndarray) -> list[Any]:
        ref = [self.nbytes, array.dtype.str, len(array)]
        data = array.tobytes()
        self.parts.append(data + b"\0" * (-len(data) % 8))  # the next one starts aligned
        self.nbytes += len(self.parts[-1])
        return ref

    def add_ints(self, values: list[int] | tuple[int, ...]) -> list[Any] | None:
        """The reference to ``values`` as an array, or None where they are not all plain
        ints of 64 bits (bools, big ints: those stay JSON)."""
        if not all(type(v) is int for v in values):
            return None
        try:
            array = np.array(values, dtype="<i8")
        except OverflowError:
            return None
        if _INT32.min <= array.min() and array.max() <= _INT32.max:
            array = array.astype("<i4")  # token ids: half the bytes
        return self.add(array)

    def add_floats(self, values: list[float]) -> list[Any] | None:
        if not all(type(v) is float for v in values):
            return None
        return self.add(np.array(values, dtype="<f8"))


def _read_array(arrays: memoryview | None, ref: list[Any]) -> list[Any]:
    if arrays is None:
        raise ValueError("sampling options refer to arrays that were not sent with them")
    offset, dtype, count = ref
    if dtype not in ("<i4", "<i8", "<f8"):
        raise ValueError(f"unknown array type {dtype!r} in sampling options")
    return np.frombuffer(arrays, dtype=dtype, count=count, offset=offset).tolist()


# Every container is a one-key object naming its type (a JSON array or object alone would
# lose tuple vs list, set vs list, and integer dict keys); scalars stay themselves. With
# ``arrays``, a long list or tuple of ints, or a long dict from ints to all ints or all floats
# (allowed_token_ids, logit_bias), goes there as arrays instead: one numpy conversion rather
# than a tagged JSON value per element.
def _to_json(value: Any, arrays: _ArrayWriter | None = None) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        kind = "list" if isinstance(value, list) else "tuple"
        if arrays is not None and len(value) >= _ARRAY_MIN_LEN:
            ref = arrays.add_ints(value)
            if ref is not None:
                return {f"{kind}_array": ref}
        return {kind: [_to_json(v, arrays) for v in value]}
    if isinstance(value, (set, frozenset)):
        return {type(value).__name__: [_to_json(v, arrays) for v in value]}
    if isinstance(value, dict):
        if arrays is not None and len(value) >= _ARRAY_MIN_LEN:
            keys = arrays.add_ints(list(value))
            values = list(value.values())
            refs = None if keys is None else (arrays.add_ints(values) or arrays.add_floats(values))
            if keys is not None and refs is not None:
                return {"dict_arrays": [keys, refs]}
            # Not all plain numbers: the arrays already added stay, unreferenced.
        return {"dict": [[_to_json(k, arrays), _to_json(v, arrays)] for k, v in value.items()]}
    if isinstance(value, RequestOutputKind):
        return {"output_kind": value.name}
    if isinstance(value, StructuredOutputsParams):
        return {
            "structured_outputs": {
                f.name: _to_json(getattr(value, f.name), arrays) for f in dataclasses.fields(value)
            }
        }
    raise TypeError(f"sampling options cannot carry a {type(value).__name__} to the ranks")


def _from_json(value: Any, arrays: memoryview | None = None) -> Any:
    if not isinstance(value, dict):
        return value
    ((kind, body),) = value.items()
    if kind == "list":
        return [_from_json(v, arrays) for v in body]
    if kind == "tuple":
        return tuple(_from_json(v, arrays) for v in body)
    if kind == "list_array":
        return _read_array(arrays, body)
    if kind == "tuple_array":
        return tuple(_read_array(arrays, body))
    if kind == "set":
        return {_from_json(v, arrays) for v in body}
    if kind == "frozenset":
        return frozenset(_from_json(v, arrays) for v in body)
    if kind == "dict":
        return {_from_json(k, arrays): _from_json(v, arrays) for k, v in body}
    if kind == "dict_arrays":
        keys, values = body
        return dict(zip(_read_array(arrays, keys), _read_array(arrays, values), strict=True))
    if kind == "output_kind":
        return RequestOutputKind[body]
    if kind == "structured_outputs":
        return StructuredOutputsParams(**{k: _from_json(v, arrays) for k, v in body.items()})
    raise ValueError(f"unknown tag {kind!r} in sampling options")
