"""Which tables a migration run may touch: those of the domains the database serves.

Each service has a database of its own (users in ``user_db``, orders in ``order_db``, ...)
and migrates only the tables of its own domains there, from the one migrations tree:
``python -m app.migrate`` puts the tables of ``APP_DOMAINS`` into the Alembic config
(``config.attributes["tables"]``) and every revision asks :func:`owns` before it creates,
alters or drops a table. Without it (``alembic`` run by hand on a database of every
domain) every table is in scope.

A new revision does the same: each step on a table goes under ``if owns("<table>"):``.
Every database still gets every revision in its ``alembic_version`` (a revision with
nothing in its scope changes nothing there), so one head names the schema everywhere.
"""

from __future__ import annotations

from alembic import context


def owns(table: str) -> bool:
    """Whether this run migrates ``table`` (one of its database's domains' tables)."""
    tables: frozenset[str] | None = context.config.attributes.get("tables")
    return tables is None or table in tables
