-- analytics.changed_order_items: every order item whose pending-items contribution may differ
-- from the snapshot's: items with a version staged after B (the _batch_id index) and items of
-- orders changed after B (the order_id index). For each: its contribution now and as of B,
-- i.e. its product and quanity (NULL = 0) when its order (now / as of B) exists and is open,
-- else 0. Latest versions are looked up through the (key, _batch_id) indexes.
-- kind: view
WITH keys AS (
    SELECT i.order_item_id
    FROM staging.order_items AS i
    WHERE i._batch_id > (SELECT s.historic_batch_id FROM analytics.snapshot AS s)
    UNION
    SELECT i.order_item_id
    FROM (
        SELECT DISTINCT o.order_id
        FROM staging.orders AS o
        WHERE o._batch_id > (SELECT s.historic_batch_id FROM analytics.snapshot AS s)
    ) AS co
    CROSS JOIN LATERAL (
        -- OFFSET 0 keeps this a per-order probe of the order_id index: the planner cannot
        -- estimate "_batch_id > B" (B is read at run time) and would otherwise hash-join a
        -- scan of every item
        SELECT i.order_item_id FROM staging.order_items AS i WHERE i.order_id = co.order_id OFFSET 0
    ) AS i
)
SELECT k.order_item_id,
       now_i.product_id,
       CASE WHEN now_o.status IS NOT NULL AND now_o.status <> 'COMPLETED'
            THEN coalesce(now_i.quanity, 0) ELSE 0 END AS quanity,
       before_i.product_id AS before_product_id,
       CASE WHEN before_o.status IS NOT NULL AND before_o.status <> 'COMPLETED'
            THEN coalesce(before_i.quanity, 0) ELSE 0 END AS before_quanity
FROM keys AS k
CROSS JOIN LATERAL (
    SELECT i.order_id, i.product_id, i.quanity
    FROM staging.order_items AS i
    WHERE i.order_item_id = k.order_item_id
    ORDER BY i._batch_id DESC
    LIMIT 1
) AS now_i
LEFT JOIN LATERAL (
    SELECT o.status
    FROM staging.orders AS o
    WHERE o.order_id = now_i.order_id
    ORDER BY o._batch_id DESC
    LIMIT 1
) AS now_o ON true
LEFT JOIN LATERAL (
    SELECT i.order_id, i.product_id, i.quanity
    FROM staging.order_items AS i
    WHERE i.order_item_id = k.order_item_id
      AND i._batch_id <= (SELECT s.historic_batch_id FROM analytics.snapshot AS s)
    ORDER BY i._batch_id DESC
    LIMIT 1
) AS before_i ON true
LEFT JOIN LATERAL (
    SELECT o.status
    FROM staging.orders AS o
    WHERE o.order_id = before_i.order_id
      AND o._batch_id <= (SELECT s.historic_batch_id FROM analytics.snapshot AS s)
    ORDER BY o._batch_id DESC
    LIMIT 1
) AS before_o ON true
