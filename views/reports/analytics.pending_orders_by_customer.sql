-- analytics.pending_orders_by_customer: the full ranking behind top_customers, unordered:
-- one row per customer with at least one PENDING order; customer_name NULL when missing.
-- kind: view
SELECT u.customer_id, c.customer_name, u.pending_orders
FROM (
    SELECT x.customer_id, sum(x.n)::bigint AS pending_orders
    FROM (
        SELECT h.customer_id, h.n FROM analytics.pending_orders_historic AS h
        UNION ALL
        SELECT c.customer_id, c.n FROM analytics.pending_orders_current AS c
    ) AS x
    GROUP BY x.customer_id
    HAVING sum(x.n) > 0
) AS u
LEFT JOIN staging.customers AS c ON c.customer_id = u.customer_id
