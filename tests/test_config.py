from __future__ import annotations

import pytest

from acme_mv.config import MASK, Settings, mask_url, scrub
from acme_mv.errors import ConfigError


@pytest.mark.parametrize(
    ("url", "secret"),
    [
        ("postgresql://bob:s3cr3t@db.example:5432/acme", "s3cr3t"),
        ("postgres://bob:p%40ss@db/acme?sslmode=require", "p%40ss"),
        ("host=db user=bob password=s3cr3t dbname=acme", "s3cr3t"),
        ("host=db user=bob password='with space' dbname=acme", "with space"),
        ("postgresql:///acme?host=/tmp&password=s3cr3t", "s3cr3t"),
    ],
)
def test_mask_url_hides_the_password(url: str, secret: str) -> None:
    masked = mask_url(url)
    assert secret not in masked
    assert MASK in masked


def test_mask_url_leaves_passwordless_urls_alone() -> None:
    assert mask_url("postgresql://bob@db/acme") == "postgresql://bob@db/acme"


def test_scrub_removes_a_password_quoted_in_a_message() -> None:
    url = "postgresql://bob:hunter2@db/acme"
    assert "hunter2" not in scrub("failed for hunter2 at db", url)


def test_source_defaults_to_the_warehouse(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ACME_MV_SOURCE_URL", raising=False)
    s = Settings.from_env(database_url="postgresql:///wh")
    assert s.effective_source_url == "postgresql:///wh"
    s = Settings.from_env(database_url="postgresql:///wh", source_url="postgresql:///src")
    assert s.effective_source_url == "postgresql:///src"


def test_bad_timezone_is_rejected() -> None:
    with pytest.raises(ConfigError, match="Mars/Olympus"):
        Settings.from_env(database_url="", timezone="Mars/Olympus")


def test_bad_url_is_rejected_without_echoing_the_secret() -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env(database_url="host=db password=topsecret 'unterminated")
    assert "topsecret" not in str(info.value)
