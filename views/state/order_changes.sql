-- Temp table _acme_order_changes: the orders a batch touched, before (b_*: the state table)
-- and after (a_*: the batch's version; a tombstone, _deleted, does not exist after).
-- This SELECT fills it ({join}: _join_probe.sql); acme_mv/staging/apply.py creates it from the
-- same SELECT once per session. Read by every order-level delta (deltas/open_orders.sql, ...).
SELECT coalesce(n.order_id, s.order_id) AS order_id,
       s.order_id IS NOT NULL AS b_exists,
       s.delivery_date AS b_delivery_date, s.customer_id AS b_customer_id, s.status AS b_status,
       n.order_id IS NOT NULL AND NOT n._deleted AS a_exists,
       n.delivery_date AS a_delivery_date, n.customer_id AS a_customer_id, n.status AS a_status
FROM (SELECT o.order_id, o.delivery_date, o.customer_id, o.status, o._deleted
      FROM staging.orders AS o WHERE o._batch_id = %(batch)s) AS n
{join}
