"""The HTTP routes; each handler finds the server state on ``request.app.state``."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException

import sarathi
from sarathi.entrypoints.openai_server.errors import (
    APIError,
    bad_request,
    error_response,
    validation_message,
)
from sarathi.entrypoints.openai_server.field_audit import (
    TOKENIZE_ACCEPTED,
    TOKENIZE_UNSUPPORTED,
    audit,
)
from sarathi.entrypoints.openai_server.protocol import (
    BodyNotJSON,
    ChatCompletionRequest,
    ChatCompletionResponse,
    CompletionRequest,
    CompletionResponse,
    DetokenizeRequest,
    DetokenizeResponse,
    ErrorResponse,
    ModelCard,
    ModelList,
    TokenizeChatRequest,
    TokenizeRequest,
    TokenizeResponse,
    checked_body,
    load_checked_json,
)
from sarathi.entrypoints.openai_server.protocol_responses import ResponseObject, ResponsesRequest
from sarathi.entrypoints.openai_server.serving_chat import chat_prompt, create_chat_completion
from sarathi.entrypoints.openai_server.serving_common import (
    ENGINE_ERRORS,
    ServerState,
    engine_error,
)
from sarathi.entrypoints.openai_server.serving_completions import create_completion
from sarathi.entrypoints.openai_server.serving_responses import create_response
from sarathi.entrypoints.openai_server.stored_responses import (
    cancellable,
    cancelled,
    deleted,
    input_items_page,
    stored,
)
from sarathi.transformers_utils.tokenizer import tokenizer_description

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 404, 413, 500, 503)
}


# Bodies up to this size are parsed on the event loop (a millisecond or so); larger ones in
# the server's body_threads, a pool of their own: in the default one, which tokenizes
# prompts, ten 4 MB bodies held every thread for seconds and other clients' prompts waited.
INLINE_BODY_BYTES = 64 * 1024


class OffLoopJSONRequest(Request):
    """A request whose JSON body is parsed, and walked for what no model may take (lone
    surrogates, nesting past MAX_DEPTH), in a worker thread when it is large: on the event
    loop, a 4 MB body of small strings or objects held every other client for most of a
    second. The walk is Python, so the loop runs between its slices of the GIL; the walk's
    verdict reaches the body's model (checked_body). A body that is not UTF-8 JSON is a 400
    saying why and where."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            encoding = self.headers.get("content-encoding", "identity").strip().lower()
            if encoding not in ("", "identity"):
                # Read as it is, a gzip body was "not UTF-8 text (invalid start byte 0x8b)".
                raise HTTPException(
                    415,
                    f"Content-Encoding {encoding!r} is not taken: send the JSON body as it is",
                )
            body = await self.body()
            try:
                if len(body) <= INLINE_BODY_BYTES:
                    data, problem = load_checked_json(body)
                else:
                    pool = state_of(self).body_threads
                    loop = asyncio.get_running_loop()
                    data, problem = await loop.run_in_executor(pool, load_checked_json, body)
            except BodyNotJSON as e:
                # FastAPI turns any other error of reading the body into a 400 that says
                # only "There was an error parsing the body"; an HTTPException it passes on.
                raise HTTPException(400, str(e)) from e
            checked_body.set((data, problem))
            self._json = data
        return self._json


class OffLoopJSONRoute(APIRoute):
    """A route whose handler reads its JSON body as an ``OffLoopJSONRequest``."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def off_loop_json(request: Request) -> Response:
            return await handler(OffLoopJSONRequest(request.scope, request.receive))

        return off_loop_json


router = APIRouter(route_class=OffLoopJSONRoute)
_Body = TypeVar("_Body", bound=BaseModel)


def state_of(request: Request) -> ServerState:
    return request.app.state.sarathi


@router.get("/health", responses={503: {"model": ErrorResponse}})
@router.get("/ping", responses={503: {"model": ErrorResponse}})
@router.post("/ping", responses={503: {"model": ErrorResponse}})
async def health(request: Request) -> Response:
    """/health, and vLLM's /ping (SageMaker's health route) answering alike."""
    engine = state_of(request).engine
    if engine.is_alive:
        return JSONResponse({"status": "ok"})
    reason = f": {engine.error}" if engine.error is not None else ""
    return error_response(
        APIError(
            f"the engine loop is not running{reason}", 503, type="server_error", code="engine_dead"
        )
    )


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    m = state_of(request).metrics
    return Response(m.render(), media_type=m.content_type)


@router.get("/version")
async def version() -> dict[str, str]:
    return {"version": sarathi.__version__}


@router.get("/load")
async def load(request: Request) -> dict[str, int]:
    """vLLM's server load: the requests admitted and not yet answered (each sample of one
    counts), running or waiting, for a load balancer that routes to the least loaded."""
    return {"server_load": state_of(request).engine.num_admitted}


@router.get("/v1/models", response_model=ModelList, responses=_ERRORS)
async def models(request: Request) -> ModelList:
    s = state_of(request)
    return ModelList(data=[_card(s, name) for name in (s.model_name, *s.model_aliases)])


def _card(s: ServerState, name: str) -> ModelCard:
    return ModelCard(
        id=name,
        created=s.created,
        root=s.model_name,
        max_model_len=s.max_seq_len,
        description=s.description,
    )


@router.get("/v1/models/{model_id:path}", response_model=ModelCard, responses=_ERRORS)
async def model(model_id: str, request: Request) -> ModelCard:
    s = state_of(request)
    s.check_model(model_id)
    return _card(s, model_id)


@router.get("/tokenizer_info", responses=_ERRORS)
async def tokenizer_info(request: Request) -> dict[str, Any]:
    """The tokenizer's configuration, as vLLM serves it, so remote clients (lm-eval's remote
    tokenizer) count and template tokens as the server does."""
    s = state_of(request)
    tok = s.tokenizer
    if tok is None:
        raise APIError(
            "this server runs without a tokenizer (--skip-tokenizer-init)",
            404,
            code="no_tokenizer",
        )
    return tokenizer_description(tok, s.chat_template, s.max_seq_len)


@router.post("/v1/completions", response_model=CompletionResponse, responses=_ERRORS)
async def completions(body: CompletionRequest, request: Request) -> Response:
    return await create_completion(state_of(request), body, request)


@router.post("/v1/chat/completions", response_model=ChatCompletionResponse, responses=_ERRORS)
async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
    return await create_chat_completion(state_of(request), body, request)


@router.post("/invocations", responses=_ERRORS)
async def invocations(request: Request) -> Response:
    """Amazon SageMaker's inference route, as vLLM serves it: a body with ``messages`` is a
    chat completion, one with ``prompt`` a completion, each answered as its own route
    answers it. The body is read as every route's (``OffLoopJSONRequest``): parsed off the
    loop when large, walked for what no model takes, and a 400 where it is not JSON."""
    body = await request.json()
    if isinstance(body, dict) and "messages" in body:
        chat = _validated(ChatCompletionRequest, body)
        return await create_chat_completion(state_of(request), chat, request)
    if isinstance(body, dict) and "prompt" in body:
        completion = _validated(CompletionRequest, body)
        return await create_completion(state_of(request), completion, request)
    raise bad_request(
        "an /invocations body is a chat completion's (with messages) or a completion's (with "
        "prompt)",
        None,
    )


def _validated(model: type[_Body], body: dict[str, Any]) -> _Body:
    try:
        return model.model_validate(body)
    except ValidationError as e:
        message, param = validation_message(e)
        raise bad_request(message, param) from e


@router.post("/v1/responses", response_model=ResponseObject, responses=_ERRORS)
async def responses(body: ResponsesRequest, request: Request) -> Response:
    """OpenAI's Responses API (docs/server.md)."""
    return await create_response(state_of(request), body, request)


@router.get("/v1/responses/{response_id}", response_model=ResponseObject, responses=_ERRORS)
async def retrieve_response(
    response_id: str, request: Request, stream: bool | None = None
) -> Response:
    """A stored response (404 when unknown, deleted or evicted)."""
    if stream:
        raise bad_request(
            "stream on GET replays a background response's events, which this server does "
            "not keep: poll GET without stream",
            "stream",
        )
    entry = stored(state_of(request).responses, response_id)
    return Response(entry.response_json, media_type="application/json")


@router.post("/v1/responses/{response_id}/cancel", response_model=ResponseObject, responses=_ERRORS)
async def cancel_response(response_id: str, request: Request) -> Response:
    """Cancel a background response: its engine request is aborted and it is stored as
    cancelled (a response that finished first is a 400; a cancelled one is returned)."""
    s = state_of(request)
    cancellable(stored(s.responses, response_id))
    await s.background.cancel(response_id)
    entry = cancelled(stored(s.responses, response_id))
    return Response(entry.response_json, media_type="application/json")


@router.delete("/v1/responses/{response_id}", responses=_ERRORS)
async def delete_response(response_id: str, request: Request) -> dict[str, Any]:
    s = state_of(request)
    stored(s.responses, response_id)  # 404 before anything is cancelled
    # A background response still running is cancelled first: nobody could read it back.
    await s.background.cancel(response_id)
    return deleted(s.responses, response_id)


@router.get("/v1/responses/{response_id}/input_items", responses=_ERRORS)
async def response_input_items(
    response_id: str,
    request: Request,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    order: Literal["asc", "desc"] = "desc",
    after: str | None = None,
) -> dict[str, Any]:
    """OpenAI's list of a stored response's input items (its whole conversation's)."""
    entry = stored(state_of(request).responses, response_id)
    return await asyncio.to_thread(input_items_page, entry, response_id, limit, order, after)


@router.post("/reset_prefix_cache", responses=_ERRORS)
async def reset_prefix_cache(request: Request) -> JSONResponse:
    """vLLM's: drop the cached blocks no running request uses (e.g. between benchmark runs)."""
    try:
        dropped = await state_of(request).engine.reset_prefix_cache()
    except ENGINE_ERRORS as e:
        raise engine_error(e) from e
    return JSONResponse({"dropped_blocks": dropped})


@router.post("/tokenize", response_model=TokenizeResponse, responses=_ERRORS)
async def tokenize(body: TokenizeRequest, request: Request) -> TokenizeResponse:
    s = state_of(request)
    s.check_model(body.model)
    # Either form validates with the other's field as an extra: the request is ambiguous,
    # and whichever form pydantic picks, the other field would be dropped in silence.
    other = "prompt" if isinstance(body, TokenizeChatRequest) else "messages"
    if other in (body.model_extra or {}):
        raise bad_request("send either prompt or messages to /tokenize, not both", other)
    audit(body, s.warned_fields, TOKENIZE_UNSUPPORTED, TOKENIZE_ACCEPTED)
    if isinstance(body, TokenizeChatRequest):
        s.require_tokenizer("messages")
        ids, _ = await chat_prompt(s, body)
    else:
        # Counted whatever its length, as vLLM's: callers chunk long documents by it.
        ids = await s.encode(body.prompt, "prompt", body.add_special_tokens, any_length=True)
    strs = None
    if body.return_token_strs:
        # vLLM's token_strs: the tokenizer's strings of the ids (byte-level pieces as the
        # vocabulary spells them, a PatchTokenizer's n-grams as their pieces joined).
        strs = await asyncio.to_thread(lambda: list(s.tokenizer.convert_ids_to_tokens(ids)))
    return TokenizeResponse(
        tokens=ids, count=len(ids), max_model_len=s.max_seq_len, token_strs=strs
    )


@router.post("/detokenize", response_model=DetokenizeResponse, responses=_ERRORS)
async def detokenize(body: DetokenizeRequest, request: Request) -> DetokenizeResponse:
    s = state_of(request)
    s.check_model(body.model)
    s.require_tokenizer("tokens")
    vocab = s.engine.engine.shape.vocab_size
    bad = [t for t in body.tokens if t >= vocab]
    if bad:
        raise bad_request(f"token ids out of range [0, {vocab}): {bad[:5]}", "tokens")
    return DetokenizeResponse(prompt=await s.decode(body.tokens))


def answer_head(router: APIRouter) -> None:
    """Give every GET route of ``router`` a HEAD twin: same handler, status and headers,
    and no body (uvicorn sends none for HEAD). Load balancers and health checkers probe with
    HEAD, which FastAPI, unlike Starlette, does not add to a GET route: it was a 405. The
    twins stay out of the OpenAPI document, where they would read as operations of their own."""
    for route in list(router.routes):
        if isinstance(route, APIRoute) and "GET" in (route.methods or ()):
            router.add_api_route(
                route.path,
                route.endpoint,
                methods=["HEAD"],
                response_model=route.response_model,
                response_class=route.response_class,
                include_in_schema=False,
                name=route.name,
            )


answer_head(router)
