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
_I64 = struct.Struct("!q")
_U64 = struct.Struct("!Q")


def lsn_to_str(lsn: int) -> str:
    """``0x16B3748`` -> ``'0/16B3748'`` (PostgreSQL's pg_lsn text form)."""
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def lsn_from_str(text: str) -> int:
    """``'0/16B3748'`` -> ``0x16B3748``."""
    high, _, low = text.partition("/")
    if not low:
        raise ValueError(f"not an LSN: {text!r}")
    return (int(high, 16) << 32) | int(low, 16)


def _timestamp(micros: int) -> dt.datetime:
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

    def i64(self) -> int:
        return self._take(_I64)

    def u64(self) -> int:
        return self._take(_U64)

    def string(self) -> str:
        end = self.buf.find(b"\x00", self.pos)
        if end < 0:
            raise DecodeError(f"unterminated string in {chr(self.buf[0])!r} message")
        text = self.buf[self.pos : end].decode()
        self.pos = end + 1
        return text

    def byte(self) -> str:
        if self.pos >= len(self.buf):
            raise DecodeError(f"truncated {chr(self.buf[0])!r} message at byte {self.pos}")
        ch = chr(self.buf[self.pos])
        self.pos += 1
        return ch

    def tuple_data(self) -> tuple[Value, ...]:
        # the hot loop of a stream (every column of every row, twice for an update under
        # REPLICA IDENTITY FULL): locals and byte codes instead of method calls per column
        buf, pos, size = self.buf, self.pos, len(self.buf)
        if pos + 2 > size:
            raise DecodeError(f"truncated {chr(buf[0])!r} message at byte {pos}")
        (count,) = _I16.unpack_from(buf, pos)
        pos += 2
        values: list[Value] = []
        append = values.append
        length = _I32.unpack_from
        for _ in range(count):
            if pos >= size:
                raise DecodeError(f"truncated {chr(buf[0])!r} message at byte {pos}")
            kind = buf[pos]
            pos += 1
            if kind in (_TEXT, _BINARY):
                if pos + 4 > size:
                    raise DecodeError("truncated column value")
                end = pos + 4 + length(buf, pos)[0]
                if end > size:
                    raise DecodeError("truncated column value")
                append(bytes(buf[pos + 4 : end]))
                pos = end
            elif kind == _NULL:
                append(NULL)
            elif kind == _UNCHANGED_KIND:
                append(UNCHANGED)
            else:
                raise DecodeError(f"unknown tuple column kind {chr(kind)!r}")
        self.pos = pos
        return tuple(values)


#: the kinds of a tuple's column: text, binary, NULL, unchanged TOASTed value
_TEXT, _BINARY, _NULL, _UNCHANGED_KIND = b"t"[0], b"b"[0], b"n"[0], b"u"[0]


def decode(payload: bytes) -> Message:
    """One pgoutput v1 message from the payload of an XLogData frame."""
    if not payload:
        raise DecodeError("empty message")
    r = _Reader(payload)
    kind = chr(payload[0])
    if kind == "B":
        return Begin(final_lsn=r.u64(), commit_time=_timestamp(r.i64()), xid=r.u32())
    if kind == "C":
        r.i8()  # flags, unused
        return Commit(commit_lsn=r.u64(), end_lsn=r.u64(), commit_time=_timestamp(r.i64()))
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
    if kind == "I":
        oid = r.u32()
        if r.byte() != "N":
            raise DecodeError("insert without a new tuple")
        return Insert(oid=oid, new=r.tuple_data())
    if kind == "U":
        oid = r.u32()
        marker = r.byte()
        old = None
        if marker in ("K", "O"):
            old = r.tuple_data()
            marker = r.byte()
        if marker != "N":
            raise DecodeError("update without a new tuple")
        return Update(oid=oid, old=old, new=r.tuple_data())
    if kind == "D":
        oid = r.u32()
        if r.byte() not in ("K", "O"):
            raise DecodeError("delete without an old tuple or key")
        return Delete(oid=oid, old=r.tuple_data())
    if kind == "T":
        count = r.i32()
        options = r.i8()
        oids = tuple(r.u32() for _ in range(count))
        return Truncate(oids=oids, cascade=bool(options & 1), restart_identity=bool(options & 2))
    if kind in ("O", "Y", "M"):
        return Other(kind=kind)
    raise DecodeError(f"unknown pgoutput message type {kind!r}")
