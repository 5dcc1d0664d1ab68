-- The first batch into an empty state: nothing to subtract, one aggregate (see pending_orders.sql).
INSERT INTO analytics.pending_orders_delta (batch_id, customer_id, n)
SELECT %(batch)s, o.customer_id, count(*) FROM staging.orders AS o
WHERE o._batch_id = %(batch)s AND NOT o._deleted AND o.status = 'PENDING' AND o.customer_id IS NOT NULL
GROUP BY o.customer_id
