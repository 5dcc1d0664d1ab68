"""acme-mv: fresh logistics reports from a busy transactional PostgreSQL.

The Python API lives in one module per concern (``config``, ``db``,
``migrate``, ``sync``, ``refresh``, ``export``, ``sample``); the ``acme-mv``
command line in :mod:`acme_mv.cli` is a thin skin over it.
"""

from __future__ import annotations

__version__ = "0.1.0"
