-- The batch's live orders new to the state: a plain INSERT (batches are serialized, so no row
-- can be there), cheaper than ON CONFLICT's speculative insertion. Runs before the upsert.
INSERT INTO staging.orders_state (order_id, delivery_date, customer_id, status, _batch_id)
SELECT c.order_id, c.a_delivery_date, c.a_customer_id, c.a_status, %(batch)s
FROM _acme_order_changes AS c WHERE c.a_exists AND NOT c.b_exists
