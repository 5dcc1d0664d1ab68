"""``acme-mv cdc`` setup / status / drop from the command line, and the slot's lifecycle."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from tests.support.cdc_helpers import Cdc
from tests.support.cli_runner import run
from tests.support.database import DatabaseFactory
from tests.support.sync_helpers import execute, fill, scalar


@pytest.fixture
def world(make_db: DatabaseFactory, slot_name: str, cli_env: Callable[..., None]) -> Cdc:
    w = Cdc(src=make_db("source"), wh=make_db("warehouse"), slot=slot_name)
    cli_env(database_url=w.wh, source_url=w.src)
    fill(w.src, orders=50, order_items=100, customers=5, products=5)
    return w


def _cdc(world: Cdc, command: str, *args: str) -> tuple[int, str, str]:
    result = run("cdc", command, "--slot", world.slot, *args)
    return result.exit_code, result.stdout, result.stderr


def _slot_exists(world: Cdc) -> bool:
    return bool(
        scalar(
            world.src,
            "SELECT count(*) FROM pg_replication_slots WHERE slot_name = %s",
            (world.slot,),
        )
    )


def _status(world: Cdc) -> dict[str, object]:
    code, out, err = _cdc(world, "status", "--json")
    assert code == 0, err
    parsed: dict[str, object] = json.loads(out)
    return parsed


def test_setup_twice_is_a_no_op_then_drop_removes_slot_publication_and_position(world: Cdc) -> None:
    code, _, err = _cdc(world, "setup", "--publication", world.publication)
    assert code == 0, err
    assert _slot_exists(world)
    batches = scalar(world.wh, "SELECT count(*) FROM staging.sync_batches")
    code, _, err = _cdc(world, "setup", "--publication", world.publication)
    assert code == 0
    assert "already set up" in err and "nothing to do" in err
    assert (
        scalar(world.wh, "SELECT count(*) FROM staging.sync_batches") == batches
    )  # no second copy
    code, out, _ = _cdc(world, "status")
    assert code == 0 and "wal_status" in out and "reserved" in out and "WAL retained" in out
    status = _status(world)
    assert status["exists"] is True and status["wal_status"] == "reserved"
    assert status["saved_lsn"] == status["confirmed_flush_lsn"]
    assert isinstance(status["lag_bytes"], int) and isinstance(status["retained_bytes"], int)
    code, _, err = _cdc(world, "drop")
    assert code == 0, err
    assert not _slot_exists(world)
    assert (
        scalar(
            world.src,
            "SELECT count(*) FROM pg_publication WHERE pubname = %s",
            (world.publication,),
        )
        == 0
    )
    assert scalar(world.wh, "SELECT count(*) FROM staging.cdc_state") == 0
    assert _status(world)["exists"] is False
    # drop again: nothing left, still fine; run without setup: one clear line
    assert _cdc(world, "drop")[0] == 0
    code, out, err = _cdc(world, "run")
    assert code == 1 and out == ""
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "run acme-mv cdc setup" in lines[0], err
    # and set up again after a drop: a re-snapshot over the staged rows (no truncate)
    execute(world.src, "DELETE FROM operations.orders WHERE order_id <= 3")
    assert _cdc(world, "setup", "--publication", world.publication)[0] == 0
    world.assert_staging_equals_source()
    assert scalar(world.wh, "SELECT count(*) FROM staging.orders_latest WHERE _deleted") == 3


def test_an_orphan_slot_from_a_killed_setup_is_recreated(world: Cdc) -> None:
    execute(world.src, "SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (world.slot,))
    code, _, err = _cdc(world, "setup", "--publication", world.publication)
    assert code == 0, err
    assert "re-creating it" in err
    world.assert_staging_equals_source()


def test_a_position_without_its_slot_says_how_to_start_over(world: Cdc) -> None:
    assert _cdc(world, "setup", "--publication", world.publication)[0] == 0
    execute(world.src, "SELECT pg_drop_replication_slot(%s)", (world.slot,))
    for command in ("setup", "run"):
        code, _, err = _cdc(world, command)
        assert code == 1
        assert "acme-mv cdc drop" in err and "acme-mv cdc setup" in err, err


def test_every_cdc_command_has_help_with_an_example() -> None:
    for command in ("setup", "run", "status", "drop"):
        result = run("cdc", command, "--help")
        assert result.exit_code == 0
        assert "Example" in result.stdout, command


def test_status_in_change_capture_mode_shows_the_slot_lag_not_the_cursor_warning(
    world: Cdc,
) -> None:
    """With change capture set up, ``acme-mv status`` reads no source table (no warning that
    incremental reads scan it, even without the updated_at index) and shows the slot's lag."""
    for index in scalar(
        world.src,
        "SELECT coalesce(array_agg(indexrelid::regclass::text), '{}') FROM pg_index "
        "WHERE indrelid IN ('operations.orders'::regclass, 'operations.order_items'::regclass) "
        "AND NOT indisprimary",
    ):
        execute(world.src, f"DROP INDEX {index}")
    world.setup()
    res = run("status")
    assert res.exit_code == 0, res.stderr
    assert "scans the table" not in res.stderr
    assert f"change capture: slot {world.slot}, lag " in res.stdout
    assert "wal_status reserved" in res.stdout
