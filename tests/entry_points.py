"""A console script's entry point run in this process, as its subprocess would be seen: a
subprocess spends seconds importing torch before it reads its arguments."""

from __future__ import annotations

import contextlib
import io
import subprocess
from collections.abc import Callable, Sequence


def call(
    main: Callable[[list[str]], int], prog: str, args: Sequence[str]
) -> subprocess.CompletedProcess:
    """``prog ARGS`` through ``main``: its exit code and what it printed."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(args))
        except SystemExit as exc:  # argparse: --help, or a usage error
            code = exc.code if isinstance(exc.code, int) else 1
    return subprocess.CompletedProcess([prog, *args], code, out.getvalue(), err.getvalue())
