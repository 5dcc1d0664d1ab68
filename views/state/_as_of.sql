-- Fragment (composed by acme_mv.reports.detail, it is no object): the rows of the latest-state
-- table {state} as of batch {r}, when it may already hold newer batches. A key with no version
-- after {r} in the version table {versions} is as the state holds it; a key with one is its
-- latest version with _batch_id <= {r}, unless that version is a tombstone (_deleted) or there
-- is none (the key came later, or compaction dropped its version: then it is missing).
SELECT {columns} FROM {state} AS s
WHERE NOT EXISTS (SELECT FROM {versions} AS v WHERE v.{key} = s.{key} AND v._batch_id > {r})
UNION ALL
SELECT {columns} FROM (
    SELECT DISTINCT ON (v.{key}) v.* FROM {versions} AS v
    WHERE v._batch_id <= {r}
      AND v.{key} IN (SELECT c.{key} FROM {versions} AS c WHERE c._batch_id > {r})
    ORDER BY v.{key}, v._batch_id DESC
) AS s
WHERE NOT s._deleted
