"""The stream's applier on its own (no database): batches applied one at a time in the order
handed over, at most one closed batch waiting, an apply's error raised in the stream's thread,
and closing drops the waiting batch after the one being applied ends."""

from __future__ import annotations

import select
import threading
import time

import pytest

from acme_mv.cdc.capture import _Applier
from acme_mv.cdc.write import Batch, Transaction


def _batch(end_lsn: int) -> Batch:
    batch = Batch()
    batch.add(Transaction(end_lsn=end_lsn))
    return batch


class _Gate:
    """An apply that records its batch and waits until released."""

    def __init__(self) -> None:
        self.applied: list[int] = []
        self.started = threading.Semaphore(0)
        self.release = threading.Semaphore(0)

    def __call__(self, batch: Batch) -> None:
        self.started.release()
        assert self.release.acquire(timeout=30)
        self.applied.append(batch.end_lsn)


def _wake(applier: _Applier) -> None:
    """Wait until the applier signals (a batch taken, an apply ended)."""
    ready, _, _ = select.select([applier], [], [], 30)
    assert ready
    applier.clear()


def test_one_closed_batch_waits_and_batches_apply_in_order() -> None:
    gate = _Gate()
    applier = _Applier(gate)
    try:
        assert applier.idle
        assert applier.offer(_batch(1))
        assert gate.started.acquire(timeout=30)  # 1 is being applied
        assert applier.offer(_batch(2))  # 2 waits
        assert not applier.offer(_batch(3))  # no second waiting batch
        assert not applier.idle
        gate.release.release()
        _wake(applier)
        assert gate.started.acquire(timeout=30)  # 2 is being applied
        assert applier.offer(_batch(3))
        gate.release.release()
        gate.release.release()
        while not applier.idle:
            _wake(applier)
        assert gate.applied == [1, 2, 3]
    finally:
        applier.close()


def test_an_apply_error_is_raised_in_the_callers_thread() -> None:
    def fail(batch: Batch) -> None:
        raise ValueError(f"batch {batch.end_lsn}")

    applier = _Applier(fail)
    try:
        assert applier.offer(_batch(7))
        while applier.error is None:  # woken when 7 is taken, and when its apply ends
            _wake(applier)
        with pytest.raises(ValueError, match="batch 7"):
            applier.check()
        # free, but not for the stream: it must not use the warehouse nor confirm past 7
        with pytest.raises(ValueError, match="batch 7"):
            assert applier.idle
        with pytest.raises(ValueError, match="batch 7"):
            applier.offer(_batch(8))
    finally:
        applier.close()


def test_closing_ends_the_apply_in_progress_and_drops_the_waiting_batch() -> None:
    gate = _Gate()
    applier = _Applier(gate)
    assert applier.offer(_batch(1))
    assert gate.started.acquire(timeout=30)
    assert applier.offer(_batch(2))
    closing = threading.Thread(target=applier.close)
    closing.start()
    while not applier._closing:  # the apply in progress ends after close() began
        time.sleep(0.001)
    gate.release.release()
    closing.join(30)
    assert not closing.is_alive()
    assert gate.applied == [1]
    applier.close()  # again: nothing happens
