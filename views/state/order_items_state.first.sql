-- The first batch into an empty state: its live items, one bulk insert.
INSERT INTO staging.order_items_state (order_item_id, order_id, product_id, quanity, _batch_id)
SELECT i.order_item_id, i.order_id, i.product_id, i.quanity, i._batch_id FROM staging.order_items AS i
WHERE i._batch_id = %(batch)s AND NOT i._deleted
