-- analytics.open_orders_by_date: the full ranking behind top_dates, unordered:
-- open orders per delivery date (NULL included), every status together.
-- kind: view
SELECT o.delivery_date, sum(o.open_orders)::bigint AS open_orders
FROM analytics.open_orders AS o
GROUP BY o.delivery_date
