"""The fixtures live in ``tests/support/`` and are loaded here as plugins (as psycopg does).

- ``database``: a real PostgreSQL under every test (``server_url``, ``make_db``, ``db_url``,
  ``source_url``, ``warehouse_url``, ``empty_url``);
- ``roles``: login roles with passwords (``make_role``, ``password_role_url``);
- ``cli_runner``: the CLI in-process (``cli_env``); ``cdc_helpers``: a real slot (``slot_name``);
- ``sync_helpers``: the sync's timing knobs for tests (``no_safety_margin``, ``small_partitions``);
- ``delivery_data``: the reports' dataset, synced and refreshed (``refreshed``);
- ``smtp_server``: a real SMTP server the environment points at (``smtp``, ``smtps``).

The other modules of ``tests/support/`` hold helpers only; being plugins, all of them get
pytest's assertion rewriting.
"""

from __future__ import annotations

#: helpers before the modules that import them (pytest rewrites the asserts of a plugin only when
#: it imports it first)
pytest_plugins = (
    "tests.support.database",
    "tests.support.roles",
    "tests.support.reports_oracle",
    "tests.support.sync_helpers",
    "tests.support.staging_copy",
    "tests.support.batch_writes",
    "tests.support.source_writes",
    "tests.support.view_changes",
    "tests.support.throwaway_server",
    "tests.support.cli_runner",
    "tests.support.cdc_helpers",
    "tests.support.delivery_data",
    "tests.support.smtp_server",
)
