-- analytics.top_dates: the 3 delivery dates with the most open orders; ties go to the earlier
-- date, a NULL delivery date after every real date. Other limits: export --limit N.
-- report: TOP (export runs this SELECT with LIMIT n; its LIMIT is the default n)
-- kind: view
SELECT r.delivery_date, r.open_orders
FROM analytics.open_orders_by_date AS r
ORDER BY r.open_orders DESC, r.delivery_date ASC NULLS LAST
LIMIT 3
