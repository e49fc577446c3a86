"""The server's HTTP protocol: uvicorn's httptools parser where it is installed, h11 where it
is not, either with the deadline on a request's headers (its behaviour on a live server is
tests/reliability/test_reliability.py::test_half_sent_requests_time_out)."""

from __future__ import annotations

import builtins
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

from sarathi.entrypoints.openai_server.api_server import deadline_protocol


def test_httptools_where_installed() -> None:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    proto = deadline_protocol(7.0)
    assert issubclass(proto, HttpToolsProtocol) and proto.header_timeout == 7.0


def test_h11_without_httptools(monkeypatch) -> None:
    real_import = builtins.__import__

    def no_httptools(name: str, *args: Any, **kwargs: Any) -> Any:
        if name.endswith("httptools_impl"):
            raise ImportError("httptools is not installed")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_httptools)
    proto = deadline_protocol(3.0)
    assert issubclass(proto, H11Protocol) and proto.header_timeout == 3.0
