"""Flags of the HTTP server (the engine's flags are added from the config dataclasses)."""

from __future__ import annotations

import argparse
from typing import Any

from sarathi.envs import env


def add_server_args(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("server options")
    g.add_argument("--host", default="127.0.0.1", help="Address to listen on (default: 127.0.0.1).")
    g.add_argument(
        "--port",
        type=int,
        default=8000,
        help="Port to listen on; 0 picks a free one (default: 8000).",
    )
    g.add_argument(
        "--api-key",
        default=None,
        help="Require 'Authorization: Bearer KEY' on the API routes (default: none; "
        "also read from $SARATHI_API_KEY).",
    )
    g.add_argument(
        "--served-model-name",
        default=None,
        help="Model name clients use (default: the --model value).",
    )
    g.add_argument(
        "--chat-template", default=None, help="Jinja chat template file (default: the tokenizer's)."
    )
    g.add_argument(
        "--max-request-bytes",
        type=int,
        default=4 * 1024 * 1024,
        help="Largest accepted request body in bytes (default: 4 MiB).",
    )
    g.add_argument(
        "--log-level",
        default="info",
        choices=("critical", "error", "warning", "info", "debug"),
        help="Server log level (default: info).",
    )
    g.add_argument(
        "--graceful-shutdown-seconds",
        type=float,
        default=30.0,
        help="On SIGINT/SIGTERM, wait at most this long for open connections (default: 30).",
    )


def server_args(**overrides: Any) -> argparse.Namespace:
    """The server flags' defaults as a namespace (for building an app in code or tests)."""
    parser = argparse.ArgumentParser()
    add_server_args(parser)
    args = parser.parse_args([])
    for key, value in overrides.items():
        setattr(args, key, value)
    return args


def api_key_of(args: argparse.Namespace) -> str | None:
    return getattr(args, "api_key", None) or env("SARATHI_API_KEY") or None
