-- analytics.historic_orders: the latest version of every order staged in a batch <= B,
-- B = analytics.snapshot.historic_batch_id (the state of the orders at the snapshot).
-- kind: view
SELECT DISTINCT ON (o.order_id)
       o.order_id, o.delivery_date, o.customer_id, o.status
FROM staging.orders AS o
WHERE o._batch_id <= (SELECT s.historic_batch_id FROM analytics.snapshot AS s)
ORDER BY o.order_id, o._batch_id DESC
