"""Exactly-once writes, charge terms, active users.

* ``idempotency_keys``: every write's Idempotency-Key with its answer
  (app/core/idempotency.py), unique per (principal, route, key), indexed by age.
* ``orders`` and ``payments`` get ``currency`` (``USD`` for existing rows, the only
  currency there was) and ``payment_method`` (``credit_card``, the seed's).
* ``orders``: a partial index of the pending ones, which the sweep reads.
* ``users.is_active`` (``true`` for existing accounts).

Only additions, with defaults: the previous release keeps working on this schema while a
deploy migrates and then reloads (the seed's ``total_amount`` and ``product_name`` are the
API's names for the ``total`` and ``name`` columns, not renames). Nothing is dropped or
rewritten. Each step checks the schema first and skips what is
already there: ``python -m app.migrate`` adopts a database that the app's start-up
``create_all`` made (stamping the newest revision whose tables all exist), and such a
database may already have some of this revision's tables and columns.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from app.migrations.scope import owns

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


# What --sql (no database to inspect) takes the schema to be: revision 0002's, which
# has none of the columns added here.
_AT_0002: dict[str, set[str]] = {}


def _offline() -> bool:
    return bool(op.get_context().as_sql)


def _tables() -> set[str]:
    return set() if _offline() else set(sa.inspect(op.get_bind()).get_table_names())


def _columns(table: str) -> set[str]:
    if _offline():
        return _AT_0002.get(table, set())
    return {column["name"] for column in sa.inspect(op.get_bind()).get_columns(table)}


def _indexes(table: str) -> set[str]:
    if _offline() or table not in _tables():
        return set()
    return {str(index["name"]) for index in sa.inspect(op.get_bind()).get_indexes(table)}


def _add(table: str, column: sa.Column) -> None:
    if owns(table) and column.name not in _columns(table):
        op.add_column(table, column)


def _currency() -> sa.Column:
    return sa.Column("currency", sa.String(length=3), server_default="USD", nullable=False)


def _payment_method() -> sa.Column:
    return sa.Column(
        "payment_method", sa.String(length=32), server_default="credit_card", nullable=False
    )


def upgrade() -> None:
    if owns("idempotency_keys") and "idempotency_keys" not in _tables():
        op.create_table(
            "idempotency_keys",
            sa.Column("id", sa.BigInteger(), nullable=False),
            sa.Column("principal", sa.String(length=64), nullable=False),
            sa.Column("route", sa.String(length=255), nullable=False),
            sa.Column("key", sa.String(length=255), nullable=False),
            sa.Column("fingerprint", sa.String(length=64), nullable=False),
            sa.Column("status_code", sa.SmallInteger(), nullable=True),
            sa.Column("content_type", sa.String(length=255), nullable=True),
            sa.Column("body", sa.LargeBinary(), nullable=True),
            sa.Column("resource_id", sa.Integer(), nullable=True),
            sa.Column(
                "created_at",
                sa.DateTime(timezone=True),
                server_default=sa.text("now()"),
                nullable=False,
            ),
            sa.PrimaryKeyConstraint("id"),
            sa.UniqueConstraint(
                "principal", "route", "key", name="uq_idempotency_keys_principal_route_key"
            ),
        )
    if owns("idempotency_keys") and "ix_idempotency_keys_created_at" not in _indexes(
        "idempotency_keys"
    ):
        op.create_index("ix_idempotency_keys_created_at", "idempotency_keys", ["created_at"])

    for table in ("orders", "payments"):
        _add(table, _currency())
        _add(table, _payment_method())
    if owns("orders") and "ix_orders_pending" not in _indexes("orders"):
        op.create_index(
            "ix_orders_pending",
            "orders",
            ["created_at"],
            postgresql_where=sa.text("status = 'pending'"),
        )
    _add("users", sa.Column("is_active", sa.Boolean(), server_default=sa.true(), nullable=False))


def downgrade() -> None:
    if owns("users"):
        op.drop_column("users", "is_active")
    if owns("orders"):
        op.drop_index("ix_orders_pending", table_name="orders")
    for table in ("payments", "orders"):
        if owns(table):
            op.drop_column(table, "payment_method")
            op.drop_column(table, "currency")
    if owns("idempotency_keys"):
        op.drop_index("ix_idempotency_keys_created_at", table_name="idempotency_keys")
        op.drop_table("idempotency_keys")
