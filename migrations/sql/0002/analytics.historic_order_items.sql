-- analytics.historic_order_items: the latest version of every order item staged in a batch <= B.
-- kind: view
SELECT DISTINCT ON (i.order_item_id)
       i.order_item_id, i.order_id, i.product_id, i.quanity
FROM staging.order_items AS i
WHERE i._batch_id <= (SELECT s.historic_batch_id FROM analytics.snapshot AS s)
ORDER BY i.order_item_id, i._batch_id DESC
