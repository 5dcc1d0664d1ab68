-- analytics.open_orders_historic: open orders per (delivery_date, status) as of the snapshot.
-- Every group is kept (no > 0 filter) so that historic + current stays a plain sum.
-- kind: materialized
-- unique: delivery_date, status
SELECT o.delivery_date, o.status, count(*)::bigint AS n
FROM analytics.historic_orders AS o
WHERE o.status IS NOT NULL AND o.status <> 'COMPLETED'
GROUP BY o.delivery_date, o.status
