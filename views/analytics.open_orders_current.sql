-- analytics.open_orders_current: the signed change of open orders per (delivery_date, status)
-- since the snapshot: +1 for each changed order's state now, -1 for its state as of B.
-- kind: materialized
-- unique: delivery_date, status
SELECT d.delivery_date, d.status, sum(d.n)::bigint AS n
FROM analytics.changed_orders AS c
CROSS JOIN LATERAL (VALUES
    (c.delivery_date, c.status, 1),
    (c.before_delivery_date, c.before_status, CASE WHEN c.existed_before THEN -1 ELSE 0 END)
) AS d (delivery_date, status, n)
WHERE d.status IS NOT NULL AND d.status <> 'COMPLETED'
GROUP BY d.delivery_date, d.status
HAVING sum(d.n) <> 0
