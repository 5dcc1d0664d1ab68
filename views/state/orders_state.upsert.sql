-- The batch's live orders that were already in the state, updated (the state after the batch).
INSERT INTO staging.orders_state AS s (order_id, delivery_date, customer_id, status, _batch_id)
SELECT c.order_id, c.a_delivery_date, c.a_customer_id, c.a_status, %(batch)s
FROM _acme_order_changes AS c WHERE c.a_exists AND c.b_exists
ON CONFLICT (order_id) DO UPDATE SET
    delivery_date = EXCLUDED.delivery_date, customer_id = EXCLUDED.customer_id,
    status = EXCLUDED.status, _batch_id = EXCLUDED._batch_id
