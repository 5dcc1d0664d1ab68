-- The items the batch deleted leave the state.
DELETE FROM staging.order_items_state AS s USING _acme_item_changes AS c
WHERE s.order_item_id = c.order_item_id AND c.b_exists AND NOT c.a_exists
