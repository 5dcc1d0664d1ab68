-- The batch's live items that were already in the state, updated (only those with a version
-- in the batch).
INSERT INTO staging.order_items_state AS s (order_item_id, order_id, product_id, quanity, _batch_id)
SELECT c.order_item_id, c.a_order_id, c.a_product_id, c.a_quanity, %(batch)s
FROM _acme_item_changes AS c WHERE c.a_exists AND c.in_batch AND c.b_exists
ON CONFLICT (order_item_id) DO UPDATE SET
    order_id = EXCLUDED.order_id, product_id = EXCLUDED.product_id,
    quanity = EXCLUDED.quanity, _batch_id = EXCLUDED._batch_id
