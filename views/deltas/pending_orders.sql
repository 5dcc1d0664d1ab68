-- analytics.pending_orders_delta: a batch's signed change of PENDING orders (status = 'PENDING',
-- not merely open) per customer. Reads state/order_changes.sql's temp table.
INSERT INTO analytics.pending_orders_delta (batch_id, customer_id, n)
SELECT %(batch)s, d.customer_id, sum(d.n)
FROM _acme_order_changes AS c
CROSS JOIN LATERAL (VALUES
    (c.a_customer_id, c.a_status, CASE WHEN c.a_exists THEN 1 ELSE 0 END),
    (c.b_customer_id, c.b_status, CASE WHEN c.b_exists THEN -1 ELSE 0 END)
) AS d (customer_id, status, n)
WHERE d.status = 'PENDING' AND d.customer_id IS NOT NULL
GROUP BY d.customer_id
HAVING sum(d.n) <> 0
