"""`acme-mv demo` end to end: its own embedded server, sample source, the whole pipeline."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.cli_runner import run


def test_demo_runs_the_whole_job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACME_MV_CACHE_DIR", str(tmp_path / "cache"))
    for var in ("ACME_MV_DATABASE_URL", "ACME_MV_SOURCE_URL", "ACME_MV_TIMEZONE"):
        monkeypatch.delenv(var, raising=False)
    out = tmp_path / "exports"
    res = run("demo", "--orders", "300", "--simulate", "1", "--output-dir", str(out))
    assert res.exit_code == 0, res.stderr
    for report in ("open_orders", "top_dates", "pending_items", "top_customers"):
        assert report in res.stdout
        files = list(out.glob(f"{report}_result_*.csv"))
        assert len(files) == 1
        assert files[0].read_text().splitlines()[0] in {
            "delivery_date,status,open_orders",
            "delivery_date,open_orders",
            "product_id,product_name,pending_items",
            "customer_id,customer_name,pending_orders",
        }
    assert "demo finished" in res.stderr
    # a second run reuses the server and the source
    again = run("demo", "--simulate", "0", "--output-dir", str(out))
    assert again.exit_code == 0, again.stderr
    assert "reused" in again.stderr
