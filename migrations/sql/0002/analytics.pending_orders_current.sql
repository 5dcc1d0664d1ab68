-- analytics.pending_orders_current: the signed change of PENDING orders per customer since the
-- snapshot: +1 for each changed order's state now, -1 for its state as of B.
-- kind: materialized
-- unique: customer_id
SELECT d.customer_id, sum(d.n)::bigint AS n
FROM analytics.changed_orders AS c
CROSS JOIN LATERAL (VALUES
    (c.customer_id, c.status, 1),
    (c.before_customer_id, c.before_status, CASE WHEN c.existed_before THEN -1 ELSE 0 END)
) AS d (customer_id, status, n)
WHERE d.status = 'PENDING' AND d.customer_id IS NOT NULL
GROUP BY d.customer_id
HAVING sum(d.n) <> 0
