"""The stateful side of the Responses API over the server's ``ResponseStore``: which
responses are stored, the conversation a ``previous_response_id`` continues, and the
bodies of ``GET`` / ``DELETE /v1/responses/{id}`` and ``GET .../input_items``.

A stored entry holds the input items of the whole conversation its response answered
(each with an ``id``, in the forms the input side accepts) beside the response itself, so
a later turn rebuilds its history from that one entry: its input items, then its output
items, then the new request's input. Instructions are not items: each request's own
apply, as in OpenAI's API.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import TypeAdapter, ValidationError

from sarathi.entrypoints.openai_server.errors import APIError, bad_request, validation_message
from sarathi.entrypoints.openai_server.protocol_responses import (
    MAX_INPUT_ITEMS,
    ContentPart,
    FunctionCallInput,
    InputItem,
    InputMessage,
    ReasoningInput,
    ResponseObject,
    ResponsesRequest,
)
from sarathi.entrypoints.openai_server.response_store import ResponseStore, StoredResponse

logger = logging.getLogger("sarathi.server")

# The flags that size the store, named in the errors of a server that runs without one.
STORE_FLAGS = "--responses-store-max-entries and --responses-store-max-mb"

_ITEMS = TypeAdapter(list[InputItem])

# A background response's statuses before it ends.
UNFINISHED = ("queued", "in_progress")


def not_found(response_id: str, param: str | None = None, code: str | None = None) -> APIError:
    """OpenAI's 404 for an id it does not know (or no longer has)."""
    what = "Previous response" if param == "previous_response_id" else "Response"
    return APIError(f"{what} with id '{response_id}' not found.", 404, param=param, code=code)


def _disabled(param: str) -> APIError:
    return bad_request(
        f"{param} needs stored responses, and this server's response store is off: start it "
        f"with {STORE_FLAGS} above 0, or send the whole conversation as input items",
        param,
    )


# -- which responses are stored, and the conversation they continue -----------------------
@dataclass
class Keeping:
    """How a response is kept: ``store`` whether it is stored when it ends (OpenAI's
    default: yes), ``items`` the conversation's input items, with ids, stored beside it."""

    store: ResponseStore | None
    items: list[dict[str, Any]] = field(default_factory=list)

    @property
    def stored(self) -> bool:
        return self.store is not None

    async def finish(self, response: ResponseObject) -> tuple[ResponseObject, bytes]:
        """Store the finished (or failed) response when asked to: the response as it was
        stored, and its JSON. An entry larger than the whole store is not kept, and the
        response says so (``store: false``). JSON is written in a worker thread: a long
        conversation's items are megabytes."""
        if self.store is None:
            return response, response.model_dump_json().encode()
        store, items = self.store, self.items

        def keep() -> tuple[ResponseObject, bytes]:
            body = response.model_dump_json().encode()
            entry = StoredResponse(body, json.dumps(items, ensure_ascii=False).encode())
            if store.put(response.id, entry):
                return response, body
            logger.warning(
                "response %s (%d bytes of JSON) is larger than the response store "
                "(--responses-store-max-mb): not stored",
                response.id,
                entry.size,
            )
            unstored = response.model_copy(update={"store": False})
            return unstored, unstored.model_dump_json().encode()

        return await asyncio.to_thread(keep)

    def mark(self, response: ResponseObject) -> None:
        """Restate a stored response that has no output yet (a background response's
        status), its items unchanged: small, so written here, on the event loop."""
        if self.store is not None:
            self.store.update_response(response.id, response.model_dump_json().encode())


async def keeping(store: ResponseStore, req: ResponsesRequest) -> Keeping:
    """Decide whether the response to ``req`` is stored, and with ``previous_response_id``
    put the conversation it continues into ``req.input`` (400 without a store, 404 for an
    id unknown or evicted)."""
    if not store.enabled:
        if req.store is True:
            raise _disabled("store")
        if req.previous_response_id is not None:
            raise _disabled("previous_response_id")
        return Keeping(None)
    keep = req.store is not False  # OpenAI's default: stored
    if not keep and req.previous_response_id is None:
        return Keeping(None)
    items = item_dicts(req.input)
    if req.previous_response_id is not None:
        entry = store.get(req.previous_response_id)
        if entry is None:
            raise not_found(
                req.previous_response_id, "previous_response_id", "previous_response_not_found"
            )
        items = await asyncio.to_thread(_continued, entry, items)
        if len(items) > MAX_INPUT_ITEMS:
            raise bad_request(
                f"the conversation would be {len(items)} items with those of "
                f"previous_response_id, over the {MAX_INPUT_ITEMS} a response takes",
                "previous_response_id",
            )
        try:
            req.input = await asyncio.to_thread(_ITEMS.validate_python, items)
        except ValidationError as e:  # stored items were valid input: a bug, not the client's
            message, _ = validation_message(e)
            raise APIError(f"stored items of the previous response: {message}", 500) from e
    return Keeping(store if keep else None, items)


def _continued(entry: StoredResponse, new: list[dict[str, Any]]) -> list[dict[str, Any]]:
    response = json.loads(entry.response_json)
    if response["status"] in UNFINISHED:
        raise bad_request(
            f"the previous response '{response['id']}' has not finished (status "
            f"{response['status']}): wait for it, or cancel it",
            "previous_response_id",
        )
    return [*json.loads(entry.input_items_json), *(response.get("output") or []), *new]


def item_dicts(items: str | list[Any]) -> list[dict[str, Any]]:
    """The request's input as input items, each with an id (the one the client sent with
    it, else a new one), in the forms the input side accepts."""
    if isinstance(items, str):
        items = [InputMessage(role="user", content=items)]
    return [_item_dict(item) for item in items]


def _item_dict(item: Any) -> dict[str, Any]:
    sent = (item.model_extra or {}).get("id")
    out: dict[str, Any]
    if isinstance(item, InputMessage):
        kind = "output_text" if item.role == "assistant" else "input_text"
        parts = _parts(item.content, kind)
        out = {"type": "message", "role": item.role, "content": parts}
        prefix = "msg"
    elif isinstance(item, FunctionCallInput):
        out = item.model_dump(include={"type", "call_id", "name", "arguments"})
        prefix = "fc"
    elif isinstance(item, ReasoningInput):
        # Kept as sent (its id is a field of its own), so a later turn gives its text back
        # to the template as that turn's reasoning.
        out = item.model_dump(include={"type", "summary", "content"}, exclude_none=True)
        sent = item.id
        prefix = "rs"
    else:
        output = item.output if isinstance(item.output, str) else _parts(item.output, "")
        out = {"type": "function_call_output", "call_id": item.call_id, "output": output}
        prefix = "fco"
    item_id = sent if isinstance(sent, str) and sent else f"{prefix}_{uuid.uuid4().hex}"
    return {"id": item_id, **out, "status": "completed"}


def _parts(content: str | list[ContentPart], kind: str) -> list[dict[str, Any]]:
    """Content as text parts: a string as one part of ``kind``, parts as sent (without
    their annotations, logprobs or cache hints, which had no effect)."""
    if isinstance(content, str):
        return [_part(kind, content)]
    return [
        {"type": "refusal", "refusal": p.refusal} if p.type == "refusal" else _part(p.type, p.text)
        for p in content
    ]


def _part(kind: str, text: str | None) -> dict[str, Any]:
    # An output_text part as OpenAI's output messages carry it (the SDK's type needs them).
    return {"type": kind, "text": text, **({"annotations": []} if kind == "output_text" else {})}


# -- the routes' bodies -------------------------------------------------------------------
def stored(store: ResponseStore, response_id: str) -> StoredResponse:
    entry = store.get(response_id)
    if entry is None:
        raise not_found(response_id)
    return entry


def cancellable(entry: StoredResponse) -> dict[str, Any]:
    """The stored response, if it may be cancelled: a background one (400 otherwise)."""
    response = json.loads(entry.response_json)
    if not response.get("background"):
        raise bad_request("only background responses can be cancelled", "response_id")
    return response


def cancelled(entry: StoredResponse) -> StoredResponse:
    """The entry of a response cancel ended, or a 400: OpenAI's cancel of a response that
    finished first is an error, and cancelling a cancelled one again returns it."""
    status = json.loads(entry.response_json)["status"]
    if status != "cancelled":
        raise bad_request(
            f"cannot cancel a response whose status is {status}; only a queued or in "
            "progress background response can be cancelled",
            "response_id",
        )
    return entry


def deleted(store: ResponseStore, response_id: str) -> dict[str, Any]:
    if not store.delete(response_id):
        raise not_found(response_id)
    return {"id": response_id, "object": "response", "deleted": True}


def input_items_page(
    entry: StoredResponse,
    response_id: str,
    limit: int,
    order: Literal["asc", "desc"],
    after: str | None,
) -> dict[str, Any]:
    """OpenAI's list object of a stored response's input items: ``limit`` of them in
    ``order`` (desc: the newest first), starting after the item ``after``."""
    items = json.loads(entry.input_items_json)
    if order == "desc":
        items.reverse()
    start = 0
    if after is not None:
        ids = [item.get("id") for item in items]
        if after not in ids:
            raise bad_request(
                f"response '{response_id}' has no input item with id '{after}'", "after"
            )
        start = ids.index(after) + 1
    page = items[start : start + limit]
    return {
        "object": "list",
        "data": page,
        "first_id": page[0]["id"] if page else None,
        "last_id": page[-1]["id"] if page else None,
        "has_more": start + limit < len(items),
    }
