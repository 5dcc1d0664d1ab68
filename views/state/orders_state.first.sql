-- The first batch into an empty state: its live orders, one bulk insert.
INSERT INTO staging.orders_state (order_id, delivery_date, customer_id, status, _batch_id)
SELECT o.order_id, o.delivery_date, o.customer_id, o.status, o._batch_id FROM staging.orders AS o
WHERE o._batch_id = %(batch)s AND NOT o._deleted
