-- Temp table _acme_item_changes: the order items a batch touched, before and after;
-- in_batch: the batch has a version of the item. {join}: as in order_changes.sql.
SELECT coalesce(n.order_item_id, s.order_item_id) AS order_item_id,
       n.order_item_id IS NOT NULL AS in_batch,
       s.order_item_id IS NOT NULL AS b_exists,
       s.order_id AS b_order_id, s.product_id AS b_product_id, s.quanity AS b_quanity,
       n.order_item_id IS NOT NULL AND NOT n._deleted AS a_exists,
       n.order_id AS a_order_id, n.product_id AS a_product_id, n.quanity AS a_quanity
FROM (SELECT i.order_item_id, i.order_id, i.product_id, i.quanity, i._deleted
      FROM staging.order_items AS i WHERE i._batch_id = %(batch)s) AS n
{join}
