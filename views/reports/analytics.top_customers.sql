-- analytics.top_customers: the 3 customers with the most PENDING orders; ties go to the lower
-- customer_id. Other limits: export --limit N.
-- report: TOP (export runs this SELECT with LIMIT n; its LIMIT is the default n)
-- kind: view
SELECT r.customer_id, r.customer_name, r.pending_orders
FROM analytics.pending_orders_by_customer AS r
ORDER BY r.pending_orders DESC, r.customer_id ASC
LIMIT 3
