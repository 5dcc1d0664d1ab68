-- analytics.pending_items_current: the signed change of pending items per product since the
-- snapshot: each changed item's contribution now minus its contribution as of B.
-- kind: materialized
-- unique: product_id
SELECT d.product_id, sum(d.n)::bigint AS n
FROM analytics.changed_order_items AS c
CROSS JOIN LATERAL (VALUES
    (c.product_id, c.quanity::bigint),
    (c.before_product_id, -c.before_quanity::bigint)
) AS d (product_id, n)
WHERE d.product_id IS NOT NULL
GROUP BY d.product_id
HAVING sum(d.n) <> 0
