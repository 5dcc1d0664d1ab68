"""A decoder for PostgreSQL's built-in ``pgoutput`` logical replication protocol, version 1.

Hand-written on purpose: psycopg2 carries the replication protocol (frames,
keepalives, feedback) but hands over each message's raw payload, and the
pgoutput decoders on PyPI are unmaintained (pypgoutput 0.0.3, 2022) or a
single young release with a native backend (pgoutput-decoder 0.1.0). The
format is small and stable (documented in "Logical Replication Message
Formats"); these are the messages a ``proto_version '1'`` stream carries:

``B`` begin, ``C`` commit, ``O`` origin, ``R`` relation, ``Y`` type,
``I`` insert, ``U`` update, ``D`` delete, ``T`` truncate, ``M`` message.

Column values stay the raw bytes of the type's text output (``t``), or
:data:`NULL` / :data:`UNCHANGED` (an unchanged TOASTed value that the
server did not send): they are written to the warehouse with ``COPY`` in
text format, never parsed in Python.
"""

from __future__ import annotations

import datetime as dt
import struct
from dataclasses import dataclass
from typing import Final

#: a column value: the text output's bytes, or None (SQL NULL), or UNCHANGED
Value = bytes | None


class _Unchanged(bytes):
    """Marker for an unchanged TOASTed value (``u``): not sent by the server."""


UNCHANGED: Final = _Unchanged(b"")
NULL: Final = None

#: microseconds since 2000-01-01, PostgreSQL's timestamp epoch
PG_EPOCH = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)


class DecodeError(ValueError):
    """A payload that is not a well-formed pgoutput v1 message."""


@dataclass(frozen=True, slots=True)
class Begin:
    final_lsn: int
    commit_time: dt.datetime
    xid: int


@dataclass(frozen=True, slots=True)
class Commit:
    commit_lsn: int
    end_lsn: int
    commit_time: dt.datetime


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    type_oid: int
    type_modifier: int
    is_key: bool


@dataclass(frozen=True, slots=True)
class Relation:
    oid: int
    namespace: str
    name: str
    replica_identity: str
    columns: tuple[Column, ...]


@dataclass(frozen=True, slots=True)
class Insert:
    oid: int
    new: tuple[Value, ...]


@dataclass(frozen=True, slots=True)
class Update:
    oid: int
    #: the old row (REPLICA IDENTITY FULL: ``O``) or
    #: its key (``K``, when the key changed); else None
    old: tuple[Value, ...] | None
    new: tuple[Value, ...]


@dataclass(frozen=True, slots=True)
class Delete:
    oid: int
    #: the old row (``O``) or only its key columns, the others NULL (``K``)
    old: tuple[Value, ...]


@dataclass(frozen=True, slots=True)
class Truncate:
    oids: tuple[int, ...]
    cascade: bool
    restart_identity: bool


@dataclass(frozen=True, slots=True)
class Other:
    """``O`` origin, ``Y`` type, ``M`` logical message: nothing to apply."""

    kind: str


Message = Begin | Commit | Relation | Insert | Update | Delete | Truncate | Other

_I8 = struct.Struct("!B")
_I16 = struct.Struct("!h")
_I32 = struct.Struct("!i")
_U32 = struct.Struct("!I")


def lsn_to_str(lsn: int) -> str:
    """``0x16B3748`` -> ``'0/16B3748'`` (PostgreSQL's pg_lsn text form)."""
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def lsn_from_str(text: str) -> int:
    """``'0/16B3748'`` -> ``0x16B3748``."""
    high, _, low = text.partition("/")
    if not low:
        raise ValueError(f"not an LSN: {text!r}")
    return (int(high, 16) << 32) | int(low, 16)


def timestamp(micros: int) -> dt.datetime:
    """A pgoutput time (microseconds since :data:`PG_EPOCH`) as a datetime."""
    return PG_EPOCH + dt.timedelta(microseconds=micros)


class _Reader:
    __slots__ = ("buf", "pos")

    def __init__(self, buf: bytes) -> None:
        self.buf = buf
        self.pos = 1  # after the message type byte

    def _take(self, fmt: struct.Struct) -> int:
        try:
            (value,) = fmt.unpack_from(self.buf, self.pos)
        except struct.error:
            raise DecodeError(
                f"truncated {chr(self.buf[0])!r} message at byte {self.pos}"
            ) from None
        self.pos += fmt.size
        return int(value)

    def i8(self) -> int:
        return self._take(_I8)

    def i16(self) -> int:
        return self._take(_I16)

    def i32(self) -> int:
        return self._take(_I32)

    def u32(self) -> int:
        return self._take(_U32)

    def string(self) -> str:
        end = self.buf.find(b"\x00", self.pos)
        if end < 0:
            raise DecodeError(f"unterminated string in {chr(self.buf[0])!r} message")
        text = self.buf[self.pos : end].decode()
        self.pos = end + 1
        return text


def read_tuple(buf: bytes, pos: int) -> tuple[tuple[Value, ...], int]:
    """The TupleData at ``buf[pos:]``: its values, and the position after it.

    The hot loop of a stream (every column of every row, twice for an update under
    REPLICA IDENTITY FULL): no bounds check per column; a value running past the end is
    found once, after the loop (a slice never fails), and a count or length past the end
    raises from ``unpack_from`` or the index."""
    try:
        (count,) = _I16.unpack_from(buf, pos)
        pos += 2
        values: list[Value] = []
        append = values.append
        length = _I32.unpack_from
        for _ in range(count):
            kind = buf[pos]
            if kind in _VALUE_KINDS:
                start = pos + 5
                pos = start + length(buf, pos + 1)[0]
                append(buf[start:pos])
            elif kind == _NULL:
                append(NULL)
                pos += 1
            elif kind == _UNCHANGED_KIND:
                append(UNCHANGED)
                pos += 1
            else:
                raise DecodeError(f"unknown tuple column kind {chr(kind)!r}")
    except (struct.error, IndexError):
        raise DecodeError(f"truncated {chr(buf[0])!r} message at byte {pos}") from None
    if pos > len(buf):
        raise DecodeError("truncated column value")
    return tuple(values), pos


#: the kinds of a tuple's column: text, binary, NULL, unchanged TOASTed value
_TEXT, _BINARY, _NULL, _UNCHANGED_KIND = b"t"[0], b"b"[0], b"n"[0], b"u"[0]
_VALUE_KINDS = frozenset((_TEXT, _BINARY))


#: the message types of a row change, a transaction's begin and its commit
INSERT, UPDATE, DELETE, BEGIN, COMMIT = b"I"[0], b"U"[0], b"D"[0], b"B"[0], b"C"[0]
#: a tuple's marker: the new row, the old row (REPLICA IDENTITY FULL), the old key
_NEW, _OLD, _KEY = b"N"[0], b"O"[0], b"K"[0]
#: B: final (commit) LSN, commit time, xid; C: flags, commit LSN, end LSN, commit time
_BEGIN_FIELDS = struct.Struct("!QqI")
_COMMIT_FIELDS = struct.Struct("!xQQq")


def read_begin(payload: bytes) -> tuple[int, int, int]:
    """A ``B`` message as (final LSN, commit time in microseconds since PG_EPOCH, xid)."""
    return _fields(_BEGIN_FIELDS, payload)


def read_commit(payload: bytes) -> tuple[int, int, int]:
    """A ``C`` message as (commit LSN, end LSN, commit time in microseconds since PG_EPOCH)."""
    return _fields(_COMMIT_FIELDS, payload)


def _fields(fmt: struct.Struct, payload: bytes) -> tuple[int, int, int]:
    try:
        first, second, third = fmt.unpack_from(payload, 1)
    except struct.error:
        raise DecodeError(f"truncated {chr(payload[0])!r} message at byte 1") from None
    return int(first), int(second), int(third)


def read_change(
    payload: bytes,
) -> tuple[int, int, tuple[Value, ...] | None, tuple[Value, ...] | None]:
    """An ``I``, ``U`` or ``D`` message as (type byte, relation oid, old tuple or None, new
    tuple or None), without a message object (the stream's hot path; :func:`decode` wraps it).
    """
    kind = payload[0]
    try:
        (oid,) = _U32.unpack_from(payload, 1)
        marker = payload[5]
    except (struct.error, IndexError):
        raise DecodeError(f"truncated {chr(kind)!r} message at byte 1") from None
    if kind == INSERT:
        if marker != _NEW:
            raise DecodeError("insert without a new tuple")
        return kind, oid, None, read_tuple(payload, 6)[0]
    if kind == UPDATE:
        old = None
        pos = 6
        if marker in (_KEY, _OLD):
            old, pos = read_tuple(payload, pos)
            marker = payload[pos] if pos < len(payload) else 0
            pos += 1
        if marker != _NEW:
            raise DecodeError("update without a new tuple")
        return kind, oid, old, read_tuple(payload, pos)[0]
    if kind == DELETE:
        if marker not in (_KEY, _OLD):
            raise DecodeError("delete without an old tuple or key")
        return kind, oid, read_tuple(payload, 6)[0], None
    raise DecodeError(f"not a row change: {chr(kind)!r}")


def decode(payload: bytes) -> Message:
    """One pgoutput v1 message from the payload of an XLogData frame."""
    if not payload:
        raise DecodeError("empty message")
    r = _Reader(payload)
    kind = chr(payload[0])
    if kind == "B":
        final_lsn, micros, xid = read_begin(payload)
        return Begin(final_lsn=final_lsn, commit_time=timestamp(micros), xid=xid)
    if kind == "C":
        commit_lsn, end_lsn, micros = read_commit(payload)
        return Commit(commit_lsn=commit_lsn, end_lsn=end_lsn, commit_time=timestamp(micros))
    if kind == "R":
        oid = r.u32()
        namespace = r.string()
        name = r.string()
        identity = chr(r.i8())
        columns = []
        for _ in range(r.i16()):
            flags = r.i8()
            columns.append(
                Column(
                    name=r.string(), type_oid=r.u32(), type_modifier=r.i32(), is_key=bool(flags & 1)
                )
            )
        return Relation(
            oid=oid,
            namespace=namespace,
            name=name,
            replica_identity=identity,
            columns=tuple(columns),
        )
    if kind in ("I", "U", "D"):
        _, oid, old, new = read_change(payload)
        if new is None:
            assert old is not None
            return Delete(oid=oid, old=old)
        if kind == "I":
            return Insert(oid=oid, new=new)
        return Update(oid=oid, old=old, new=new)
    if kind == "T":
        count = r.i32()
        options = r.i8()
        oids = tuple(r.u32() for _ in range(count))
        return Truncate(oids=oids, cascade=bool(options & 1), restart_identity=bool(options & 2))
    if kind in ("O", "Y", "M"):
        return Other(kind=kind)
    raise DecodeError(f"unknown pgoutput message type {kind!r}")
