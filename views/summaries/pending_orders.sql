-- analytics.pending_orders_{historic,current}: PENDING orders (status = 'PENDING', not merely
-- open) per customer. From scratch over the latest-state tables (refresh --rebuild, verify);
-- each batch maintains it through deltas/pending_orders.sql.
-- keys: customer_id
-- counts: PENDING orders (status = 'PENDING')
-- view: analytics.pending_orders_by_customer.pending_orders
SELECT o.customer_id, count(*)::bigint AS n FROM staging.orders_state AS o
WHERE o.status = 'PENDING' AND o.customer_id IS NOT NULL GROUP BY o.customer_id
