-- Fragment {join} of order_changes.sql / item_changes.sql: the batch's rows n joined to their
-- state s before the batch. OFFSET 0: one primary-key probe per row of the batch, never a hash
-- join over the whole state. {state}: staging.<table>_state; {key}: its key column.
LEFT JOIN LATERAL (SELECT * FROM {state} AS s WHERE s.{key} = n.{key} OFFSET 0) AS s ON true
