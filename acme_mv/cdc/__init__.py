"""Change data capture: staging fed from the source's WAL (``acme-mv cdc``).

A second way to feed the same staging tables as ``acme-mv sync``: a logical
replication slot with the built-in ``pgoutput`` plugin streams every
committed insert, update and delete of the four contract tables; deletes
become tombstones. The views do not change.

    from acme_mv.cdc import setup, stream, status, drop

    setup(settings)                       # publication + slot + initial copy in its snapshot
    stream(settings, stop=event)          # apply batches, refresh, confirm; until event is set
    print(status(settings).lag_bytes)
    resync(settings, table="orders")      # re-copy one table; the stream skips its older changes
    drop(settings)                        # slot + publication + the warehouse's position

See docs/deploy-cdc.md and docs/design.md.
"""

from __future__ import annotations

from acme_mv.cdc.capture import BatchResult, SlotLag, StreamResult, stream
from acme_mv.cdc.errors import NotSetUp, SlotAtRisk, SlotBusy, SlotLost, SourceNotReady
from acme_mv.cdc.resync import ResyncResult, resync
from acme_mv.cdc.slot import (
    DEFAULT_MAX_RETAINED,
    DEFAULT_PUBLICATION,
    DEFAULT_SLOT,
    DropResult,
    SetupResult,
    Status,
    check_health,
    drop,
    setup,
    slots,
    status,
)

__all__ = [
    "DEFAULT_MAX_RETAINED",
    "DEFAULT_PUBLICATION",
    "DEFAULT_SLOT",
    "BatchResult",
    "DropResult",
    "NotSetUp",
    "ResyncResult",
    "SetupResult",
    "SlotAtRisk",
    "SlotBusy",
    "SlotLag",
    "SlotLost",
    "SourceNotReady",
    "Status",
    "StreamResult",
    "check_health",
    "drop",
    "resync",
    "setup",
    "slots",
    "status",
    "stream",
]
