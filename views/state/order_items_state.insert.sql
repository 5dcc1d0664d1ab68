-- The batch's live items new to the state: a plain INSERT, before the upsert (see
-- orders_state.insert.sql).
INSERT INTO staging.order_items_state (order_item_id, order_id, product_id, quanity, _batch_id)
SELECT c.order_item_id, c.a_order_id, c.a_product_id, c.a_quanity, %(batch)s
FROM _acme_item_changes AS c WHERE c.a_exists AND c.in_batch AND NOT c.b_exists
