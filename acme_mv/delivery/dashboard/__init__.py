"""``acme-mv serve``: a live, read-only page of the four reports (see :mod:`.app`)."""
