-- analytics.changed_order_items: every order item whose pending-items contribution may differ
-- from the snapshot's: items with a version staged after B (the _batch_id index) and items of
-- orders that opened or closed after B (the order_id index). For each: its contribution now
-- and as of B, i.e. its product and quanity (NULL = 0) when its order (now / as of B) exists
-- and is open, else 0. One index probe per item: its state as of B (the (key, _batch_id) index); its state
-- now is its newest version after B when it has one (read with the keys), else the same.
-- kind: view
WITH after_b AS (
    -- the newest version after B of every item staged after B
    SELECT DISTINCT ON (i.order_item_id) i.order_item_id, i.order_id, i.product_id, i.quanity
    FROM (
        -- OFFSET 0: read through the _batch_id index, then sort the few rows; the planner
        -- cannot estimate "_batch_id > B" (B is read at run time) and would otherwise walk
        -- the whole (order_item_id, _batch_id) index to avoid the sort
        SELECT i.order_item_id, i.order_id, i.product_id, i.quanity, i._batch_id
        FROM staging.order_items AS i
        WHERE i._batch_id > (SELECT s.historic_batch_id FROM analytics.snapshot AS s)
        OFFSET 0
    ) AS i
    ORDER BY i.order_item_id, i._batch_id DESC
),
of_changed_orders AS (
    -- the items of the orders changed after B that opened or closed (or came to exist open)
    -- since B: an item with no version after B contributes its quanity when its order is
    -- open, so its contribution changed only if its order's open state did
    SELECT DISTINCT i.order_item_id
    FROM (
        SELECT c.order_id
        FROM analytics.changed_orders AS c
        WHERE (c.status IS NOT NULL AND c.status <> 'COMPLETED')
           <> (c.before_status IS NOT NULL AND c.before_status <> 'COMPLETED')
    ) AS co
    CROSS JOIN LATERAL (
        -- OFFSET 0 keeps this a per-order probe of the order_id index (not a hash join over
        -- a scan of every item)
        SELECT i.order_item_id FROM staging.order_items AS i WHERE i.order_id = co.order_id OFFSET 0
    ) AS i
),
states AS MATERIALIZED (
    -- per item: its state now (the newest version after B, else its state as of B) and as of B
    SELECT k.order_item_id,
           CASE WHEN a.order_item_id IS NOT NULL THEN a.order_id ELSE b.order_id END AS order_id,
           CASE WHEN a.order_item_id IS NOT NULL THEN a.product_id ELSE b.product_id END AS product_id,
           CASE WHEN a.order_item_id IS NOT NULL THEN a.quanity ELSE b.quanity END AS quanity,
           b.order_id AS before_order_id,
           b.product_id AS before_product_id,
           b.quanity AS before_quanity
    FROM after_b AS a
    FULL JOIN of_changed_orders AS c ON c.order_item_id = a.order_item_id
    CROSS JOIN LATERAL (SELECT coalesce(a.order_item_id, c.order_item_id) AS order_item_id) AS k
    LEFT JOIN LATERAL (
        SELECT i.order_id, i.product_id, i.quanity
        FROM staging.order_items AS i
        WHERE i.order_item_id = k.order_item_id
          AND i._batch_id <= (SELECT s.historic_batch_id FROM analytics.snapshot AS s)
        ORDER BY i._batch_id DESC
        LIMIT 1
    ) AS b ON true
),
open_now AS (
    -- the orders of those items (a few per thousand items), open now?
    SELECT d.order_id, o.status IS NOT NULL AND o.status <> 'COMPLETED' AS open
    FROM (SELECT DISTINCT st.order_id FROM states AS st WHERE st.order_id IS NOT NULL) AS d
    CROSS JOIN LATERAL (
        SELECT o.status FROM staging.orders AS o
        WHERE o.order_id = d.order_id
        ORDER BY o._batch_id DESC
        LIMIT 1
    ) AS o
),
open_before AS (
    -- ... and open as of B?
    SELECT d.order_id, o.status IS NOT NULL AND o.status <> 'COMPLETED' AS open
    FROM (SELECT DISTINCT st.before_order_id AS order_id FROM states AS st WHERE st.before_order_id IS NOT NULL) AS d
    CROSS JOIN LATERAL (
        SELECT o.status FROM staging.orders AS o
        WHERE o.order_id = d.order_id
          AND o._batch_id <= (SELECT s.historic_batch_id FROM analytics.snapshot AS s)
        ORDER BY o._batch_id DESC
        LIMIT 1
    ) AS o
)
SELECT st.order_item_id,
       st.product_id,
       CASE WHEN n.open THEN coalesce(st.quanity, 0) ELSE 0 END AS quanity,
       st.before_product_id,
       CASE WHEN b.open THEN coalesce(st.before_quanity, 0) ELSE 0 END AS before_quanity
FROM states AS st
LEFT JOIN open_now AS n ON n.order_id = st.order_id
LEFT JOIN open_before AS b ON b.order_id = st.before_order_id
