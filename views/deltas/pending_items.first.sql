-- The first batch into an empty state: nothing to subtract, one aggregate (see pending_items.sql).
INSERT INTO analytics.pending_items_delta (batch_id, product_id, n)
SELECT %(batch)s, i.product_id, sum(coalesce(i.quanity, 0))
FROM staging.order_items AS i
JOIN staging.orders AS o ON o.order_id = i.order_id AND o._batch_id = %(batch)s
WHERE i._batch_id = %(batch)s AND NOT i._deleted AND NOT o._deleted AND i.product_id IS NOT NULL
  AND o.status IS NOT NULL AND o.status <> 'COMPLETED'
GROUP BY i.product_id
HAVING sum(coalesce(i.quanity, 0)) <> 0
