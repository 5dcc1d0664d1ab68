"""Delivery: the four reports where the logistics lead looks.

- :mod:`acme_mv.delivery.reports`: the reports' CSV exactly as ``acme-mv export``
  writes it, plus their freshness, read in one snapshot;
- :mod:`acme_mv.delivery.mail`: one email with the CSV files attached (``acme-mv mail``);
- :mod:`acme_mv.delivery.schedule`: the daily send of ``acme-mv run --mail-at``;
- :mod:`acme_mv.delivery.dashboard`: the live, read-only page (``acme-mv serve``).
"""
