-- Adds to _acme_item_changes, in an incremental batch, the unchanged items of the orders whose
-- "exists and is open" (open: status not NULL and not COMPLETED) differs before and after the
-- batch: their contribution to pending_items changes although the items did not.
INSERT INTO _acme_item_changes
SELECT s.order_item_id, false, true, s.order_id, s.product_id, s.quanity,
       true, s.order_id, s.product_id, s.quanity
FROM (SELECT c.order_id FROM _acme_order_changes AS c
    WHERE (c.b_exists AND (c.b_status IS NOT NULL AND c.b_status <> 'COMPLETED')) <> (c.a_exists AND (c.a_status IS NOT NULL AND c.a_status <> 'COMPLETED'))) AS f
CROSS JOIN LATERAL (
    -- OFFSET 0: one probe of the order_id index per order, never a scan of every item
    SELECT s.* FROM staging.order_items_state AS s WHERE s.order_id = f.order_id OFFSET 0
) AS s
WHERE NOT EXISTS (SELECT 1 FROM _acme_item_changes AS c WHERE c.order_item_id = s.order_item_id)
