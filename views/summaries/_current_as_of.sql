-- Fragment (a file named _*.sql is composed into others, it is no summary): the rows of
-- {current} (analytics.<summary>_current) as of batch {k}, when the summary tables hold every
-- batch up to {r}: minus the deltas of the batches in (k, r], plus those in (r, k].
-- export --as-of reads a report's own views with this in place of each <summary>_current
-- (acme_mv.reports.registry.Report.query_over): exact for any k whose deltas are kept.
SELECT {keys}, n FROM {current}
UNION ALL SELECT {keys}, -n FROM {delta} WHERE batch_id > {k} AND batch_id <= {r}
UNION ALL SELECT {keys}, n FROM {delta} WHERE batch_id > {r} AND batch_id <= {k}
