"""Failures of the workers behind an executor, as the engine sees them."""

from __future__ import annotations


class WorkerError(RuntimeError):
    """A tensor-parallel worker failed; the executor is unusable afterwards (its requests
    fail with this error, and ``executor.is_alive()`` is False)."""


class WorkerDiedError(WorkerError):
    """A worker process or actor exited, or stopped answering within the step timeout."""


def rank_failure(summary: str, remote_traceback: str) -> WorkerError:
    """The driver's error for a rank that raised: ``summary`` (one line: what failed, the
    exception's type and message) is the message, the rank's traceback a note. Kept apart
    because the message reaches every client of the failed engine (503 engine_dead), and
    the traceback names the server's files: it shows only where the error's traceback is
    printed or logged."""
    error = WorkerError(summary)
    # What add_note (Python 3.11+) appends to; set directly so that 3.10 keeps it too.
    error.__notes__ = [f"the rank's traceback:\n{remote_traceback.rstrip()}"]  # type: ignore[attr-defined]
    return error
