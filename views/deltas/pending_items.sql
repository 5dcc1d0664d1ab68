-- analytics.pending_items_delta: a batch's signed change of pending items per product: the
-- quanity of the items of OPEN orders (status not NULL and not COMPLETED; not only PENDING).
-- An item counts when it exists, has a product and its order exists and is open: before the
-- batch against orders_state (not yet updated), after it against the batch's order version
-- when the batch has one, else orders_state. Reads both temp tables of state/.
INSERT INTO analytics.pending_items_delta (batch_id, product_id, n)
SELECT %(batch)s, d.product_id, sum(d.n)
FROM (
    SELECT c.a_product_id AS product_id, coalesce(c.a_quanity, 0)::bigint AS n
    FROM _acme_item_changes AS c
    LEFT JOIN _acme_order_changes AS oc ON oc.order_id = c.a_order_id
    LEFT JOIN LATERAL (
        SELECT os.status FROM staging.orders_state AS os
        WHERE os.order_id = c.a_order_id AND oc.order_id IS NULL OFFSET 0
    ) AS os ON true
    WHERE c.a_exists AND c.a_product_id IS NOT NULL
      AND CASE WHEN oc.order_id IS NOT NULL THEN oc.a_exists AND (oc.a_status IS NOT NULL AND oc.a_status <> 'COMPLETED')
               ELSE (os.status IS NOT NULL AND os.status <> 'COMPLETED') END
    UNION ALL
    SELECT c.b_product_id, -coalesce(c.b_quanity, 0)::bigint
    FROM _acme_item_changes AS c
    CROSS JOIN LATERAL (
        SELECT os.status FROM staging.orders_state AS os WHERE os.order_id = c.b_order_id OFFSET 0
    ) AS os
    WHERE c.b_exists AND c.b_product_id IS NOT NULL AND (os.status IS NOT NULL AND os.status <> 'COMPLETED')
) AS d
GROUP BY d.product_id
HAVING sum(d.n) <> 0
