"""One sync batch from the source into staging, through the real ``acme_mv.sync``.

The view tests started with a stand-in that copied every source row and kept
the changed ones; they now run the real sync, so the invariant they prove
covers the real pipeline (cursor, late-commit window, dedup, mirrors).
"""

from __future__ import annotations

from acme_mv.config import Settings
from acme_mv.sync import sync


def copy_batch(source_url: str, warehouse_url: str, *, full: bool = False) -> int:
    """One real sync (all tables); returns its batch id."""
    return sync(Settings(database_url=warehouse_url, source_url=source_url), full=full).batch_id
