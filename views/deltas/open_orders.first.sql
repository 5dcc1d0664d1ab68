-- The first batch into an empty state: nothing to subtract, one aggregate (see open_orders.sql).
INSERT INTO analytics.open_orders_delta (batch_id, delivery_date, status, n)
SELECT %(batch)s, o.delivery_date, o.status, count(*) FROM staging.orders AS o
WHERE o._batch_id = %(batch)s AND NOT o._deleted AND o.status IS NOT NULL AND o.status <> 'COMPLETED'
GROUP BY o.delivery_date, o.status
