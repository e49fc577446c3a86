"""API-key check (``--api-key``): a pure ASGI middleware in front of the API routes.

Each key is compared in constant time so response timing reveals nothing about it.
Health (/health, /ping), metrics, version and the OpenAPI document stay open: probes and
scrapers carry no key.
"""

from __future__ import annotations

import hmac

from starlette.types import ASGIApp, Receive, Scope, Send

from sarathi.entrypoints.openai_server.errors import APIError, error_response

# Where the middleware leaves which key a request carried (its 1-based place in --api-key):
# each key is a client of its own to the engine's queue (serving_common.origin_of).
CLIENT_KEY_SCOPE = "sarathi.api_key"

# Every other path needs the key, so a route added later is guarded unless listed here.
OPEN_PATHS = frozenset(
    {
        "/health",
        "/ping",
        "/metrics",
        "/load",
        "/version",
        "/openapi.json",
        "/docs",
        "/docs/oauth2-redirect",
        "/redoc",
    }
)


def key_matches(header: bytes | None, key: str) -> bool:
    """Whether the Authorization header's raw bytes carry ``Bearer KEY``. Compared as bytes:
    a client sends a non-ASCII key as UTF-8, which decoding the header as latin-1 and
    encoding it again as UTF-8 turned into other bytes, so that key never matched."""
    if not header:
        return False
    scheme, _, token = header.partition(b" ")
    if scheme.lower() != b"bearer":
        return False
    return hmac.compare_digest(token.strip(), key.encode("utf-8"))


def route_path(scope: Scope) -> str:
    """The path a route matches: under --root-path uvicorn puts the prefix (which the proxy
    in front stripped) back in front of every request's path, and the router matches what
    follows it; so must the open paths."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root + "/"):
        return path[len(root) :]
    return path


class APIKeyMiddleware:
    def __init__(self, app: ASGIApp, api_keys: tuple[str, ...]) -> None:
        self.app = app
        self.api_keys = api_keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or route_path(scope) in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        header = None
        for name, value in scope.get("headers", ()):
            if name == b"authorization":
                header = value
                break
        # Every key is compared, so the time taken does not tell which one matched.
        matches = [key_matches(header, key) for key in self.api_keys]
        if not any(matches):
            err = APIError(
                "missing or invalid API key (send 'Authorization: Bearer KEY')",
                401,
                code="invalid_api_key",
            )
            response = error_response(err)
            # Its body is never read: the connection is not reused.
            response.headers["Connection"] = "close"
            await response(scope, receive, send)
            return
        scope[CLIENT_KEY_SCOPE] = matches.index(True) + 1
        await self.app(scope, receive, send)
