-- analytics.open_orders: the open_orders report, unordered (exports sort it):
-- one row per (delivery_date, status) with at least one open order, NULL delivery dates included.
-- report: ORDER BY delivery_date NULLS LAST, status
-- kind: view
SELECT u.delivery_date, u.status, sum(u.n)::bigint AS open_orders
FROM (
    SELECT h.delivery_date, h.status, h.n FROM analytics.open_orders_historic AS h
    UNION ALL
    SELECT c.delivery_date, c.status, c.n FROM analytics.open_orders_current AS c
) AS u
GROUP BY u.delivery_date, u.status
HAVING sum(u.n) > 0
