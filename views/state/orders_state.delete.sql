-- The orders the batch deleted (tombstones, or gone from a whole re-copy) leave the state.
DELETE FROM staging.orders_state AS s USING _acme_order_changes AS c
WHERE s.order_id = c.order_id AND c.b_exists AND NOT c.a_exists
