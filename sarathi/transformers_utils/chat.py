"""Chat messages to prompt token ids with the tokenizer's (or a given) Jinja chat template:
the server's chat endpoints and ``LLM.chat`` share it, so one conversation gives the same
prompt either way."""

from __future__ import annotations

import functools
import inspect
import json
from collections.abc import Iterable
from typing import Any, Literal

from jinja2 import TemplateError, meta, nodes

from sarathi.sampling_params import is_unicode
from sarathi.transformers_utils.tokenizer import as_patch_tokenizer


class NoChatTemplate(ValueError):
    """The tokenizer has no chat template and none was given."""


class ChatTemplateError(ValueError):
    """The template failed on these messages."""


class TemplateKwargsError(ValueError):
    """``template_kwargs`` names one of ``apply_chat_template``'s own parameters."""


class EffortError(ValueError):
    """A reasoning effort the chat template does not read, or one that disagrees with the
    ``reasoning_effort`` of the request's template variables."""


# OpenAI's reasoning efforts as its SDK sends them, and vLLM's "max" (DeepSeek V4's).
ReasoningEffort = Literal["none", "minimal", "low", "medium", "high", "xhigh", "max"]


def check_template_kwargs(tokenizer: Any, template_kwargs: dict[str, Any] | None) -> None:
    """TemplateKwargsError for template variables named as ``apply_chat_template``'s own
    parameters, which they would change."""
    clash = sorted(set(template_kwargs) & _reserved(tokenizer)) if template_kwargs else []
    if clash:
        raise TemplateKwargsError(
            f"chat template variables may not be named {', '.join(clash)} "
            "(parameters of the template call itself)"
        )


def _reserved(tokenizer: Any) -> set[str]:
    """The parameters of the tokenizer's ``apply_chat_template``: template variables with
    these names would change what the call returns (``tokenize``, ``return_dict``, ...).
    A PatchTokenizer's passes its ``**kwargs`` on to its base tokenizer's, so that one's
    parameters count too: there ``chat_template`` was the base call's template."""
    names: set[str] = set()
    patch = as_patch_tokenizer(tokenizer)
    for tok in (tokenizer, patch.base_tokenizer if patch is not None else None):
        if tok is None:
            continue
        params = inspect.signature(tok.apply_chat_template).parameters.values()
        names |= {p.name for p in params if p.kind is not inspect.Parameter.VAR_KEYWORD}
    return names


def parts_text(texts: Iterable[str]) -> str:
    """A message's text parts as the one string its template sees: joined by a newline, as
    vLLM joins them, so clients moving over get the same prompts."""
    return "\n".join(texts)


def arguments_object(arguments: str) -> Any:
    """A tool call's JSON-text arguments as the object templates expect (they write them
    with ``tojson``); text that is not JSON is given as it is, as is JSON nested deeper than
    the decoder's recursion allows (a client's text, read in the server's stack). Empty
    arguments (clients send ``""`` for a call of a tool without parameters) are ``{}``, as
    vLLM gives them: as text, templates that print string arguments raw (Qwen3's) wrote
    ``"arguments": }``."""
    if not arguments.strip():
        return {}
    try:
        return json.loads(arguments)
    except (json.JSONDecodeError, RecursionError):
        return arguments


def reasoning_fields(
    role: str, reasoning: str | None, reasoning_content: str | None
) -> dict[str, str]:
    """An earlier turn's reasoning as the chat template reads it, as vLLM gives it: an
    assistant message's ``reasoning`` (vLLM's name) or, without one, its
    ``reasoning_content`` (the older name, which clients still send back), under both names
    (Qwen3's template reads ``reasoning_content`` to write the turn's <think> block). Other
    roles carry none, as in vLLM."""
    value = reasoning if reasoning is not None else reasoning_content
    if role != "assistant" or value is None:
        return {}
    return {"reasoning": value, "reasoning_content": value}


def conversation_ids(
    tokenizer: Any,
    conversation: list[dict[str, Any]],
    template: str | None,
    add_generation_prompt: bool = True,
    continue_final_message: bool = False,
    tools: list[dict[str, Any]] | None = None,
    template_kwargs: dict[str, Any] | None = None,
    add_special_tokens: bool = False,
    documents: list[dict[str, str]] | None = None,
    content_format: str = "auto",
) -> list[int]:
    """The prompt token ids for ``conversation`` (messages as the template reads them:
    role, content text, and name / tool calls / reasoning where present).
    ``content_format`` (vLLM's ``chat_template_content_format``): "string" gives each
    message's content as its text, "openai" as a list of one text part
    (``[{"type": "text", "text": ...}]``) for templates that loop over parts, "auto" the
    one the template reads (``content_format_of``).
    ``continue_final_message`` leaves the last (assistant) message open for the model to go
    on, and so adds no generation prompt. ``template_kwargs``: extra variables for the
    template (e.g. ``enable_thinking``); ``documents``: passages for RAG templates. The
    template writes any BOS it wants, so special tokens are not added again unless asked."""
    if template is None and not getattr(tokenizer, "chat_template", None):
        raise NoChatTemplate("this model's tokenizer has no chat template")
    check_template_kwargs(tokenizer, template_kwargs)
    if continue_final_message and add_generation_prompt:
        add_generation_prompt = False
    if content_format == "auto":
        rendered = _rendered_template(tokenizer, template, tools)
        content_format = content_format_of(rendered) if rendered is not None else "string"
    if content_format == "openai":
        conversation = [_as_parts(m) for m in conversation]
    kwargs: dict[str, Any] = dict(template_kwargs or {})
    kwargs.update(tokenize=False, add_generation_prompt=add_generation_prompt)
    if tools:
        kwargs["tools"] = tools
    if documents:
        kwargs["documents"] = documents
    if continue_final_message:
        kwargs["continue_final_message"] = True
    if template is not None:
        kwargs["chat_template"] = template
    try:
        text = tokenizer.apply_chat_template(conversation, **kwargs)
    # RecursionError: the template (tojson, a copy) walks the messages recursively, and
    # arguments hundreds of levels deep decode but exhaust the stack there.
    except (TemplateError, ValueError, TypeError, KeyError, IndexError, RecursionError) as e:
        raise ChatTemplateError(f"the chat template failed on these messages: {e}") from e
    if not is_unicode(text):
        # The tokenizer raises a bare TypeError for it (the server refuses such JSON first).
        raise ChatTemplateError("the conversation is not valid Unicode (it has a lone surrogate)")
    return list(tokenizer.encode(text, add_special_tokens=add_special_tokens))


@functools.lru_cache(maxsize=16)
def template_variables(template: str) -> frozenset[str]:
    """The variables ``template`` reads from its caller (Jinja's undeclared variables),
    parsed as transformers compiles it (its extensions and globals); cached per template
    text, so requests do not parse it again. A template Jinja cannot parse raises
    ChatTemplateError, as rendering it would."""
    from transformers.utils.chat_template_utils import _compile_jinja_template

    try:
        environment = _compile_jinja_template(template).environment
        return frozenset(meta.find_undeclared_variables(environment.parse(template)))
    except TemplateError as e:
        raise ChatTemplateError(f"the chat template failed on these messages: {e}") from e


CONTENT_FORMATS = ("auto", "string", "openai")


@functools.lru_cache(maxsize=16)
def content_format_of(template: str) -> str:
    """ "openai" where ``template`` loops over a message's content (``for part in
    message['content']``: content as a list of parts, whose text a string would lose to a
    loop over its characters), else "string"; cached per template text."""
    from transformers.utils.chat_template_utils import _compile_jinja_template

    try:
        environment = _compile_jinja_template(template).environment
        loops = environment.parse(template).find_all(nodes.For)
    except TemplateError as e:
        raise ChatTemplateError(f"the chat template failed on these messages: {e}") from e
    return "openai" if any(_is_content(loop.iter) for loop in loops) else "string"


def _is_content(node: nodes.Node) -> bool:
    """Whether ``node`` reads a ``content`` field (``m['content']``, ``m.content``), also
    through filters (``m['content'] | selectattr(...)``)."""
    while isinstance(node, nodes.Filter) and node.node is not None:
        node = node.node
    if isinstance(node, nodes.Getattr):
        return node.attr == "content"
    return (
        isinstance(node, nodes.Getitem)
        and isinstance(node.arg, nodes.Const)
        and node.arg.value == "content"
    )


def _as_parts(message: dict[str, Any]) -> dict[str, Any]:
    content = message.get("content")
    if not isinstance(content, str):
        return message
    return {**message, "content": [{"type": "text", "text": content}]}


def _rendered_template(
    tokenizer: Any, template: str | None, tools: list[dict[str, Any]] | None
) -> str | None:
    """The text of the template a render uses: the given one, else the tokenizer's; of a
    tokenizer's named templates, the one transformers picks ("tool_use" for a request with
    tools where there is one, else "default")."""
    if template is not None:
        return template
    own = getattr(tokenizer, "chat_template", None)
    if isinstance(own, dict):
        named: Any = own.get("tool_use") if tools and "tool_use" in own else own.get("default")
        return named if isinstance(named, str) else None
    return own if isinstance(own, str) else None


def with_effort(
    tokenizer: Any,
    template: str | None,
    tools: list[dict[str, Any]] | None,
    effort: ReasoningEffort | None,
    template_kwargs: dict[str, Any] | None,
) -> dict[str, Any] | None:
    """The template variables of a request with a reasoning effort (vLLM's
    ``reasoning_effort``, the Responses API's ``reasoning.effort``), as vLLM passes them:
    the effort becomes the template's ``reasoning_effort`` where the template reads one, and
    its thinking switch ``enable_thinking`` (off for "none", on for any other effort) where
    the template reads that and the request did not set it. A template that reads neither
    could not honour an effort other than "none" (which asks for nothing): an EffortError,
    as is a ``reasoning_effort`` of ``template_kwargs`` that says otherwise (two answers to
    one question)."""
    if effort is None:
        return template_kwargs
    kwargs = dict(template_kwargs or {})
    given = kwargs.get("reasoning_effort", effort)
    if given != effort:
        raise EffortError(
            f"reasoning effort {effort!r} and chat_template_kwargs.reasoning_effort {given!r} "
            "disagree; send one of them"
        )
    text = _rendered_template(tokenizer, template, tools)
    if text is None:  # no template to render with: the render says so (NoChatTemplate)
        return template_kwargs
    variables = template_variables(text)
    if "reasoning_effort" in variables:
        kwargs["reasoning_effort"] = effort
    if "enable_thinking" in variables and "enable_thinking" not in kwargs:
        kwargs["enable_thinking"] = effort != "none"
    if variables & {"reasoning_effort", "enable_thinking"} or effort == "none":
        return kwargs or None
    raise EffortError(
        f"a reasoning effort of {effort!r} is not supported by this model: its chat template "
        "reads neither a reasoning_effort variable nor an enable_thinking switch. Send "
        'effort "none" or leave it out'
    )
