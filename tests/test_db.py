"""Typed one-value reads (acme_mv.db.one_value / optional_value): a NULL, a missing row or a
value of another type that the code rules out fails loudly instead of becoming a 0."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from acme_mv.db import UnexpectedResult, one_value, optional_value


@pytest.fixture
def conn(db_url: str) -> Iterator[psycopg.Connection[tuple[Any, ...]]]:
    with psycopg.connect(db_url, autocommit=True) as c:
        yield c


@pytest.mark.parametrize(
    ("query", "kind", "expected"),
    [
        pytest.param("SELECT 42::bigint", int, 42, id="bigint"),
        pytest.param("SELECT count(*) FROM generate_series(1, 3)", int, 3, id="count"),
        pytest.param("SELECT true", bool, True, id="boolean"),
        pytest.param("SELECT 'x'::text", str, "x", id="text"),
        pytest.param("SELECT ARRAY['a', 'b']", list, ["a", "b"], id="array"),
        pytest.param(
            "SELECT timestamp '2026-11-26 12:00'",
            dt.datetime,
            dt.datetime(2026, 11, 26, 12),
            id="timestamp",
        ),
    ],
)  # fmt: skip
def test_one_value(
    conn: psycopg.Connection[tuple[Any, ...]], query: str, kind: type[Any], expected: object
) -> None:
    assert one_value(conn, query, kind=kind) == expected
    assert optional_value(conn, query, kind=kind) == expected


@pytest.mark.parametrize(
    ("query", "kind", "needle"),
    [
        pytest.param("SELECT NULL::bigint", int, "None is not of type int", id="null"),
        pytest.param("SELECT 1 WHERE false", int, "0 rows, not one", id="no_row"),
        pytest.param("SELECT generate_series(1, 2)", int, "2 rows, not one", id="two_rows"),
        pytest.param(
            "SELECT sum(x::bigint) FROM generate_series(1, 3) AS x",
            int,
            "Decimal('6') is not of type int",
            id="numeric_is_not_int",
        ),
        pytest.param("SELECT '1'::text", int, "'1' is not of type int", id="text_is_not_int"),
    ],
)  # fmt: skip
def test_one_value_fails_loudly(
    conn: psycopg.Connection[tuple[Any, ...]], query: str, kind: type[Any], needle: str
) -> None:
    with pytest.raises(UnexpectedResult) as info:
        one_value(conn, query, kind=kind)
    assert needle in str(info.value)


def test_optional_value_allows_null_only(conn: psycopg.Connection[tuple[Any, ...]]) -> None:
    assert optional_value(conn, "SELECT max(x) FROM generate_series(1, 0) AS x", kind=int) is None
    with pytest.raises(UnexpectedResult, match="0 rows"):
        optional_value(conn, "SELECT 1 WHERE false", kind=int)
    with pytest.raises(UnexpectedResult, match="is not of type int nor NULL"):
        optional_value(conn, "SELECT 1.5::numeric", kind=int)
