-- Fragment {join} for a batch that re-copied the table whole: also visits the state's keys the
-- batch did not bring (gone at the source).
FULL JOIN {state} AS s ON s.{key} = n.{key}
