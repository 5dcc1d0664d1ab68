from __future__ import annotations

import psycopg.conninfo
import pytest

from acme_mv.config import MASK, Settings, describe_target, mask_url, scrub
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
    with pytest.raises(ConfigError, match="Mars/Olympus") as info:
        Settings.from_env(database_url="", timezone="Mars/Olympus")
    assert info.value.setting == "ACME_MV_TIMEZONE"


def test_bad_url_is_rejected_without_echoing_the_secret() -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env(database_url="host=db password=topsecret 'unterminated")
    assert "topsecret" not in str(info.value)


@pytest.mark.parametrize(
    ("url", "pieces"),
    [
        pytest.param(
            "postgresql://wh:Pass@77@127.0.0.1:5432/db", ["Pass", "77"], id="one_unencoded_at"
        ),
        pytest.param(
            "postgresql://wh:a@b@c@host:5/db?sslmode=require",
            ["a@b@c", "b@c"],
            id="two_unencoded_ats",
        ),
        pytest.param("postgresql://wh:p/ss@host/db", ["p/ss", "ss@host"], id="unencoded_slash"),
        pytest.param("postgres://u:x@y@host/db?application_name=a", ["x@y"], id="with_query"),
    ],
)
def test_a_password_libpq_would_cut_is_refused_and_masked_whole(
    url: str, pieces: list[str]
) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env(database_url=url)
    message = str(info.value)
    assert "malformed" in message and "%40" in message
    for shown in (message, mask_url(url), describe_target(url), scrub(f"failed for {url}", url)):
        for piece in pieces:
            assert piece not in shown, shown


@pytest.mark.parametrize(
    ("url", "parts"),
    [
        pytest.param(
            "postgresql://wh:p%40ss@host/db",
            {"user": "wh", "password": "p@ss", "host": "host", "dbname": "db"},
            id="encoded_at",
        ),
        pytest.param(
            "postgresql://wh:p?ss@host/db",
            {"user": "wh", "password": "p?ss", "host": "host", "dbname": "db"},
            id="question_mark_libpq_keeps",
        ),
        pytest.param(
            "postgresql://host:5432/db?user=a@b",
            {"user": "a@b", "host": "host", "port": "5432", "dbname": "db"},
            id="at_in_the_query",
        ),
        pytest.param(
            "postgresql://wh@host/db",
            {"user": "wh", "host": "host", "dbname": "db"},
            id="no_password",
        ),
    ],
)
def test_well_formed_urls_are_accepted_as_libpq_reads_them(
    url: str, parts: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ACME_MV_SOURCE_URL", raising=False)
    settings = Settings.from_env(database_url=url)
    assert settings.database_url == url
    assert settings.effective_source_url == url  # an empty source means the warehouse
    assert psycopg.conninfo.conninfo_to_dict(settings.database_url) == parts
    if "password" in parts:
        assert parts["password"] not in mask_url(url) and MASK in mask_url(url)
    else:
        assert mask_url(url) == url


def test_mask_url_in_a_message_quoting_two_urls() -> None:
    text = "a postgresql://u:one@h/db and postgresql://v:two@k/db"
    assert mask_url(text) == f"a postgresql://u:{MASK}@h/db and postgresql://v:{MASK}@k/db"
