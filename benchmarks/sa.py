"""SQLAlchemy engines (psycopg 3 driver) for the pandas and dlt baselines."""

from __future__ import annotations

from typing import Any

from psycopg.conninfo import conninfo_to_dict
from sqlalchemy.engine import URL


def sqlalchemy_url(url: str, *, driver: str = "psycopg") -> URL:
    """A libpq URL/DSN as a SQLAlchemy URL (socket hosts and all)."""
    params: dict[str, Any] = dict(conninfo_to_dict(url))
    host = params.pop("host", None)
    query = {
        k: str(v) for k, v in params.items() if k not in {"user", "password", "port", "dbname"}
    }
    socket = bool(host and str(host).startswith("/"))
    if socket:
        query["host"] = str(host)
    return URL.create(
        f"postgresql+{driver}",
        username=params.get("user") or None,
        password=params.get("password") or None,
        host=None if socket else (str(host) if host else None),
        port=int(params["port"]) if params.get("port") and not socket else None,
        database=params.get("dbname") or None,
        query=query,
    )
