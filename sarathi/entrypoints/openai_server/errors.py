"""Errors in OpenAI's JSON shape: ``{"error": {"message", "type", "param", "code"}}``.

Client mistakes are 4xx with a message naming the field; FastAPI's validation errors
become 400 (not 422) as OpenAI and vLLM answer. The catch-all 500 is for our own bugs only
and never shows a traceback to the client.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import BaseRoute, Match, Route

logger = logging.getLogger("sarathi.server")


class APIError(Exception):
    """An error the API reports to the client as JSON with this status."""

    def __init__(
        self,
        message: str,
        status: int = 400,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.type = type
        self.param = param
        self.code = code
        self.retry_after = retry_after  # seconds, sent as the Retry-After header


def bad_request(message: str, param: str | None = None) -> APIError:
    return APIError(message, 400, param=param)


def error_body(
    message: str, type: str, param: str | None = None, code: str | int | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def error_response(err: APIError) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if err.status == 401 else {}
    if err.retry_after is not None:
        headers["Retry-After"] = str(err.retry_after)
    return JSONResponse(
        error_body(err.message, err.type, err.param, err.code),
        status_code=err.status,
        headers=headers,
    )


def sse_error(err: APIError) -> str:
    """An error inside an SSE stream: one data event (the [DONE] follows)."""
    body = error_body(err.message, err.type, err.param, err.code)
    body["error"]["code"] = err.code or err.status
    return f"data: {json.dumps(body)}\n\n"


# Pydantic names a union's members in error locations by their types: "str", "int",
# "list[str]", "constrained-int", "function-after[...]", a model's class name.
_TYPE_TAGS = frozenset({"str", "int", "float", "bool", "bytes", "dict", "list", "none"})


def _is_type_tag(part: str) -> bool:
    return (
        part in _TYPE_TAGS
        or part.startswith("constrained-")
        or any(c in part for c in "[]()")
        or (part[:1].isupper() and part.isidentifier())
    )


def _param_of(loc: tuple[Any, ...]) -> str | None:
    parts = [str(p) for p in loc if p not in ("body", "query", "path")]
    return ".".join(p for p in parts if not _is_type_tag(p)) or None


def _union_split(loc: tuple[Any, ...]) -> tuple[str, str, str] | None:
    """(the union field's path, the member's type tag, the path inside the member) where a
    union member is named in the location; None where none is."""
    parts = [str(p) for p in loc if p not in ("body", "query", "path")]
    for i, part in enumerate(parts):
        if _is_type_tag(part):
            return ".".join(parts[:i]), part, _param_of(tuple(parts[i + 1 :])) or ""
    return None


# Pydantic's error types for a model given something other than an object (FastAPI's body
# check says model_attributes_type; a union of models, model_type).
_NOT_AN_OBJECT = frozenset({"model_type", "model_attributes_type"})
_JSON_KINDS: dict[type, str] = {
    type(None): "null",
    bool: "a boolean",
    int: "a number",
    float: "a number",
    str: "a string",
    list: "an array",
}


def validation_message(exc: RequestValidationError | ValidationError) -> tuple[str, str | None]:
    errors = exc.errors()
    if not errors:
        return "invalid request", None
    first = errors[0]
    if all(
        e.get("type") in _NOT_AN_OBJECT and _param_of(tuple(e.get("loc", ()))) is None
        for e in errors
    ):
        # Pydantic's words for it ("a valid dictionary or object to extract fields from")
        # do not say that the whole body is meant, nor what it was.
        kind = _JSON_KINDS.get(type(first.get("input")), "not an object")
        return f"the request body must be a JSON object, not {kind}", None
    if first.get("type") == "missing" and tuple(first.get("loc", ())) == ("body",):
        # FastAPI's error for an empty body is a bare "Field required" naming no field.
        return "the request body is empty; send a JSON object", None
    # Our own validators explain themselves (an image part, a tool call): where one fired
    # in some member of a union, its message says more than "should be a string".
    first = next((e for e in errors if e.get("type") == "value_error"), first)
    loc = tuple(first.get("loc", ()))
    param = _param_of(loc)
    msg = first.get("msg", "invalid value").removeprefix("Value error, ")
    union = _union_split(loc)
    if union is not None and first.get("type") != "value_error":
        # Say that no form matched, and why each not: its first error only. A list of 100k
        # items has an error per item in each form; listing them all takes minutes.
        root, whys, forms = union[0], [], set()
        for e in errors:
            split = _union_split(tuple(e.get("loc", ())))
            if split is not None and split[0] == root and split[1] not in forms:
                forms.add(split[1])
                whys.append(e.get("msg", "") + (f" at {split[2]}" if split[2] else ""))
        what = root or "the request body"
        return f"{what}: matches none of the forms it may take ({'; '.join(whys)})", root or None
    text = f"{param}: {msg}" if param else msg
    if len(errors) > 1:
        text += f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
    return text, param


def install_error_handlers(app: FastAPI, routes: Sequence[BaseRoute] = ()) -> None:
    """OpenAI-shaped error bodies for every error the app raises; a 405's ``Allow`` lists
    the methods of every one of ``routes`` on the request's path."""

    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = validation_message(exc)
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if param is None and not media.endswith("json"):
            # FastAPI parses the body as JSON only when the request says it is JSON; without
            # the header the complaint is about the whole body's type, which hides the cause.
            message = (
                "the request body must be a JSON object sent with 'Content-Type: "
                f"application/json' (this request's Content-Type: {media or 'none'})"
            )
        return error_response(APIError(message, 400, param=param))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        try:
            phrase = HTTPStatus(exc.status_code).phrase
        except ValueError:
            phrase = "error"
        message = exc.detail if isinstance(exc.detail, str) else phrase
        kind = "invalid_request_error" if exc.status_code < 500 else "server_error"
        code = None
        if exc.status_code in (404, 405):
            # No route matched: say so plainly, and what the server does serve (a client
            # asking for /v1/embeddings must not think the model or its key is at fault).
            served = sorted(request.app.openapi().get("paths", {}))
            what = "is not an endpoint of" if exc.status_code == 404 else "is not a method of"
            message = (
                f"{request.method} {request.url.path} {what} this server (it serves "
                f"{', '.join(served)})"
            )
            code = "unsupported_endpoint" if exc.status_code == 404 else "method_not_allowed"
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            # Starlette names the methods of the first route on the path only: a GET route
            # without its HEAD twin, one of GET and DELETE on /v1/responses/{id}.
            headers["Allow"] = ", ".join(_methods_at(routes, request)) or headers.get("Allow", "")
            message += f"; {request.url.path} takes {headers['Allow']}"
        response = error_response(APIError(message, exc.status_code, type=kind, code=code))
        # Starlette's headers (a 405's Allow, which HTTP requires of it) go out with it.
        response.headers.update(headers)
        return response

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("internal error while serving %s %s", request.method, request.url.path)
        return error_response(APIError("internal server error", 500, type="server_error"))


def _methods_at(routes: Sequence[BaseRoute], request: Request) -> list[str]:
    """Every method one of ``routes`` takes at the request's path."""
    methods: set[str] = set()
    for route in routes:
        if isinstance(route, Route) and route.methods:
            match, _ = route.matches(request.scope)
            if match != Match.NONE:
                methods |= route.methods
    return sorted(methods)
