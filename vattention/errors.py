"""Exceptions raised by the KV cache."""


class VAttentionError(RuntimeError):
    """A failure of the cache itself (driver error, misuse of the API)."""


class OutOfPagesError(VAttentionError):
    """The physical page budget cannot cover a request to grow a slot.

    The engine's scheduler accounts for pages before it schedules work, so seeing this
    exception means a scheduler bug, never a normal out-of-memory condition.
    """


class DriverError(VAttentionError):
    """A CUDA driver call failed; ``name`` is the driver's error name (``cuGetErrorName``)."""

    def __init__(self, call: str, name: str, code: int) -> None:
        super().__init__(f"{call} failed: {name} ({code})")
        self.call = call
        self.name = name
        self.code = code
