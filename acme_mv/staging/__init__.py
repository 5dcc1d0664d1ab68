"""The staging core that every writer of the warehouse shares, whatever feeds it.

The cursor sync (:mod:`acme_mv.sync`) and change capture (:mod:`acme_mv.cdc`)
both land source rows here, one batch at a time, through the same pieces:

- :mod:`~acme_mv.staging.tables`: the contract's source tables and the schema check;
- :mod:`~acme_mv.staging.copy`: COPY streaming and the ways rows land in staging;
- :mod:`~acme_mv.staging.parallel`: a first copy of the version tables by parallel workers;
- :mod:`~acme_mv.staging.partitions`: the version tables' partitions by batch, and a first
  copy's load table attached as one;
- :mod:`~acme_mv.staging.batch`: the sync lock and one batch's life (:func:`open_batch`);
- :mod:`~acme_mv.staging.apply`: a batch's report deltas and the latest-state tables;
- :mod:`~acme_mv.staging.compact`: dropping the history older than a window.

Nothing here imports :mod:`acme_mv.sync` or :mod:`acme_mv.cdc`.
"""
