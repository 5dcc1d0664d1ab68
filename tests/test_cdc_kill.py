"""``acme-mv cdc run`` in a child process, SIGKILLed at random moments while the source keeps
writing: after one more catch-up staging equals the source, nothing lost, nothing doubled."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.support.cdc_helpers import Cdc
from tests.support.cli_runner import child_env
from tests.support.database import DatabaseFactory
from tests.support.sync_helpers import assert_no_orphans_or_duplicates, execute, fill, scalar

pytestmark = pytest.mark.slow


def _start(world: Cdc, log: Path) -> subprocess.Popen[str]:
    """The streamer; its log goes to a file (a pipe nobody reads would block it once full)."""
    env = child_env(ACME_MV_DATABASE_URL=world.wh, ACME_MV_SOURCE_URL=world.src)
    with log.open("a") as out:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "acme_mv",
                "cdc",
                "run",
                "--slot",
                world.slot,
                "--heartbeat",
                "0.2",
                "--batch-ms",
                "20",
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=out,
            text=True,
        )


class Writer(threading.Thread):
    """Small transactions of every kind until stopped."""

    def __init__(self, url: str, seed: int) -> None:
        super().__init__(daemon=True)
        self.url, self.rng, self.stop = url, random.Random(seed), threading.Event()
        self.transactions = 0

    def run(self) -> None:
        while not self.stop.is_set():
            kind = self.rng.randrange(4)
            n = self.rng.randrange(1000)
            if kind == 0:
                fill(self.url, orders=3, order_items=8)
            elif kind == 1:
                execute(
                    self.url,
                    "UPDATE operations.orders SET status = 'S' || %s WHERE order_id %% 13 = %s",
                    (n, n % 13),
                )
            elif kind == 2:
                execute(
                    self.url,
                    "UPDATE operations.order_items SET quanity = %s WHERE order_item_id %% 29 = %s",
                    (n, n % 29),
                )
            else:
                execute(
                    self.url,
                    "DELETE FROM operations.order_items WHERE order_item_id %% 97 = %s",
                    (n % 97,),
                )
            self.transactions += 1
            time.sleep(0.005)


def _walsender(world: Cdc) -> int | None:
    pid = scalar(
        world.src, "SELECT active_pid FROM pg_replication_slots WHERE slot_name = %s", (world.slot,)
    )
    return int(pid) if pid is not None else None


def test_sigkill_of_the_streamer_at_random_moments_converges(
    make_db: DatabaseFactory, slot_name: str, tmp_path: Path
) -> None:
    world = Cdc(src=make_db("source"), wh=make_db("warehouse"), slot=slot_name)
    fill(world.src, customers=20, products=20, orders=300, order_items=900)
    world.setup()
    rng = random.Random(20261126)
    writer = Writer(world.src, seed=7)
    writer.start()
    batches_seen = []
    try:
        for round_ in range(8):
            before = scalar(world.wh, "SELECT count(*) FROM staging.sync_batches")
            log = tmp_path / "streamer.log"
            previous = _walsender(world)  # the killed streamer's walsender may linger a moment
            proc = _start(world, log)
            deadline = (
                time.monotonic() + 120
            )  # a safety net: wait until it streams, then kill at random
            while _walsender(world) in (None, previous):
                assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.02)
            if round_ % 2:
                # every other streamer dies once it has applied a batch (however loaded the
                # box), at a random moment after
                while scalar(world.wh, "SELECT count(*) FROM staging.sync_batches") == before:
                    assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
                    time.sleep(0.02)
            time.sleep(rng.uniform(0.0, 1.5))
            assert proc.poll() is None, log.read_text()
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
            batches_seen.append(
                scalar(world.wh, "SELECT count(*) FROM staging.sync_batches") - before
            )
            assert_no_orphans_or_duplicates(world.wh)
    finally:
        writer.stop.set()
        writer.join(30)
    assert writer.transactions > 100
    assert (
        sum(1 for n in batches_seen if n > 0) >= 4
    )  # the streamers really applied batches before dying
    world.catch_up()
    assert_no_orphans_or_duplicates(world.wh)
    world.assert_staging_equals_source()
    world.assert_reports_true()
