-- analytics.changed_orders: every order with a version staged after the snapshot (batch > B),
-- found through the _batch_id index, with its state now and its state as of B (NULLs with
-- existed_before = false when it did not exist then), looked up through the (order_id, _batch_id)
-- index. Never a scan of staging.orders.
-- kind: view
SELECT c.order_id,
       c.delivery_date, c.customer_id, c.status,
       b.order_id IS NOT NULL AS existed_before,
       b.delivery_date AS before_delivery_date,
       b.customer_id AS before_customer_id,
       b.status AS before_status
FROM (
    SELECT DISTINCT ON (o.order_id) o.order_id, o.delivery_date, o.customer_id, o.status
    FROM (
        -- OFFSET 0: read through the _batch_id index, then sort the few rows; the planner
        -- cannot estimate "_batch_id > B" (B is read at run time) and would otherwise walk
        -- the whole (order_id, _batch_id) index to avoid the sort
        SELECT o.order_id, o.delivery_date, o.customer_id, o.status, o._batch_id
        FROM staging.orders AS o
        WHERE o._batch_id > (SELECT s.historic_batch_id FROM analytics.snapshot AS s)
        OFFSET 0
    ) AS o
    ORDER BY o.order_id, o._batch_id DESC
) AS c
LEFT JOIN LATERAL (
    SELECT o.order_id, o.delivery_date, o.customer_id, o.status
    FROM staging.orders AS o
    WHERE o.order_id = c.order_id
      AND o._batch_id <= (SELECT s.historic_batch_id FROM analytics.snapshot AS s)
    ORDER BY o._batch_id DESC
    LIMIT 1
) AS b ON true
