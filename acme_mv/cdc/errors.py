"""The errors of change capture (all :class:`acme_mv.errors.AcmeMvError`)."""

from __future__ import annotations

from typing import Literal

from acme_mv.errors import AcmeMvError, Busy


class CdcError(AcmeMvError):
    """Change capture cannot run as asked."""


class NotSetUp(CdcError):
    """No slot, or no warehouse position for it: ``acme-mv cdc setup`` first."""

    def __init__(self, message: str, *, slot: str) -> None:
        super().__init__(message)
        self.slot = slot


class SlotLost(CdcError):
    """The source invalidated the slot (``wal_status = 'lost'``): re-snapshot."""

    def __init__(self, message: str, *, slot: str) -> None:
        super().__init__(message)
        self.slot = slot


class SlotAtRisk(CdcError):
    """The slot is about to be invalidated or already was (``wal_status`` unreserved or lost),
    or retains more source WAL than allowed: ``cdc status`` and ``status --max-age`` exit 5."""

    exit_code = 5

    def __init__(
        self, message: str, *, slot: str, wal_status: str | None, retained_bytes: int | None
    ) -> None:
        super().__init__(message)
        self.slot = slot
        self.wal_status = wal_status
        self.retained_bytes = retained_bytes


class SlotBusy(Busy):
    """Another process streams from the slot."""

    def __init__(self, message: str, *, slot: str, pid: int | None) -> None:
        super().__init__(message, resource=f"replication slot {slot}")
        self.slot = slot
        self.pid = pid


class SourceNotReady(CdcError):
    """The source cannot feed change capture (wal_level, privileges, publication)."""

    def __init__(
        self, message: str, *, requirement: Literal["wal_level", "publication", "slot"]
    ) -> None:
        super().__init__(message)
        #: what the source lacks: ``wal_level`` (not logical), ``publication`` (missing, or
        #: not publishing a table, or not creatable by this role), ``slot`` (not creatable)
        self.requirement = requirement
