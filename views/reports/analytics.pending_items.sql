-- analytics.pending_items: the pending_items report, unordered (exports sort it):
-- one row per product with pending items > 0; product_name NULL when the product is missing.
-- report: ORDER BY product_id
-- kind: view
SELECT u.product_id, p.product_name, u.pending_items
FROM (
    SELECT x.product_id, sum(x.n)::bigint AS pending_items
    FROM (
        SELECT h.product_id, h.n FROM analytics.pending_items_historic AS h
        UNION ALL
        SELECT c.product_id, c.n FROM analytics.pending_items_current AS c
    ) AS x
    GROUP BY x.product_id
    HAVING sum(x.n) > 0
) AS u
LEFT JOIN staging.products AS p ON p.product_id = u.product_id
