-- analytics.open_orders_delta: a batch's signed change of OPEN orders (status not NULL and not
-- COMPLETED) per (delivery_date, status): +1 for each order open after the batch, -1 for each
-- open before it. Reads state/order_changes.sql's temp table.
INSERT INTO analytics.open_orders_delta (batch_id, delivery_date, status, n)
SELECT %(batch)s, d.delivery_date, d.status, sum(d.n)
FROM _acme_order_changes AS c
CROSS JOIN LATERAL (VALUES
    (c.a_delivery_date, c.a_status, CASE WHEN c.a_exists THEN 1 ELSE 0 END),
    (c.b_delivery_date, c.b_status, CASE WHEN c.b_exists THEN -1 ELSE 0 END)
) AS d (delivery_date, status, n)
WHERE (d.status IS NOT NULL AND d.status <> 'COMPLETED')
GROUP BY d.delivery_date, d.status
HAVING sum(d.n) <> 0
