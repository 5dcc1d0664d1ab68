"""The one backoff rule: the run loop's retries and change capture's wait for a busy slot."""

from __future__ import annotations


def backoff_s(failures: int, *, first_s: float, max_s: float) -> float:
    """The wait after the ``failures``-th failure in a row (pure): ``first_s``, doubling,
    capped at ``max_s``; 0 before any failure."""
    if failures < 1:
        return 0.0
    return float(min(max_s, first_s * 2 ** min(failures - 1, 64)))
