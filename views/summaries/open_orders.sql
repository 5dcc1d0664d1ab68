-- analytics.open_orders_{historic,current}: OPEN orders (status not NULL and not COMPLETED)
-- per (delivery_date, status), NULL delivery dates included. This file: the summary from
-- scratch over the latest-state tables (refresh --rebuild writes it into the historic table,
-- verify compares the union view with it); each batch maintains it through
-- deltas/open_orders.sql. Its tables are unique on md5(status), not on the status itself: a
-- status (any text, any length) may be longer than a B-tree entry holds (2.7 kB).
-- keys: delivery_date, status
-- unique: delivery_date, md5(status)
-- counts: open orders (status not NULL and not COMPLETED)
-- view: analytics.open_orders.open_orders
SELECT o.delivery_date, o.status, count(*)::bigint AS n FROM staging.orders_state AS o
WHERE o.status IS NOT NULL AND o.status <> 'COMPLETED' GROUP BY o.delivery_date, o.status
