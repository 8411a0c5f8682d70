"""Alembic migrations on Aurora DSQL.

Install the extra (``pip install 'sqlalchemy-dsql[alembic]'``) and Alembic
finds this implementation by itself (through its ``alembic.plugins`` entry
point) for every ``auroradsql`` driver, sync or async ``env.py``. Migrations
are written as usual; what DSQL needs is done here:

Transactions
    DSQL runs one DDL statement per transaction and never DDL with data
    changes. Each DDL statement is committed on its own; data changes a
    migration makes (``op.execute(update(...))``, ``op.bulk_insert``) are
    committed before the next DDL statement. ``alembic_version`` is updated
    after the migration's last DDL statement, in a transaction that holds
    only the data changes made after that statement (so the version and
    those changes commit together or not at all).

Before anything runs
    Every migration of an ``upgrade`` or ``downgrade`` is first run "on
    paper" (Alembic's offline mode, discarding the SQL). Operations DSQL
    cannot do stop the command there with
    :class:`~sqlalchemy_dsql.errors.MigrationRefused`, naming the migration
    and the operation, before any statement of any of its migrations runs:
    ``op.alter_column(type_=...)``, ``op.alter_column(nullable=False)``,
    ``op.add_column`` of a NOT NULL column without a server default, of a
    primary key, identity or computed column, a UNIQUE or PRIMARY KEY
    constraint added to an existing table, and ``op.execute`` of a statement
    DSQL refuses (``TRUNCATE``, plain ``CREATE INDEX``, ``SET NOT NULL``,
    ``ALTER COLUMN ... TYPE``, savepoints, ``CREATE TYPE``, ``DO``, several
    statements in one string, ...). A migration that talks to the database
    itself (``op.get_bind().execute(...)``) cannot be run on paper; its
    operations are checked as they run.

Operations that become several statements
    ``op.create_index`` emits ``CREATE INDEX ASYNC`` and waits for the build;
    a failed build raises :class:`~sqlalchemy_dsql.errors.AsyncJobFailed`
    naming the index, after the failed index has been dropped.
    ``op.add_column`` of a column with a server default adds it nullable,
    sets the default, and fills existing rows in transactions of 1,000 rows;
    with ``nullable=False`` as well, it then adds ``CHECK (column IS NOT
    NULL)`` (named ``<table>_<column>_not_null``) and validates it, since DSQL
    has no ``SET NOT NULL``. Foreign keys and CHECK constraints added to an
    existing table are added ``NOT VALID`` and then validated
    (``ALTER TABLE ASYNC ... VALIDATE CONSTRAINT``, waited for).
    ``op.bulk_insert`` writes 1,000 rows per transaction.

When a migration fails part-way
    :class:`~sqlalchemy_dsql.errors.MigrationInterrupted` lists what the
    migration had committed; ``alembic_version`` still names the revision
    before it. ``docs/alembic.md`` says how to resume.

Autogenerate
    Comparing models with a DSQL database gives no differences for the
    dialect's index options, identity columns, non-native enums, or NOT NULL
    columns added as above.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from alembic.runtime.plugins import Plugin

    from .impl import AuroraDSQLImpl

__all__ = ["AuroraDSQLImpl"]


def setup(plugin: Plugin) -> None:
    """Alembic's plugin hook; importing this module has registered the implementation."""


# Alembic imports its plugins, this module among them, halfway through importing its
# PostgreSQL support, before the class the implementation derives from exists. So a
# stand-in is registered for the dialect name now; made for the first migration, it
# builds the real implementation, which registers itself in the stand-in's place.
# (``setup`` comes first: importing Alembic from here imports this module again.)
from alembic.ddl.impl import DefaultImpl  # noqa: E402


class _StandIn(DefaultImpl):
    __dialect__ = "auroradsql"

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        from .impl import AuroraDSQLImpl

        return AuroraDSQLImpl(*args, **kwargs)


def __getattr__(name: str) -> Any:
    if name == "AuroraDSQLImpl":
        from .impl import AuroraDSQLImpl

        return AuroraDSQLImpl
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
