-- analytics.pending_items_{historic,current}: per product, the quanity (NULL as 0) of the items
-- of OPEN orders (status not NULL and not COMPLETED: "pending" items are those of open orders,
-- not only of PENDING ones; the report's name is the contract). Items whose order does not
-- exist do not count. From scratch over the latest-state tables (refresh --rebuild, verify);
-- each batch maintains it through deltas/pending_items.sql.
-- keys: product_id
-- counts: quanity of the items of open orders (status not NULL and not COMPLETED)
-- view: analytics.pending_items.pending_items
SELECT i.product_id, sum(coalesce(i.quanity, 0))::bigint AS n
FROM staging.order_items_state AS i JOIN staging.orders_state AS o ON o.order_id = i.order_id
WHERE o.status IS NOT NULL AND o.status <> 'COMPLETED' AND i.product_id IS NOT NULL
GROUP BY i.product_id
