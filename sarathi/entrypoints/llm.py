"""The offline API: ``LLM(model=...).generate(prompts, params)``."""

from __future__ import annotations

import itertools
import logging
import numbers
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from tqdm.auto import tqdm

from sarathi.config import EngineConfig
from sarathi.engine.llm_engine import LLMEngine, RequestError
from sarathi.entrypoints.vllm_compat import NO_OP_OPTIONS
from sarathi.outputs import Logprob, RequestOutput
from sarathi.sampling_params import SamplingParams, is_unicode
from sarathi.transformers_utils.chat import (
    CONTENT_FORMATS,
    NoChatTemplate,
    arguments_object,
    conversation_ids,
    parts_text,
    reasoning_fields,
)

if TYPE_CHECKING:
    from typing_extensions import TypeIs

logger = logging.getLogger("sarathi")

# One prompt: text, token ids, or vLLM's {"prompt": ...} / {"prompt_token_ids": ...}.
Prompt = str | Sequence[int] | dict[str, Any]

_BAR_THRESHOLD = 8  # show a progress bar for batches at least this large


class LLM:
    """Generate completions for a batch of prompts.

    Every keyword is an engine config field name (see ``python -m sarathi generate --help``),
    e.g. ``LLM(model="path/to/model", dtype="bfloat16", chunk_size=512, scheduler="sarathi")``.
    With no model, the embedded random-weight demo model is used.
    """

    def __init__(self, model: str = "demo", **kwargs: Any) -> None:
        for option in NO_OP_OPTIONS:
            if option.name in kwargs and not option.takes(value := kwargs.pop(option.name)):
                raise ValueError(
                    f"{option.name}={value!r} is not supported (it takes {option.taken}): "
                    f"{option.why}"
                )
        if "seed" in kwargs and kwargs["seed"] is None:
            # vLLM's LLM takes seed=None (its V0 default, which scripts pass on), and its V1
            # engine reads it as 0, this engine's default.
            kwargs["seed"] = 0
        self._start(EngineConfig.from_kwargs(model=model, **kwargs))

    @classmethod
    def from_config(cls, config: EngineConfig) -> LLM:
        llm = cls.__new__(cls)
        llm._start(config)
        return llm

    def _start(self, config: EngineConfig) -> None:
        self.config = config
        self.engine = LLMEngine(config)
        self._request_ids = itertools.count()

    @property
    def llm_engine(self) -> LLMEngine:
        """The engine, under vLLM's name for it (``llm.llm_engine.get_tokenizer()``)."""
        return self.engine

    def get_default_sampling_params(self) -> SamplingParams:
        """SamplingParams with the model's defaults (--generation-config, as vLLM): its
        generation_config.json's sampling options, and its max_new_tokens as max_tokens."""
        setup = self.engine.setup
        kwargs = dict(setup.default_sampling)
        if setup.max_new_tokens is not None:
            kwargs["max_tokens"] = setup.max_new_tokens
        return SamplingParams(**kwargs)

    def get_tokenizer(self) -> Any:
        return self.engine.tokenizer

    def chat(
        self,
        messages: Sequence[dict[str, Any]] | Sequence[Sequence[dict[str, Any]]],
        sampling_params: SamplingParams | Sequence[SamplingParams] | None = None,
        use_tqdm: bool | Callable[..., tqdm] | None = None,
        lora_request: Any = None,
        chat_template: str | None = None,
        chat_template_content_format: str = "auto",
        add_generation_prompt: bool | None = None,
        continue_final_message: bool = False,
        tools: list[dict[str, Any]] | None = None,
        chat_template_kwargs: dict[str, Any] | None = None,
        tokenization_kwargs: dict[str, Any] | None = None,
        mm_processor_kwargs: dict[str, Any] | None = None,
        *,
        priority: Sequence[int] | None = None,
    ) -> list[RequestOutput]:
        """Replies to one conversation (a list of ``{"role": ..., "content": ...}``
        messages) or to a list of them, as vLLM's ``LLM.chat``: each is rendered with the
        tokenizer's chat template (or ``chat_template``, the template's text), exactly as
        the server's /v1/chat/completions renders it, then generated as ``generate`` does.
        ``add_generation_prompt`` (None: true, unless ``continue_final_message``): the
        template's header that opens the assistant's reply; ``continue_final_message``: the
        last (assistant) message is left open and continued, so it takes no generation
        prompt, and asking for both raises ValueError, as vLLM and the server refuse it;
        ``tools``: OpenAI-style tool definitions for templates that show them;
        ``chat_template_kwargs``: extra template variables (e.g. ``enable_thinking``, or
        ``reasoning_effort`` for a template that reads one); ``priority``: one integer per
        conversation, as ``generate`` takes one per prompt (checked before any is rendered).
        A missing template or one that fails on the messages raises ValueError.

        ``chat_template_content_format``: "string" (content as its text), "openai" (a list
        of text parts, for templates that loop over them) or "auto" (the one the template
        reads), as the server's --chat-template-content-format.

        The parameters are vLLM's, in its order. Those this engine has no use for are taken
        at their neutral values (``lora_request`` None, ``tokenization_kwargs`` and
        ``mm_processor_kwargs`` None or empty); any other value is a ValueError."""
        if chat_template_content_format not in CONTENT_FORMATS:
            raise ValueError(
                f"chat_template_content_format={chat_template_content_format!r} is not one "
                f"of {', '.join(CONTENT_FORMATS)}"
            )
        if mm_processor_kwargs:
            raise ValueError(
                "mm_processor_kwargs are not supported: this engine serves text-only models"
            )
        if continue_final_message and add_generation_prompt:
            # Refused rather than dropped: the caller asked for a header it would not get.
            raise ValueError(
                "Cannot set both continue_final_message and add_generation_prompt to True: "
                "a continued final message takes no generation prompt (leave "
                "add_generation_prompt out, or pass False)"
            )
        if add_generation_prompt is None:
            add_generation_prompt = not continue_final_message
        tokenizer = self.engine.tokenizer
        if tokenizer is None:
            raise ValueError("chat needs a tokenizer; this model was loaded without one")
        if not isinstance(messages, Sequence) or isinstance(messages, str):
            # Otherwise None raises "'NoneType' object is not iterable", and a string reads
            # as a conversation of its characters.
            raise ValueError(
                "messages must be a conversation (a list of message dicts) or a list of them, "
                f"got {type(messages).__name__}"
            )
        single = bool(messages) and isinstance(messages[0], dict)
        conversations = [messages] if single else list(messages)
        ranks = _priorities(priority, len(conversations), self.engine, "conversations")
        prompts: list[Prompt] = []
        for i, conversation in enumerate(conversations):
            try:
                ids = conversation_ids(
                    tokenizer,
                    _conversation(conversation, i),
                    chat_template,
                    add_generation_prompt,
                    continue_final_message,
                    tools,
                    chat_template_kwargs,
                    content_format=chat_template_content_format,
                )
            except NoChatTemplate as e:
                raise ValueError(
                    "this model's tokenizer has no chat template; pass chat_template= (the "
                    "template's text) or use generate with a prompt"
                ) from e
            prompts.append(ids)
        outputs = self.generate(
            prompts,
            sampling_params,
            use_tqdm,
            lora_request=lora_request,
            priority=ranks,
            tokenization_kwargs=tokenization_kwargs,
        )
        for out in outputs:  # the rendered conversation, as vLLM's chat reports it
            out.prompt = tokenizer.decode(out.prompt_token_ids, skip_special_tokens=False)
        return outputs

    def generate(
        self,
        prompts: Prompt | Sequence[Prompt],
        sampling_params: SamplingParams | Sequence[SamplingParams] | None = None,
        use_tqdm: bool | Callable[..., tqdm] | None = None,
        *,
        lora_request: Any = None,
        priority: Sequence[int] | None = None,
        tokenization_kwargs: dict[str, Any] | None = None,
    ) -> list[RequestOutput]:
        """Outputs in the order of ``prompts``: one prompt or a list of them, each a string,
        a list of token ids, or vLLM's prompt dicts ``{"prompt": text}`` and
        ``{"prompt_token_ids": ids}``.

        ``use_tqdm``: True or False shows the progress bar or not (None: for batches of
        8 or more); a callable (vLLM's, e.g. ``functools.partial(tqdm, leave=False)``)
        makes the bar. ``priority`` (vLLM's): one integer per prompt, lower served sooner,
        with ``LLM(scheduling_policy="priority")``; under the default fcfs policy only
        zeros are taken (anything else is a ValueError, as in vLLM). vLLM's
        ``lora_request`` and ``tokenization_kwargs`` are taken at their neutral values
        (None; None or empty), so vLLM code that spells them out runs; any other value is a
        ValueError saying what to do instead.

        A request that cannot be served (e.g. a prompt longer than the context) gets an
        output with ``error`` set and ``finish_reason="error"``; the others still run.
        Params asking for more logprobs than ``LLM(max_logprobs=...)`` allows (20 by
        default) are a ValueError, raised before any prompt is queued, as in vLLM.
        """
        items: list[Any]
        if isinstance(prompts, str | dict) or _is_token_ids(prompts):
            items = [prompts]
        elif isinstance(prompts, Iterable):
            items = list(prompts)
        else:  # list() would raise "'NoneType' object is not iterable" for None
            raise ValueError(
                "prompts must be a prompt (a string, a list of token ids or a prompt dict) or "
                f"a list of them, got {type(prompts).__name__}"
            )
        _refuse_unsupported(lora_request, tokenization_kwargs)
        priorities = _priorities(priority, len(items), self.engine)
        batch = [_prompt(p, i) for i, p in enumerate(items)]
        texts = [_tokens_prompt_text(p) for p in items]
        salts = [_cache_salt(p, i) for i, p in enumerate(items)]
        if sampling_params is None:
            sampling_params = self.get_default_sampling_params()
        if isinstance(sampling_params, SamplingParams):
            params = [sampling_params] * len(batch)
        else:
            # A dict (vLLM takes none either) would otherwise iterate as its keys and fail
            # deep in the engine, after the prompts before it were queued.
            given: list[Any] = (
                [sampling_params]
                if isinstance(sampling_params, dict | str)
                else list(sampling_params)
            )
            if not all(isinstance(p, SamplingParams) for p in given):
                raise ValueError(
                    "sampling_params must be a SamplingParams or a list of them, one per prompt"
                )
            params = given
            if len(params) != len(batch):
                raise ValueError(f"got {len(batch)} prompts but {len(params)} sampling params")
        _check_logprobs(params, self.engine)
        engine = self.engine
        results: dict[str, RequestOutput] = {}
        order = [self._new_request_id() for _ in batch]
        try:
            for i in _longest_first(params):
                rid, prompt, p = order[i], batch[i], params[i]
                try:
                    engine.add_request(
                        prompt,
                        p,
                        request_id=rid,
                        final_only=True,
                        cache_salt=salts[i],
                        priority=priorities[i],
                    )
                except RequestError as e:
                    logger.warning("request %s (prompt %d) failed: %s", rid, i, e)
                    results[rid] = _error_output(rid, prompt, str(e), p.n, engine.tokenizer)
        except BaseException:
            # Anything else (the tokenizer's own error, an interrupt) ends this call: the
            # requests already queued would otherwise stay in the engine and run, unread,
            # inside the next generate call (vLLM aborts them too). Aborting an id not yet
            # queued does nothing.
            for rid in order:
                engine.abort_request(rid)
            raise
        # A callable makes the bar, as in vLLM (it was read as True, and a plain bar shown).
        make_bar = use_tqdm if callable(use_tqdm) else tqdm
        show = bool(use_tqdm) if use_tqdm is not None else len(batch) >= _BAR_THRESHOLD
        bar = make_bar(
            total=len(order) - len(results), desc="generate", unit="req", disable=not show
        )
        try:
            while engine.has_unfinished_requests():
                for out in engine.step():
                    if out.finished:
                        results[out.request_id] = out
                        bar.update(1)
        except BaseException:
            for rid in order:
                engine.abort_request(rid)
            raise
        finally:
            bar.close()
        outputs = [results[rid] for rid in order]
        for out, text in zip(outputs, texts, strict=True):
            if text is not None:  # a tokens prompt's own text, reported as vLLM reports it
                out.prompt = text
        if engine.tokenizer is not None:
            _name_logprob_tokens(outputs, params, engine.tokenizer)
        return outputs

    def _new_request_id(self) -> str:
        """vLLM's request ids, a count kept across calls ("0", "1", ...), which scripts sort
        outputs by (``int(out.request_id)``); one held by a request added through
        ``llm.engine`` is skipped, so it is neither refused nor aborted with this batch."""
        rid = str(next(self._request_ids))
        while rid in self.engine.requests:
            rid = str(next(self._request_ids))
        return rid

    def reset_prefix_cache(self) -> bool:
        """vLLM's ``LLM.reset_prefix_cache``: drop every cached prompt block (e.g. between
        benchmark runs, so the next one starts cold). True when the cache is empty after it
        (blocks of requests still running through ``llm.engine`` stay)."""
        self.engine.reset_prefix_cache()
        pc = self.engine.prefix_cache
        return pc is None or pc.num_cached == 0


_POOLING = (
    "{} is not supported: this engine serves generative (causal LM) models only, with no "
    "pooling tasks (embed, encode, classify, score, reward)"
)
_SLEEP = (
    "{} (sleep mode) is not supported; free the engine's memory with llm.engine.shutdown() "
    "and build a new LLM"
)
_PROFILE = (
    "{} is not supported; set SARATHI_RANK_PROFILE=<folder> to profile ten steps of each "
    "rank with the torch profiler"
)
_RPC = "{} is not supported: the model's workers take no calls from outside the engine"
# vLLM's LLM methods this engine lacks: calling one is a NotImplementedError saying what to
# use instead (an AttributeError read as a misspelt name); hasattr stays true, as in vLLM.
_UNSUPPORTED = {
    "beam_search": (
        "beam_search is not supported; sample several completions with "
        "SamplingParams(n=..., logprobs=0) and rank them by cumulative_logprob"
    ),
    **{name: _POOLING.format(name) for name in ("encode", "embed", "classify", "score", "reward")},
    **{name: _SLEEP.format(name) for name in ("sleep", "wake_up")},
    **{name: _PROFILE.format(name) for name in ("start_profile", "stop_profile")},
    "set_tokenizer": (
        "set_tokenizer is not supported; build the LLM with tokenizer=<folder or hub id>"
    ),
    **{name: _RPC.format(name) for name in ("collective_rpc", "apply_model")},
}


def _longest_first(params: Sequence[SamplingParams]) -> list[int]:
    """The order to queue one ``generate`` call's requests in: the largest ``max_tokens``
    first (None, bounded only by the context, before any number), ties in prompt order.

    A batch takes as many steps as its last request to finish needs, and a request can only
    start decoding once its prompt is in. Queued in prompt order, a long output whose prompt
    comes last decodes alone at the end, in steps that read all the weights for a few
    tokens each; started first, it decodes beside the rest. Offline, nobody reads an output
    before the batch ends, so the order costs no one latency. Where every request has the
    same budget (the usual case) the order is the prompts'."""
    return sorted(
        range(len(params)),
        key=lambda i: -(params[i].max_tokens or sys.maxsize),
    )


def _unsupported(name: str, message: str) -> Any:
    def method(self: LLM, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(message)

    method.__name__ = method.__qualname__ = name
    method.__doc__ = f"vLLM's ``LLM.{name}``: not supported here (NotImplementedError)."
    return method


for _name, _message in _UNSUPPORTED.items():
    setattr(LLM, _name, _unsupported(_name, _message))


def _refuse_unsupported(lora_request: Any, tokenization_kwargs: Any) -> None:
    """ValueError for vLLM's generate arguments at a value this engine cannot honour (they
    were TypeErrors as unknown keywords, even at vLLM's defaults)."""
    loras = lora_request if isinstance(lora_request, list | tuple) else [lora_request]
    if any(r is not None for r in loras):
        raise ValueError(
            "lora_request is not supported: this engine serves no LoRA adapters; merge the "
            "adapter into the weights (e.g. peft's merge_and_unload) and load that folder"
        )
    if tokenization_kwargs:
        raise ValueError(
            "tokenization_kwargs are not supported; tokenize the prompt yourself and pass "
            "{'prompt_token_ids': ids} (SamplingParams.truncate_prompt_tokens truncates it)"
        )


def _check_logprobs(params: Sequence[SamplingParams], engine: LLMEngine) -> None:
    """ValueError, before any prompt is queued, for logprobs or prompt_logprobs past the
    engine's max_logprobs, as vLLM's generate raises it (a request refused for anything
    else gets an output with its error)."""
    for p in params:
        try:
            engine.check_logprobs(p.logprobs, "logprobs")
            engine.check_logprobs(p.prompt_logprobs, "prompt_logprobs")
        except RequestError as e:
            raise ValueError(str(e)) from None


def _priorities(
    priority: Sequence[int] | None, count: int, engine: LLMEngine, what: str = "prompts"
) -> list[int]:
    """One priority per prompt (vLLM's ``generate(priority=[...])``; None: all 0), checked
    before any prompt is queued, so a refused list leaves nothing running. ``what``: the
    caller's name for its prompts (chat's are conversations)."""
    if priority is None:
        return [0] * count
    if isinstance(priority, str | bytes) or not isinstance(priority, Iterable):
        raise ValueError(
            f"priority must be a list of integers, one per {what[:-1]}, got {priority!r}"
        )
    ranks = list(priority)
    if len(ranks) != count:
        raise ValueError(f"got {count} {what} but {len(ranks)} priorities")
    for rank in ranks:
        try:
            engine.validate_priority(rank)
        except RequestError as e:
            raise ValueError(str(e)) from None
    return [int(rank) for rank in ranks]


def _name_logprob_tokens(
    outputs: list[RequestOutput], params: list[SamplingParams], tokenizer: Any
) -> None:
    """Set each ``Logprob.decoded_token`` to its token's text, as vLLM's offline outputs
    carry it (the engine leaves it unset: only callers that read logprobs pay for it)."""
    texts: dict[int, str] = {}

    def name(entries: Sequence[dict[int, Logprob] | None] | None) -> None:
        for entry in entries or ():
            for tid, lp in (entry or {}).items():
                text = texts.get(tid)
                if text is None:
                    text = texts[tid] = tokenizer.decode([tid])
                lp.decoded_token = text

    for out, p in zip(outputs, params, strict=True):
        if not p.detokenize:
            continue
        name(out.prompt_logprobs)
        for completion in out.outputs:
            name(completion.logprobs)


def _conversation(messages: Any, index: int) -> list[dict[str, Any]]:
    """Conversation ``index`` as the chat template reads it: each message's role and its
    content as text (text parts joined), with name, tool calls and tool call id kept, and an
    assistant's reasoning under both of its names (``reasoning_fields``).
    ValueError naming what is wrong."""
    if not isinstance(messages, Sequence) or isinstance(messages, str) or not messages:
        raise ValueError(f"conversation {index}: expected a non-empty list of message dicts")
    out = []
    for j, m in enumerate(messages):
        where = f"conversation {index}, message {j}"
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise ValueError(f"{where}: expected a dict with a 'role' string")
        content = m.get("content")
        if isinstance(content, list):
            texts = []
            for part in content:
                if isinstance(part, str):  # a plain string is a text part, as vLLM reads it
                    texts.append(part)
                    continue
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                # An assistant's refusal parts (OpenAI's, sent back as they came) are its
                # text, as the server takes them.
                if kind == "refusal" and m["role"] != "assistant":
                    raise ValueError(f"{where}: a {m['role']} message cannot carry refusal parts")
                if kind not in ("text", "refusal"):
                    raise ValueError(
                        f"{where}: content parts of type {kind!r} are not supported: "
                        "this engine serves text-only models"
                    )
                # As the server refuses it: str() wrote a part without text as "None".
                if not isinstance(part.get(kind), str):
                    raise ValueError(f"{where}: a {kind} content part needs {kind!r}, a string")
                texts.append(part[kind])
            content = parts_text(texts)
        elif content is not None and not isinstance(content, str):
            raise ValueError(f"{where}: content must be a string or a list of text parts")
        for key in ("reasoning", "reasoning_content"):
            if m.get(key) is not None and not isinstance(m[key], str):
                raise ValueError(f"{where}: {key} must be a string")
        # The reasoning keys as the server gives them (vLLM's): an assistant's under both
        # names, another role's not at all.
        message = {k: v for k, v in m.items() if k not in ("reasoning", "reasoning_content")}
        message["content"] = content or ""
        message.update(reasoning_fields(m["role"], m.get("reasoning"), m.get("reasoning_content")))
        if isinstance(m.get("tool_calls"), list):
            message["tool_calls"] = [_call_with_object_arguments(c) for c in m["tool_calls"]]
        out.append(message)
    return out


def _call_with_object_arguments(call: Any) -> Any:
    """A tool call with its JSON-text arguments given to the template as an object, as the
    server gives them."""
    function = call.get("function") if isinstance(call, dict) else None
    if not isinstance(function, dict) or not isinstance(function.get("arguments"), str):
        return call
    return {**call, "function": {**function, "arguments": arguments_object(function["arguments"])}}


def _is_token_ids(prompts: Any) -> TypeIs[Sequence[int]]:
    """One prompt given as token ids, not a batch of prompts."""
    return isinstance(prompts, Sequence) and bool(prompts) and _is_token_id(prompts[0])


def _is_token_id(t: Any) -> bool:
    """An integer, numpy's included (``list(array)`` holds numpy.int64s); not a bool."""
    return isinstance(t, numbers.Integral) and not isinstance(t, bool)


def _prompt(p: Any, index: int) -> str | list[int]:
    """Prompt ``index`` of a batch as text or token ids; ValueError naming it otherwise."""
    if isinstance(p, dict):
        extra = sorted(set(p) - {"prompt", "prompt_token_ids", "cache_salt"})
        if extra:
            raise ValueError(
                f"prompt {index}: {', '.join(extra)} not supported (a prompt dict takes "
                "'prompt' or 'prompt_token_ids' (with their text as 'prompt'), and "
                "'cache_salt'; this engine serves text-only models)"
            )
        if "prompt" not in p and "prompt_token_ids" not in p:
            raise ValueError(f"prompt {index}: give one of 'prompt' and 'prompt_token_ids'")
        if "prompt_token_ids" in p:
            # vLLM's TokensPrompt: the ids are the prompt; a "prompt" beside them is only
            # their text, for the output (_tokens_prompt_text).
            text = p.get("prompt")
            if text is not None and not isinstance(text, str):
                raise ValueError(
                    f"prompt {index}: 'prompt' beside 'prompt_token_ids' must be their text "
                    f"(a string), got {type(text).__name__}"
                )
            p = p["prompt_token_ids"]
        else:
            p = p["prompt"]
    if isinstance(p, str):
        if not is_unicode(p):
            # The tokenizer raises a bare TypeError ("TextEncodeInput must be ...") for it.
            raise ValueError(f"prompt {index}: not valid Unicode (it has a lone surrogate)")
        return p
    if isinstance(p, Sequence):
        # Plain ints are the common case; the Integral check is an ABC lookup per token
        # (~0.15 s for 256 prompts of ~560 tokens, time the GPU would wait for the first step).
        if set(map(type, p)) <= {int}:
            return list(p)
        if all(_is_token_id(t) for t in p):
            return [int(t) for t in p]
    raise ValueError(
        f"prompt {index}: expected a string, a list of token ids or a prompt dict, "
        f"got {type(p).__name__}"
    )


def _tokens_prompt_text(p: Any) -> str | None:
    """The text a vLLM TokensPrompt gives beside its ids (RequestOutput.prompt), if any."""
    if isinstance(p, dict) and "prompt_token_ids" in p:
        return p.get("prompt")
    return None


def _cache_salt(p: Any, index: int) -> str | None:
    """The ``cache_salt`` of prompt ``index`` (vLLM's prompt-dict key): it shares prefix-cache
    blocks only with prompts of the same salt. ValueError for one that is not a string."""
    salt = p.get("cache_salt") if isinstance(p, dict) else None
    if salt is not None and (not isinstance(salt, str) or not salt):
        raise ValueError(f"prompt {index}: cache_salt must be a non-empty string, got {salt!r}")
    return salt


def _error_output(
    rid: str, prompt: str | list[int], message: str, n: int, tokenizer: Any
) -> RequestOutput:
    """The output of a request the engine refused: one errored completion per asked one, and
    the prompt's token ids as the engine read them (a too-long prompt's length shows)."""
    from sarathi.outputs import CompletionOutput

    if isinstance(prompt, str):
        text, ids = prompt, list(tokenizer.encode(prompt)) if tokenizer is not None else []
    else:
        text, ids = None, list(prompt)
    return RequestOutput(
        rid,
        text,
        ids,
        [CompletionOutput(i, "", [], finish_reason="error") for i in range(n)],
        finished=True,
        error=message,
    )
