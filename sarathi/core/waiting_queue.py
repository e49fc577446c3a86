"""The order of the scheduler's queues under each scheduling policy (vLLM's
``--scheduling-policy``).

``fcfs``: waiting sequences in a deque, arrival order, a preempted one back at the front;
running ones by arrival. ``priority``: both by (request priority, arrival), lower first,
as vLLM orders them; a preempted sequence takes its place by the same key. The running
list's last sequence is then the one to preempt first under either policy: the latest
arrival, or the latest of the worst priority.
"""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Callable, Iterator
from typing import Protocol

from sarathi.sequence import Sequence


def arrival_order(seq: Sequence) -> tuple[float, int]:
    return (seq.request.arrival_time, seq.seq_id)


def priority_order(seq: Sequence) -> tuple[int, float, int]:
    # The seq id breaks ties of equal arrival times (a request's n samples), so no two
    # sequences share a key and removal by key finds the very one.
    return (seq.request.priority, seq.request.arrival_time, seq.seq_id)


class WaitingQueue(Protocol):
    """What the scheduler does with its waiting sequences (a ``deque`` is one)."""

    def append(self, seq: Sequence) -> None: ...

    def appendleft(self, seq: Sequence) -> None: ...

    def remove(self, seq: Sequence) -> None: ...

    def __getitem__(self, index: int) -> Sequence: ...

    def __delitem__(self, index: int) -> None: ...

    def __len__(self) -> int: ...

    def __iter__(self) -> Iterator[Sequence]: ...


class PriorityWaiting:
    """Waiting sequences sorted by ``priority_order``. A sorted list rather than a heap:
    admission walks it in order past the samples that wait for a sibling and removes the
    one admitted where it stands, and an abort removes one by bisection; each insertion
    and removal is a binary search and a move of pointers, never a sort."""

    def __init__(self) -> None:
        self._items: list[Sequence] = []

    def append(self, seq: Sequence) -> None:
        bisect.insort(self._items, seq, key=priority_order)

    # A preempted sequence goes back by its priority and arrival too, not to the front: a
    # better-priority request that waits meanwhile stays ahead of it (as in vLLM).
    appendleft = append

    def remove(self, seq: Sequence) -> None:
        i = bisect.bisect_left(self._items, priority_order(seq), key=priority_order)
        if i == len(self._items) or self._items[i] is not seq:
            raise ValueError("the sequence is not waiting")
        del self._items[i]

    def __getitem__(self, index: int) -> Sequence:
        return self._items[index]

    def __delitem__(self, index: int) -> None:
        del self._items[index]

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[Sequence]:
        return iter(self._items)


def queue_order(policy: str) -> tuple[WaitingQueue, Callable[[Sequence], tuple]]:
    """The waiting queue and the running list's sort key of ``policy``."""
    if policy == "priority":
        return PriorityWaiting(), priority_order
    if policy == "fcfs":
        return deque(), arrival_order
    raise ValueError(f"unknown scheduling policy {policy!r} (fcfs or priority)")
