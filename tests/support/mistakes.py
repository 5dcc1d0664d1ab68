"""The table of user mistakes: what acme-mv answers to each (exit code and one line).

``tests/test_mistakes.py`` makes each mistake against real servers and checks the
exit code and that the line contains ``says``; docs/errors.md shows the same table
(a cog block calls :func:`markdown`), so the page cannot drift from what is tested.

``world`` names what the test sets up first (see the test); in ``args`` and
``env``, ``{db}`` is that world's database URL and the other ``{...}`` are URLs
the test makes (``URLS`` says how they are shown in the docs).
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: how the placeholders of ``args`` and ``env`` read in the docs
URLS = {
    "{db}": "postgresql://acme@db/acme",
    "{empty}": "postgresql://acme@db/empty",
    "{nodb}": "postgresql://acme@db/no_such_db",
    "{badpw}": "postgresql://acme:WRONG@db/acme",
    "{badhost}": "postgresql://acme@no-such-host.invalid/acme",
    "{refused}": "postgresql://acme@127.0.0.1:1/acme",
    "{nosocket}": "",  # none set: libpq's local socket, where no server listens
    "{reader}": "postgresql://reader@db/acme",
    "{atpw}": "postgresql://acme:p@ss@db/acme",
    "{smtp_plain}": "smtp://mail:25 (a relay without TLS)",
    "{smtps_plain}": "smtps://mail:25 (a relay without TLS)",
}


@dataclass(frozen=True)
class Mistake:
    id: str
    #: the mistake, in words
    what: str
    args: tuple[str, ...]
    exit_code: int
    #: a part of the one line acme-mv prints: what failed and how to fix it
    says: str
    #: what the test sets up: none, migrated (source + warehouse in one database, no rows),
    #: refreshed (rows synced and refreshed), empty (a database with nothing), no_source
    #: (a migrated warehouse, the source URL an empty database), reader (a role with CONNECT
    #: only), granted_reader (refreshed reports, a role given them by grant-reader),
    #: smtp_plain (refreshed reports, a relay without TLS)
    world: str = "migrated"
    #: environment settings besides the world's ACME_MV_DATABASE_URL
    env: dict[str, str] = field(default_factory=dict)
    #: Ctrl-C while the command waits (the test holds a lock the command waits for)
    interrupt: bool = False


M = Mistake
MISTAKES: tuple[Mistake, ...] = (
    # --- where the databases are
    M("no_socket", "No URL set, and no server on the local socket (the demo's server is "
      "embedded and stopped)", ("status",), 1, "acme-mv demo --serve",
      world="none", env={"ACME_MV_DATABASE_URL": "{nosocket}"}),
    M("serve_no_socket", "`serve` with no server on the local socket", ("serve",), 1,
      "no PostgreSQL server listens on that local socket",
      world="none", env={"ACME_MV_DATABASE_URL": "{nosocket}"}),
    M("wrong_password", "A wrong password", ("status",), 1,
      "check the user name and the password", world="none",
      env={"ACME_MV_DATABASE_URL": "{badpw}"}),
    M("unknown_host", "A host name that does not resolve", ("status",), 1,
      "check the host name", world="none", env={"ACME_MV_DATABASE_URL": "{badhost}"}),
    M("connection_refused", "No server at that host and port", ("status",), 1,
      "are the host and port", world="none", env={"ACME_MV_DATABASE_URL": "{refused}"}),
    M("missing_database", "A database that does not exist", ("status",), 1,
      "create the database (createdb NAME)", world="none",
      env={"ACME_MV_DATABASE_URL": "{nodb}"}),
    M("unencoded_password", "A password with an unencoded @ in the URL", ("status",), 1,
      "percent-encode it", world="none", env={"ACME_MV_DATABASE_URL": "{atpw}"}),
    M("malformed_url", "A URL libpq cannot parse", ("status",), 1,
      "is not a valid PostgreSQL URL", world="none",
      env={"ACME_MV_DATABASE_URL": "postgresql://db/acme?sslmode"}),
    M("unknown_timezone", "An unknown time zone", ("--timezone", "Mars/Olympus", "status"), 1,
      "use an IANA name such as UTC or Europe/Berlin", world="none"),
    M("no_operations_schema", "The source URL points at a database without the `operations` "
      "schema", ("sync",), 1, "create them there with `acme-mv sample init`",
      world="no_source", env={"ACME_MV_SOURCE_URL": "{empty}"}),
    M("run_no_operations_schema", "`run` against a source without the `operations` schema",
      ("run", "--once"), 1, "point --source-url (ACME_MV_SOURCE_URL) at the transactional",
      world="no_source", env={"ACME_MV_SOURCE_URL": "{empty}"}),
    # --- the warehouse's state
    M("status_unmigrated", "`status` on a warehouse never migrated", ("status",), 1,
      "Run `acme-mv migrate` first", world="empty"),
    M("serve_unmigrated", "`serve` on a warehouse never migrated (refused at start)",
      ("serve", "--port", "0"), 1, "Run `acme-mv migrate` first", world="empty"),
    M("export_before_refresh", "`export` before the first refresh", ("export", "open_orders",
      "--output", "-"), 1, "acme-mv refresh"),
    M("reader_no_grant", "A role that was not granted the reports", ("export", "open_orders",
      "--output", "-"), 1, "needs: GRANT USAGE ON SCHEMA", world="reader"),
    M("reader_status", "`status` as a report reader (set up by `grant-reader`)", ("status",), 1,
      "which a report reader may not read: run it as the warehouse role",
      world="granted_reader"),
    M("reader_as_of", "`export --as-of` as a report reader", ("export", "open_orders",
      "--as-of", "2026-11-25 17:00", "--output", "-"), 1,
      "or export the current report without --as-of", world="granted_reader"),
    M("reader_detail", "`detail` as a report reader", ("detail", "top_customers", "--where",
      "customer_id=1"), 1, "`detail` reads the staged data (schema staging), which a report "
      "reader may not read", world="granted_reader"),
    # --- options
    M("unknown_report", "An unknown report name", ("export", "open_order"), 2,
      "the reports are: open_orders"),
    M("export_no_report", "`export` without a report", ("export",), 2, "or use --all"),
    M("detail_unknown_column", "`detail --where` a column that is not the report row's key",
      ("detail", "top_dates", "--where", "status=PENDING"), 2, "its keys are: delivery_date"),
    M("bad_as_of", "`--as-of` that is not a time", ("export", "open_orders", "--as-of",
      "yesterday"), 2, "is not a time such as '2026-11-25 17:00'"),
    M("bad_format", "An unknown export format", ("export", "open_orders", "--format", "xml"), 2,
      "use csv or json"),
    M("unknown_table", "An unknown table for `sync --table`", ("sync", "--table", "order"), 2,
      "choose from customers, products, orders, order_items"),
    M("bad_log_format", "An unknown log format", ("--log-format", "xml", "status"), 2,
      "is not one of auto, plain, rich, json", world="none"),
    M("interval_with_cdc", "`--interval` with `run --cdc`", ("run", "--cdc", "--interval", "5s"),
      2, "--interval does not apply to --cdc", world="none"),
    M("slot_without_cdc", "`--slot` without `--cdc`", ("run", "--slot", "s1"), 2,
      "add --cdc or drop it", world="none"),
    M("mail_at_without_to", "`--mail-at` without recipients", ("run", "--mail-at", "07:00"), 1,
      "--mail-at needs --mail-to", world="none"),
    M("bad_duration", "A duration acme-mv cannot read", ("run", "--max-backoff", "1 minute"), 2,
      "--max-backoff: '1 minute'", world="none"),
    # --- mail
    M("semicolon_addresses", "Recipients separated by a semicolon", ("mail", "--to",
      "a@example.com;b@example.com"), 2, "separate addresses with commas", world="none"),
    M("no_smtp_url", "`mail` with no SMTP server set", ("mail", "--to", "lead@example.com"), 1,
      "ACME_MV_SMTP_URL", world="none"),
    M("smtp_without_tls", "`smtp://` (STARTTLS) to a relay without TLS", ("mail", "--to",
      "lead@example.com"), 1, "smtp+insecure://", world="smtp_plain",
      env={"ACME_MV_SMTP_URL": "{smtp_plain}"}),
    M("smtps_plain_server", "`smtps://` (implicit TLS) to a relay without TLS", ("mail", "--to",
      "lead@example.com"), 1, "smtps:// is implicit TLS", world="smtp_plain",
      env={"ACME_MV_SMTP_URL": "{smtps_plain}"}),
    # --- interrupted
    M("ctrl_c_sync", "Ctrl-C while `sync` runs", ("sync",), 130,
      "Interrupted (Ctrl-C); the transaction in progress was rolled back", interrupt=True),
)  # fmt: skip


def _shown(text: str) -> str:
    for placeholder, shown in URLS.items():
        text = text.replace(placeholder, shown)
    return text


def markdown() -> str:
    """The table of docs/errors.md."""
    lines = [
        "| Mistake | Command | Exit | The line says (part) |",
        "| --- | --- | --- | --- |",
    ]
    for m in MISTAKES:
        env = " ".join(f"{k}='{_shown(v)}'" for k, v in m.env.items() if _shown(v))
        command = " ".join(a if " " not in a and ";" not in a else f"'{a}'" for a in m.args)
        shown = f"{env + ' ' if env else ''}acme-mv {command}".replace("|", "\\|")
        lines.append(
            f"| {m.what} | `{shown}` | {m.exit_code} | {m.says.replace('|', chr(92) + '|')} |"
        )
    return "\n".join(lines) + "\n"
