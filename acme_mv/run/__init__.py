"""The run stage: the loop that syncs and refreshes forever, its health and metrics.

- :mod:`acme_mv.run.loop`: ``acme-mv run`` (cursor
  cycles or ``--cdc``), retries, daily mail, compaction
- :mod:`acme_mv.run.health`: freshness and ``status --max-age``
- :mod:`acme_mv.run.metrics`: the Prometheus endpoint
"""
