"""acme-mv: fresh logistics reports from a busy transactional PostgreSQL.

The Python API has one package per stage of the pipeline: ``sync`` (the cursor
sync into staging), ``cdc`` (change capture from the WAL), ``reports`` (views,
refresh, export, check, verify), ``run`` (the unattended loop, health,
metrics), ``delivery`` (mail, dashboard) and ``sample`` (the ACME sample
source), beside small shared modules (``config``, ``db``, ``errors``,
``migrate``). The ``acme-mv`` command line in :mod:`acme_mv.cli` is a thin skin
over it, one module per package.
"""

from __future__ import annotations

#: the one definition of the version: pyproject.toml reads it (``[tool.hatch.version]``)
__version__ = "0.1.0"
