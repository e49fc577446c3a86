"""The shared-memory broadcast ring: every reader gets every message once, in order, whatever
its size; a writer facing a dead or stuck reader gives up instead of hanging."""

import multiprocessing as mp
import threading
import time

import pytest

from sarathi.executor.shm_ring import RingReader, RingWriter

CTX = mp.get_context("spawn")


def _never_dead():
    return None


def _read_all(reader, count, out):
    for _ in range(count):
        out.append(reader.read(lambda: True, check_s=0.5))


def _reader_process(handle, index, count, results):
    reader = RingReader(handle, index)
    try:
        for _ in range(count):
            m = reader.read(lambda: True, check_s=0.5)
            results.put((index, m.kind, m.number, m.payload))
    finally:
        reader.close()


def test_messages_of_every_size_reach_every_reader_in_order():
    # Slots of 64 payload bytes and 3 slots: messages shorter, equal to and longer than one
    # slot, and longer than the whole ring (the writer waits for the readers to catch up).
    writer = RingWriter(CTX, num_readers=2, num_slots=3, slot_bytes=128)
    readers = [RingReader(writer.handle, i) for i in range(2)]
    payloads = [b"", b"x", bytes(range(64)), bytes(range(65)), bytes(1000), b"tail"]
    got = [[], []]
    threads = [
        threading.Thread(target=_read_all, args=(r, len(payloads), out))
        for r, out in zip(readers, got)
    ]
    try:
        for t in threads:
            t.start()
        for number, payload in enumerate(payloads):
            writer.write(7, number, payload, time.monotonic() + 10, _never_dead, 0.5)
        for t in threads:
            t.join(10)
        for out in got:
            assert [(m.kind, m.number, m.payload) for m in out] == [
                (7, i, p) for i, p in enumerate(payloads)
            ]
    finally:
        for r in readers:
            r.close()
        writer.close()


def test_reader_processes_read_each_message_once():
    writer = RingWriter(CTX, num_readers=2, num_slots=2, slot_bytes=4096)
    results = CTX.Queue()
    procs = [
        CTX.Process(target=_reader_process, args=(writer.handle, i, 20, results)) for i in range(2)
    ]
    try:
        for p in procs:
            p.start()
        for n in range(20):
            writer.write(
                1, n, n.to_bytes(2, "little") * (n * 50), time.monotonic() + 30, _never_dead, 0.5
            )
        got = sorted(results.get(timeout=30) for _ in range(40))
        assert got == sorted(
            (i, 1, n, n.to_bytes(2, "little") * (n * 50)) for i in range(2) for n in range(20)
        )
        for p in procs:
            p.join(10)
            assert p.exitcode == 0
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
        writer.close()


def test_a_full_ring_times_out_and_checks_liveness_while_waiting():
    writer = RingWriter(CTX, num_readers=1, num_slots=2, slot_bytes=128)
    checks = []
    try:
        for n in range(2):  # fills the ring: nobody reads
            writer.write(0, n, b"m", time.monotonic() + 1, _never_dead)
        start = time.monotonic()
        with pytest.raises(TimeoutError):
            writer.write(0, 2, b"m", start + 0.6, lambda: checks.append(1), 0.2)
        assert 0.5 < time.monotonic() - start < 5
        assert len(checks) >= 2

        def dead():
            raise RuntimeError("reader 0 died")

        with pytest.raises(RuntimeError, match="reader 0 died"):
            writer.write(0, 2, b"m", time.monotonic() + 10, dead, 0.1)
        # A write that gave up took no slot: once the reader catches up, writing goes on.
        reader = RingReader(writer.handle, 0)
        assert [reader.read(lambda: True).number for _ in range(2)] == [0, 1]
        writer.write(0, 2, b"m", time.monotonic() + 1, _never_dead)
        assert reader.read(lambda: True).number == 2
        reader.close()
    finally:
        writer.close()


def test_a_reader_stops_waiting_once_the_writer_is_gone():
    writer = RingWriter(CTX, num_readers=1, num_slots=2, slot_bytes=128)
    reader = RingReader(writer.handle, 0)
    asked = []

    def alive():
        asked.append(1)
        return len(asked) < 3

    try:
        assert reader.read(alive, check_s=0.05) is None
        assert len(asked) == 3
    finally:
        reader.close()
        writer.close()


def test_a_message_cut_short_is_refused():
    """A writer interrupted between the pieces of a long message leaves it incomplete; the
    reader must fail rather than splice the next message onto it."""
    writer = RingWriter(CTX, num_readers=1, num_slots=4, slot_bytes=128)
    reader = RingReader(writer.handle, 0)
    calls = []

    def interrupted_on_second_slot():
        calls.append(1)
        raise KeyboardInterrupt

    try:
        writer.write(0, 0, b"a", time.monotonic() + 1, _never_dead)
        writer.write(0, 1, b"b", time.monotonic() + 1, _never_dead)
        writer.write(0, 2, b"c", time.monotonic() + 1, _never_dead)
        # The long message's first piece takes the last free slot; its second must wait.
        with pytest.raises(KeyboardInterrupt):
            writer.write(0, 3, bytes(100), time.monotonic() + 5, interrupted_on_second_slot, 0.05)
        assert calls
        assert [reader.read(lambda: True).payload for _ in range(3)] == [b"a", b"b", b"c"]
        writer.write(0, 4, b"next", time.monotonic() + 1, _never_dead)
        with pytest.raises(RuntimeError, match="out of step"):
            reader.read(lambda: True)
    finally:
        reader.close()
        writer.close()
