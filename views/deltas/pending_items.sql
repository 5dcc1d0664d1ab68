-- analytics.pending_items_delta: a batch's signed change of pending items per product: the
-- quanity of the items of OPEN orders (status not NULL and not COMPLETED; not only PENDING).
-- An item counts when it exists, has a product and its order exists and is open. Its order's
-- state before and after the batch: the batch's order changes when the batch has the order
-- (a hash lookup), else orders_state (one probe; not yet updated, so it is both). Third part:
-- the unchanged items (no version in the batch) of the orders whose "exists and is open"
-- flipped, summed straight from order_items_state (+quanity when the order opened, -quanity
-- when it closed). Reads both temp tables of state/.
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
    LEFT JOIN _acme_order_changes AS oc ON oc.order_id = c.b_order_id
    LEFT JOIN LATERAL (
        SELECT os.status FROM staging.orders_state AS os
        WHERE os.order_id = c.b_order_id AND oc.order_id IS NULL OFFSET 0
    ) AS os ON true
    WHERE c.b_exists AND c.b_product_id IS NOT NULL
      AND CASE WHEN oc.order_id IS NOT NULL THEN oc.b_exists AND (oc.b_status IS NOT NULL AND oc.b_status <> 'COMPLETED')
               ELSE (os.status IS NOT NULL AND os.status <> 'COMPLETED') END
    UNION ALL
    SELECT s.product_id, CASE WHEN f.a_open THEN 1 ELSE -1 END * coalesce(s.quanity, 0)::bigint
    FROM (SELECT c.order_id, c.a_exists AND (c.a_status IS NOT NULL AND c.a_status <> 'COMPLETED') AS a_open
          FROM _acme_order_changes AS c
          WHERE (c.b_exists AND (c.b_status IS NOT NULL AND c.b_status <> 'COMPLETED')) <> (c.a_exists AND (c.a_status IS NOT NULL AND c.a_status <> 'COMPLETED'))) AS f
    CROSS JOIN LATERAL (
        -- OFFSET 0: one probe of the order_id index per order, never a scan of every item
        SELECT s.* FROM staging.order_items_state AS s WHERE s.order_id = f.order_id OFFSET 0
    ) AS s
    WHERE s.product_id IS NOT NULL
      AND NOT EXISTS (SELECT 1 FROM _acme_item_changes AS c WHERE c.order_item_id = s.order_item_id)
) AS d
GROUP BY d.product_id
HAVING sum(d.n) <> 0
