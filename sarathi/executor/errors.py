"""Failures of the workers behind an executor, as the engine sees them."""

from __future__ import annotations


class WorkerError(RuntimeError):
    """A tensor-parallel worker failed; the executor is unusable afterwards (its requests
    fail with this error, and ``executor.is_alive()`` is False)."""


class WorkerDiedError(WorkerError):
    """A worker process or actor exited, or stopped answering within the step timeout."""
