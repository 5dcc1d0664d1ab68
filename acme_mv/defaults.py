"""Defaults that the command line shows in its help.

They live here, apart from the modules that use them (which import them from
here), so that ``acme-mv --help`` loads none of those modules: change capture,
the parallel copy and their database drivers load only for the command that runs.
"""

from __future__ import annotations

import datetime as dt
import os

#: the replication slot and the publication ``acme-mv cdc`` creates and streams from
DEFAULT_SLOT = "acme_mv"
DEFAULT_PUBLICATION = "acme_mv"
#: ``cdc status`` and ``status --max-age`` fail (exit 5) when the slot retains more source WAL
#: than this: a stopped streamer's WAL piles up on the source's disk; 10 GiB is hours of the
#: contract's workload and far from filling a production disk
DEFAULT_MAX_RETAINED = 10 * 1024**3

#: a batch closes at this many changes even when more are waiting (bounds a
#: warehouse transaction's size and memory)
DEFAULT_BATCH_ROWS = 20_000
#: ... or this long after its first transaction arrived (bounds latency under a steady flow)
DEFAULT_BATCH_MS = 200
#: idle: ask for a keepalive, save and confirm its position this often
DEFAULT_HEARTBEAT_S = 10.0

#: sessions copying and indexing at once; each copy holds one source and one
#: warehouse session. Four keeps a big server busy without starving its other
#: clients; on a small box the number of cores is the limit
DEFAULT_JOBS = max(1, min(4, os.cpu_count() or 1))

#: the source tables acme-mv stages (``acme_mv.staging.tables.TABLES`` describes each; a test
#: checks that both list the same names in the same order)
TABLE_NAMES = ("customers", "products", "orders", "order_items")

#: used instead of pg_stat_activity when this role cannot see other roles'
#: ``xact_start`` (no ``pg_read_all_stats``): writers' transactions are assumed to
#: commit within this long after they start
DEFAULT_FALLBACK_LAG = dt.timedelta(minutes=5)

#: how long a sync waits, in all, for source tables another session holds
#: locked (a rewrite in progress): long enough for an ALTER TABLE that rewrites
#: tens of millions of rows, short enough that a forgotten open DDL
#: transaction makes the sync fail with a clear message instead of hanging
DEFAULT_LOCK_TIMEOUT = dt.timedelta(minutes=10)

#: about the contract's volume: 100 order jobs a minute, each an update (1
#: change) or a new order with ~26 items (27 changes), an order living through
#: ~3 updates before COMPLETED: 100 * (27 + 3) / 4 / 60 = 12.5 changes a second
DEFAULT_RATE = 12.5
