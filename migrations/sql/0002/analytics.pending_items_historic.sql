-- analytics.pending_items_historic: pending items (sum of quanity, NULL = 0) per product over the
-- items of open orders, as of the snapshot. Items of a missing order and items without a
-- product_id are left out.
-- kind: materialized
-- unique: product_id
SELECT i.product_id, sum(coalesce(i.quanity, 0))::bigint AS n
FROM analytics.historic_order_items AS i
JOIN analytics.historic_orders AS o ON o.order_id = i.order_id
WHERE o.status IS NOT NULL AND o.status <> 'COMPLETED'
  AND i.product_id IS NOT NULL
GROUP BY i.product_id
