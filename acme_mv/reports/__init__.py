"""The reports stage: view definitions, refresh, export, check and verify.

- :mod:`acme_mv.reports.views`: view SQL files as
  versioned values (create, replace, dependency order)
- :mod:`acme_mv.reports.registry`: the summaries and reports, read from the headers of ``views/``
- :mod:`acme_mv.reports.lineage`: every report's lineage, rendered into docs/extending.md
- :mod:`acme_mv.reports.refresh`: adds the new batches'
  deltas; folds at the day's rollover; ``--rebuild``
- :mod:`acme_mv.reports.export`: CSV/JSON of a report, now or ``--as-of`` a past moment
- :mod:`acme_mv.reports.check`: the staging and the source agree (counts and keys)
- :mod:`acme_mv.reports.verify`: every report recomputed
  from scratch and diffed with the union views
"""
