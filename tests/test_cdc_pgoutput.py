"""The pgoutput v1 decoder and the Relation-driven row layout, as pure functions (no server).

The same decoder runs against a real slot in tests/test_cdc*.py; these cases pin the byte
format and the edge cases a live stream rarely shows (key changes, unchanged TOAST values,
truncated payloads)."""

from __future__ import annotations

import datetime as dt
import struct
from collections.abc import Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st

from acme_mv.cdc import pgoutput
from acme_mv.cdc.decode import Decoder
from acme_mv.cdc.write import Batch, Change, Transaction, copy_block
from acme_mv.errors import SchemaDrift
from acme_mv.staging.tables import TABLES


def _s(text: str) -> bytes:
    return text.encode() + b"\x00"


def _tuple(*values: bytes | None | str) -> bytes:
    out = struct.pack("!h", len(values))
    for v in values:
        if v is None:
            out += b"n"
        elif v == "u":
            out += b"u"
        else:
            assert isinstance(v, bytes)
            out += b"t" + struct.pack("!i", len(v)) + v
    return out


def _relation(oid: int, table: str, columns: list[tuple[str, int, int]]) -> bytes:
    body = (
        struct.pack("!I", oid)
        + _s("operations")
        + _s(table)
        + b"f"
        + struct.pack("!h", len(columns))
    )
    for i, (name, type_oid, typmod) in enumerate(columns):
        body += (
            struct.pack("!b", 1 if i == 0 else 0) + _s(name) + struct.pack("!Ii", type_oid, typmod)
        )
    return b"R" + body


#: the contract's types by (oid, typmod), as format_type prints them
TYPES = {
    (20, -1): "bigint",
    (1082, -1): "date",
    (1043, -1): "character varying",
    (1114, 3): "timestamp(3) without time zone",
    (23, -1): "integer",
    (25, -1): "text",
}
ORDERS = [
    ("order_id", 20, -1),
    ("order_date", 1082, -1),
    ("delivery_date", 1082, -1),
    ("customer_id", 20, -1),
    ("status", 1043, -1),
    ("updated_at", 1114, 3),
    ("updated_by", 20, -1),
    ("created_at", 1114, 3),
    ("created_by", 20, -1),
]


def _decoder(resync: dict[str, int] | None = None) -> Decoder:
    return Decoder(lambda oid, typmod: TYPES[(oid, typmod)], resync=resync)


def _row(values: tuple[bytes | None | str, ...]) -> tuple[bytes | None, ...]:
    """``values`` without unchanged markers (``"u"``), as a Row."""
    assert "u" not in values
    return tuple(v for v in values if not isinstance(v, str))


def _order(key: bytes, status: bytes | None | str) -> tuple[bytes | None | str, ...]:
    return (key, b"2026-01-01", None, b"7", status, b"2026-01-01 10:00:00.5", None, None, None)


def test_begin_and_commit_carry_lsns_and_times() -> None:
    micros = 123_456_789
    begin = pgoutput.decode(b"B" + struct.pack("!QqI", 0x1_0000_0010, micros, 42))
    assert begin == pgoutput.Begin(
        0x1_0000_0010, pgoutput.PG_EPOCH + dt.timedelta(microseconds=micros), 42
    )
    commit = pgoutput.decode(b"C" + struct.pack("!bQQq", 0, 0x10, 0x20, micros))
    assert isinstance(commit, pgoutput.Commit) and (commit.commit_lsn, commit.end_lsn) == (
        0x10,
        0x20,
    )
    assert (
        pgoutput.lsn_to_str(0x1_0000_0010) == "1/10"
        and pgoutput.lsn_from_str("1/10") == 0x1_0000_0010
    )


def test_tuples_keep_text_bytes_nulls_and_unchanged_markers() -> None:
    msg = pgoutput.decode(b"I" + struct.pack("!I", 9) + b"N" + _tuple(b"1", None, "u", b""))
    assert isinstance(msg, pgoutput.Insert)
    assert msg.new[:2] == (b"1", None)
    assert msg.new[2] is pgoutput.UNCHANGED
    assert msg.new[3] == b"" and msg.new[3] is not pgoutput.UNCHANGED  # an empty string is a value


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"Z", id="unknown_type"),
        pytest.param(b"B\x00\x00", id="truncated_begin"),
        pytest.param(
            b"I"
            + struct.pack("!I", 9)
            + b"N"
            + struct.pack("!h", 1)
            + b"t"
            + struct.pack("!i", 10)
            + b"abc",
            id="truncated_value",
        ),
        pytest.param(b"D" + struct.pack("!I", 9) + b"X", id="delete_without_old_row"),
    ],
)
def test_malformed_payloads_raise_decode_error(payload: bytes) -> None:
    with pytest.raises(pgoutput.DecodeError):
        pgoutput.decode(payload)


def _feed(decoder: Decoder, *payloads: bytes) -> list[Transaction]:
    done = []
    for p in payloads:
        out = decoder.feed(p)
        if out is not None:
            done.append(out)
    return done


BEGIN = b"B" + struct.pack("!QqI", 0x100, 0, 1)
COMMIT = b"C" + struct.pack("!bQQq", 0, 0x100, 0x108, 0)


def _only_change(message: bytes, columns: list[tuple[str, int, int]] = ORDERS) -> Change:
    """The one change of a transaction of ``message`` (orders, as relation 1 of ``columns``)."""
    (txn,) = _feed(_decoder(), _relation(1, "orders", columns), BEGIN, message, COMMIT)
    (change,) = txn.changes
    return change


def test_columns_are_matched_by_name_and_extra_columns_ignored() -> None:
    shuffled = [("priority", 25, -1), *reversed(ORDERS)]
    values = (b"high", *reversed(_order(b"5", b"PENDING")))
    change = _only_change(b"I" + struct.pack("!I", 1) + b"N" + _tuple(*values), shuffled)
    assert change.key == b"5" and change.row == _order(b"5", b"PENDING")


INSERT_5 = b"I" + struct.pack("!I", 1) + b"N" + _tuple(*_order(b"5", b"PENDING"))


def test_a_changed_contract_type_or_a_missing_contract_column_is_schema_drift() -> None:
    """Raised at the first change read under the drifted definition (before it is applied)."""
    changed = [(n, 25, -1) if n == "status" else (n, t, m) for n, t, m in ORDERS]
    with pytest.raises(SchemaDrift) as changed_type:
        _feed(_decoder(), _relation(1, "orders", changed), BEGIN, INSERT_5)
    err = changed_type.value
    assert (err.table, err.column, err.expected, err.actual) == (
        "operations.orders",
        "status",
        "character varying",
        "text",
    )
    with pytest.raises(SchemaDrift) as info:
        _feed(
            _decoder(),
            _relation(1, "orders", [c for c in ORDERS if c[0] != "status"]),
            BEGIN,
            INSERT_5,
        )
    assert (info.value.table, info.value.column, info.value.actual) == (
        "operations.orders",
        "status",
        None,
    )
    assert str(info.value).startswith(
        "The source table operations.orders no longer has column status (character varying)"
    )


def test_a_resynced_table_changes_before_its_copy_are_dropped_even_when_drifted() -> None:
    """``cdc resync``: a transaction whose commit starts before the copy's LSN loses its changes
    of that table (a drifted definition does not stop it); a later one raises the drift."""
    changed = [(n, 25, -1) if n == "status" else (n, t, m) for n, t, m in ORDERS]
    decoder = _decoder(resync={"orders": 0x101})  # BEGIN's commit is at 0x100: in the copy
    (txn,) = _feed(decoder, _relation(1, "orders", changed), BEGIN, INSERT_5, COMMIT)
    assert txn.changes == [] and decoder.skipped_changes == 1
    later = b"B" + struct.pack("!QqI", 0x200, 0, 2)
    with pytest.raises(SchemaDrift):
        _feed(decoder, later, INSERT_5)
    kept = _decoder(resync={"orders": 0x100})  # the copy's LSN is the commit's: not in it
    (txn,) = _feed(kept, _relation(1, "orders", ORDERS), BEGIN, INSERT_5, COMMIT)
    assert len(txn.changes) == 1 and kept.skipped_changes == 0


def test_other_tables_are_ignored() -> None:
    rel = (
        b"R"
        + struct.pack("!I", 2)
        + _s("public")
        + _s("orders")
        + b"d"
        + struct.pack("!h", 1)
        + b"\x01"
        + _s("x")
        + struct.pack("!Ii", 99, -1)
    )
    (txn,) = _feed(
        _decoder(), rel, BEGIN, b"I" + struct.pack("!I", 2) + b"N" + _tuple(b"1"), COMMIT
    )
    assert txn.changes == []


def test_an_update_of_the_key_deletes_the_old_key_and_fills_unchanged_values_from_the_old_row() -> (
    None
):
    old = _order(b"5", b"PENDING")
    new = (b"6", *(("u",) * 3), b"DONE", *old[5:])
    (txn,) = _feed(
        _decoder(),
        _relation(1, "orders", ORDERS),
        BEGIN,
        b"U" + struct.pack("!I", 1) + b"O" + _tuple(*old) + b"N" + _tuple(*new),
        COMMIT,
    )
    kinds = [(c.kind, c.key) for c in txn.changes]
    assert kinds == [("delete", b"5"), ("upsert", b"6")]
    assert txn.changes[1].row == (b"6", *old[1:4], b"DONE", *old[5:])


def test_a_batch_keeps_the_last_state_per_key_and_truncate_forgets_earlier_changes() -> None:
    dec = _decoder()
    txns = _feed(
        dec,
        _relation(1, "orders", ORDERS),
        BEGIN,
        b"I" + struct.pack("!I", 1) + b"N" + _tuple(*_order(b"1", b"A")),
        COMMIT,
        BEGIN,
        b"U" + struct.pack("!I", 1) + b"N" + _tuple(*_order(b"1", b"B")),
        b"D" + struct.pack("!I", 1) + b"K" + _tuple(b"2", *([None] * 8)),
        COMMIT,
    )
    batch = Batch()
    for t in txns:
        batch.add(t)
    assert batch.tables["orders"].rows == {b"1": _order(b"1", b"B"), b"2": None}
    assert (batch.transactions, batch.changes, batch.end_lsn) == (2, 3, 0x108)
    (trunc,) = _feed(dec, BEGIN, b"T" + struct.pack("!ibI", 1, 0, 1), COMMIT)
    batch.add(trunc)
    assert batch.tables["orders"].rows == {} and batch.tables["orders"].truncated


def test_copy_lines_escape_the_text_format() -> None:
    assert (
        copy_block([((b"a\tb", None, b"back\\slash\nnew"), False)], (b"\tf\n", b"\tt\n"))
        == b"a\\tb\t\\N\tback\\\\slash\\nnew\tf\n"
    )
    assert len(TABLES["orders"].columns) == len(ORDERS)


def test_a_bare_database_error_of_a_gone_walsender_counts_as_a_lost_connection() -> None:
    """psycopg2 may report a walsender that went away as a bare DatabaseError; the stream then
    reconnects (an OperationalError) instead of ending with a CdcError."""
    import psycopg2

    from acme_mv.cdc import replication

    class Open:
        closed = 0

    gone = psycopg2.DatabaseError("error with status PGRES_COPY_BOTH and no message from the libpq")
    assert replication.is_lost(gone, Open())
    assert isinstance(replication.lost(gone), replication.lost_connection_errors())
    other = psycopg2.DatabaseError("could not decode the message")
    assert not replication.is_lost(other, Open())


#: COPY text values a stream may carry: plain, empty, COPY's special bytes, a literal ``\N``,
#: non-ASCII (UTF-8), a NULL
ODD_VALUES: list[bytes | None] = [
    b"PENDING",
    b"",
    b"back\\slash",
    b"\\N",
    b"tab\there",
    b"new\nline",
    b"carriage\rreturn",
    b"\\\t\n\r",
    "caf\u00e9 \u2028 \U0001f600".encode(),
    b"2026-01-01",
    None,
]


def _escaped(value: bytes | None) -> bytes:
    """COPY's text format, value by value (the reference)."""
    if value is None:
        return b"\\N"
    out = b""
    for byte in value:
        ch = bytes([byte])
        out += {b"\\": b"\\\\", b"\t": b"\\t", b"\n": b"\\n", b"\r": b"\\r"}.get(ch, ch)
    return out


TAILS = (b"\tf\t3\n", b"\tt\t3\n")


def _reference(rows: Sequence[tuple[tuple[bytes | None, ...], bool]]) -> bytes:
    return b"".join(b"\t".join(_escaped(v) for v in row) + TAILS[d] for row, d in rows)


@pytest.mark.parametrize(
    "value", [pytest.param(v, id=repr(v)[:24]) for v in ODD_VALUES if v is not None]
)
def test_a_copy_block_escapes_each_odd_value_as_copy_text_does(value: bytes) -> None:
    rows: list[tuple[tuple[bytes | None, ...], bool]] = [
        ((b"1", value, None), False),
        ((b"2", b"plain", b"x"), True),
    ]
    assert copy_block(rows, TAILS) == _reference(rows)


def test_a_copy_block_of_plain_values_and_nulls_is_written_as_joined() -> None:
    rows = [((b"1", None, b"a"), False), ((b"2", b"b", None), True), ((b"3", b"", b"c"), False)]
    assert copy_block(rows, TAILS) == b"1\t\\N\ta\tf\t3\n2\tb\t\\N\tt\t3\n3\t\tc\tf\t3\n"


@given(
    st.lists(
        st.tuples(
            st.tuples(*[st.sampled_from(ODD_VALUES) | st.binary(max_size=6)] * 4), st.booleans()
        ),
        min_size=1,
        max_size=8,
    )
)
def test_a_copy_block_equals_escaping_value_by_value(
    rows: list[tuple[tuple[bytes | None, ...], bool]],
) -> None:
    assert copy_block(rows, TAILS) == _reference(rows)


def test_odd_values_pass_the_decoder_as_the_source_sent_them() -> None:
    """Bytes as sent (no unescaping, no decoding), NULLs, unchanged TOASTed values, and an
    empty string that is a value, not the unchanged marker."""
    values = (b"5", b"back\\slash\t\n\r", "caf\u00e9".encode(), b"\\N", b"", None, "u", b"", None)
    change = _only_change(b"I" + struct.pack("!I", 1) + b"N" + _tuple(*values))
    assert change.row is not None
    assert change.row[:6] == values[:6] and change.row[7:] == values[7:]
    assert change.row[6] is pgoutput.UNCHANGED
    assert change.row[4] is not pgoutput.UNCHANGED and change.row[7] is not pgoutput.UNCHANGED


def test_an_update_fills_unchanged_values_from_the_old_row_and_keeps_empty_strings() -> None:
    old = (b"5", b"", b"2026-01-02", b"7", b"OLD", b"t", None, b"c", None)
    new = (b"5", b"", "u", b"7", b"NEW", "u", None, b"", None)
    change = _only_change(b"U" + struct.pack("!I", 1) + b"O" + _tuple(*old) + b"N" + _tuple(*new))
    assert change.row == (b"5", b"", b"2026-01-02", b"7", b"NEW", b"t", None, b"", None)


def test_a_batch_fills_unchanged_values_from_the_keys_earlier_state_only() -> None:
    first = Transaction(changes=[Change("orders", "upsert", b"5", _row(_order(b"5", b"")))])
    later = (b"5", b"", "u", b"8", b"", b"2026-01-02 00:00:00", None, None, None)
    change = _only_change(b"U" + struct.pack("!I", 1) + b"N" + _tuple(*later))
    batch = Batch()
    batch.add(first)
    batch.add(Transaction(changes=[change]))
    filled = (b"5", b"", None, b"8", b"", b"2026-01-02 00:00:00", None, None, None)
    assert batch.tables["orders"].rows == {b"5": filled}


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"B\x00\x00", id="truncated_begin"),
        pytest.param(b"C\x00" + struct.pack("!Q", 1), id="truncated_commit"),
        pytest.param(b"I\x00\x00", id="truncated_oid"),
        pytest.param(b"I" + struct.pack("!I", 1) + b"N" + struct.pack("!h", 2), id="no_values"),
        pytest.param(
            b"I" + struct.pack("!I", 1) + b"N" + struct.pack("!h", 1) + b"t" + b"\x00\x00",
            id="truncated_length",
        ),
        pytest.param(
            b"I" + struct.pack("!I", 1) + b"N" + struct.pack("!hbi", 1, 116, 4) + b"abc",
            id="truncated_value",
        ),
        pytest.param(
            b"I" + struct.pack("!I", 1) + b"N" + struct.pack("!h", 1) + b"x", id="unknown_kind"
        ),
        pytest.param(
            b"U" + struct.pack("!I", 1) + b"O" + _tuple(b"1"), id="update_without_new_row"
        ),
        pytest.param(b"I" + struct.pack("!I", 1) + b"K" + _tuple(b"1"), id="insert_of_a_key"),
        pytest.param(b"D" + struct.pack("!I", 1) + b"N" + _tuple(b"1"), id="delete_of_a_new_row"),
    ],
)
def test_malformed_payloads_stop_the_decoder(payload: bytes) -> None:
    decoder = _decoder()
    _feed(decoder, _relation(1, "orders", ORDERS), BEGIN)
    with pytest.raises(pgoutput.DecodeError):
        decoder.feed(payload)


def test_commit_times_are_made_from_pgoutputs_microseconds() -> None:
    micros = 1_000_000 * 86_400 + 5
    commit = b"C" + struct.pack("!bQQq", 0, 0x100, 0x108, micros)
    (txn,) = _feed(_decoder(), BEGIN, commit)
    when = dt.datetime(2000, 1, 2, 0, 0, 0, 5, tzinfo=dt.UTC)
    assert txn.commit_time == when
    batch = Batch()
    batch.add(txn)
    assert batch.commit_time == batch.first_commit_time == when
