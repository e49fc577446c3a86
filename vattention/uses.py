"""How many users each frame of a cache has: the live slots that owe it, plus a hold (the
prefix cache keeping it for later). The vattention cache and the paged baseline count the
same way; a frame with two or more users is shared."""

from __future__ import annotations


class FrameUses:
    def __init__(self, num_frames: int) -> None:
        self._uses = [0] * num_frames
        # Kept as it changes: stats() runs after every engine step.
        self.shared = 0  # frames with two or more users

    def in_use(self, frame: int) -> bool:
        return self._uses[frame] > 0

    def add(self, frame: int) -> None:
        self._uses[frame] += 1
        if self._uses[frame] == 2:
            self.shared += 1

    def drop(self, frame: int) -> bool:
        """One user fewer; True when the frame has none left (it is free)."""
        self._uses[frame] -= 1
        if self._uses[frame] == 1:
            self.shared -= 1
        return self._uses[frame] == 0
