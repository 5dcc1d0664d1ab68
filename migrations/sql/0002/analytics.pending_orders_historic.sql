-- analytics.pending_orders_historic: PENDING orders per customer as of the snapshot.
-- Orders without a customer_id are not a customer's and are left out.
-- kind: materialized
-- unique: customer_id
SELECT o.customer_id, count(*)::bigint AS n
FROM analytics.historic_orders AS o
WHERE o.status = 'PENDING' AND o.customer_id IS NOT NULL
GROUP BY o.customer_id
