"""Alembic on DSQL, through the emulator.

The pet clinic's migrations run with the ``alembic`` command and their async
``env.py`` against the emulator posing as a cluster; the other tests run
small migration sets, written into a temporary directory, on a connection of
each driver handed to a minimal ``env.py``, each in a schema of its own.
"""

from __future__ import annotations

import asyncio
import itertools
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from async_pet_clinic.models import Base

from harness.clinic import TABLES, cluster_environment
from harness.engine import async_engine, sync_engine
from sqlalchemy_dsql.errors import MigrationInterrupted, MigrationRefused
from sqlalchemy_dsql.local import LocalDSQL

pytestmark = pytest.mark.integration

ALEMBIC = str(Path(sys.executable).with_name("alembic"))
CLINIC_INI = Path(__file__).parents[2] / "examples" / "async_pet_clinic" / "alembic.ini"
DRIVERS = ["psycopg", "psycopg2", "asyncpg"]
_schemas = itertools.count()

ENV = """
from alembic import context

connection = context.config.attributes["connection"]
context.configure(connection=connection)
with context.begin_transaction():
    context.run_migrations()
"""

MIGRATION = """
import sqlalchemy as sa
from alembic import op

revision = "{revision}"
down_revision = {down_revision!r}


def upgrade():
{upgrade}


def downgrade():
    pass
"""

# The first migration of every set: a table with rows to work on.
TABLE_WITH_ROWS = """
    op.create_table(
        "item",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("code", sa.String(10), nullable=False),
    )
    op.bulk_insert(
        sa.table("item", sa.column("id"), sa.column("code")),
        [{"id": n, "code": "dup" if n < 2 else f"c{n}"} for n in range(2500)],
    )
"""


class Migrations:
    """A migration set in a directory, run on one connection in a schema of its own."""

    def __init__(self, directory: Path, connect: Callable[[Callable[[sa.Connection], Any]], Any]):
        self.directory = directory
        self._connect = connect
        (directory / "versions").mkdir()
        (directory / "env.py").write_text(ENV)
        self._count = 0

    def add(self, upgrade: str) -> str:
        self._count += 1
        revision = f"{self._count:04d}"
        down = f"{self._count - 1:04d}" if self._count > 1 else None
        body = MIGRATION.format(
            revision=revision,
            down_revision=down,
            upgrade=textwrap.indent(textwrap.dedent(upgrade).strip(), "    "),
        )
        (self.directory / "versions" / f"{revision}_step.py").write_text(body)
        return revision

    def upgrade(self, target: str = "head", **options: Any) -> None:
        def run(connection: sa.Connection) -> None:
            config = Config()
            config.set_main_option("script_location", str(self.directory))
            config.attributes["connection"] = connection
            command.upgrade(config, target, **options)

        self._connect(run)

    def on_connection(self, fn: Callable[[sa.Connection], Any]) -> Any:
        return self._connect(fn)

    def version(self) -> list[str]:
        return list(
            self.on_connection(
                lambda c: c.scalars(sa.text("SELECT version_num FROM alembic_version")).all()
            )
        )

    def tables(self) -> set[str]:
        return set(self.on_connection(lambda c: sa.inspect(c).get_table_names()))


def _connector(dsql: LocalDSQL, driver: str, schema: str) -> Callable[..., Any]:
    if driver == "asyncpg":

        def on_async(fn: Callable[[sa.Connection], Any]) -> Any:
            async def go() -> Any:
                engine = async_engine(dsql, schema=schema)
                try:
                    async with engine.connect() as connection:
                        return await connection.run_sync(fn)
                finally:
                    await engine.dispose()

            return asyncio.run(go())

        return on_async
    engine = sync_engine(dsql, driver, schema=schema)

    def on_sync(fn: Callable[[sa.Connection], Any]) -> Any:
        with engine.connect() as connection:
            return fn(connection)

    return on_sync


def _in_a_new_schema(dsql: LocalDSQL, tmp_path: Path, driver: str) -> Iterator[Migrations]:
    # DSQL allows 10 schemas besides public and sys, so each test drops its own.
    schema = f"migrations_{next(_schemas)}"
    engine = sync_engine(dsql)
    with engine.connect() as connection:
        connection.execute(sa.text(f"CREATE SCHEMA {schema}"))
    yield Migrations(tmp_path, _connector(dsql, driver, schema))
    with engine.connect() as connection:
        connection.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
    engine.dispose()


@pytest.fixture
def migrations(dsql: LocalDSQL, tmp_path: Path) -> Iterator[Migrations]:
    yield from _in_a_new_schema(dsql, tmp_path, "psycopg")


@pytest.fixture(params=DRIVERS)
def migrations_by_driver(
    request: pytest.FixtureRequest, dsql: LocalDSQL, tmp_path: Path
) -> Iterator[Migrations]:
    yield from _in_a_new_schema(dsql, tmp_path, request.param)


# -- the pet clinic's migrations, with the alembic command ----------------------------------


def _alembic(dsql: LocalDSQL, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [ALEMBIC, "-c", str(CLINIC_INI), *args],
        env=cluster_environment(dsql),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_pet_clinic_migrations_up_and_down_with_the_alembic_command(dsql: LocalDSQL) -> None:
    engine = sync_engine(dsql)
    with engine.connect() as connection:  # what the demo or an earlier run left
        for table in [*TABLES, "alembic_version"]:
            connection.execute(sa.text(f"DROP TABLE IF EXISTS {table}"))

    upgrade = _alembic(dsql, "upgrade", "head")
    assert upgrade.returncode == 0, upgrade.stderr
    assert "Running upgrade 0001 -> 0002" in upgrade.stderr
    with engine.connect() as connection:
        assert connection.scalar(sa.text("SELECT version_num FROM alembic_version")) == "0002"
        inspector = sa.inspect(connection)
        assert set(TABLES) <= set(inspector.get_table_names())
        assert [i["name"] for i in inspector.get_indexes("pet")] == ["ix_pet_owner_id"]
        connection.execute(sa.text("INSERT INTO vet (name) VALUES ('Helen Leary')"))
        assert connection.scalar(sa.text("SELECT accepting_patients FROM vet")) is True
        with pytest.raises(sa.exc.IntegrityError, match="vet_accepting_patients_not_null"):
            connection.execute(
                sa.text("INSERT INTO vet (name, accepting_patients) VALUES ('X', NULL)")
            )
        connection.rollback()
        # The models and the migrated database agree (other tests' tables are not theirs).
        context = MigrationContext.configure(
            connection,
            opts={
                "include_name": lambda name, kind, _parents: (
                    kind != "table" or name in Base.metadata.tables
                )
            },
        )
        assert compare_metadata(context, Base.metadata) == []

    downgrade = _alembic(dsql, "downgrade", "base")
    assert downgrade.returncode == 0, downgrade.stderr
    with engine.connect() as connection:
        assert not set(TABLES) & set(sa.inspect(connection).get_table_names())
        assert connection.scalar(sa.text("SELECT count(*) FROM alembic_version")) == 0


def test_offline_sql_shows_what_runs() -> None:
    result = subprocess.run(
        [ALEMBIC, "-c", str(CLINIC_INI), "upgrade", "head", "--sql"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    sql = result.stdout
    assert "CREATE INDEX ASYNC ix_pet_owner_id ON pet (owner_id);" in sql
    assert "ALTER TABLE vet ADD COLUMN accepting_patients BOOLEAN;" in sql
    assert "UPDATE vet SET accepting_patients = DEFAULT WHERE accepting_patients IS NULL;" in sql
    assert "ALTER TABLE ASYNC vet VALIDATE CONSTRAINT vet_accepting_patients_not_null;" in sql


# -- what DSQL needs, on every driver ------------------------------------------------------


def test_data_and_ddl_in_one_migration(migrations_by_driver: Migrations) -> None:
    migrations = migrations_by_driver
    migrations.add(TABLE_WITH_ROWS)
    migrations.add(
        """
    op.execute(sa.text("UPDATE item SET code = 'x' || code WHERE id >= 2"))
    op.add_column("item", sa.Column("note", sa.String(20), server_default="none"))
    op.add_column(
        "item", sa.Column("active", sa.Boolean, nullable=False, server_default=sa.true())
    )
    op.create_index("ix_item_code", "item", ["code"])
    op.execute(sa.text("UPDATE item SET note = 'first' WHERE id = 0"))
    """
    )
    migrations.upgrade()
    assert migrations.version() == ["0002"]

    def check(connection: sa.Connection) -> None:
        rows = connection.execute(
            sa.text("SELECT count(*), count(*) FILTER (WHERE active), min(note) FROM item")
        ).one()
        assert tuple(rows) == (2500, 2500, "first")
        assert connection.scalar(sa.text("SELECT code FROM item WHERE id = 7")) == "xc7"
        connection.execute(sa.text("INSERT INTO item (id, code) VALUES (-1, 'new')"))
        assert connection.execute(sa.text("SELECT note, active FROM item WHERE id = -1")).one() == (
            "none",
            True,
        )
        connection.rollback()

    migrations.on_connection(check)


# -- failures part-way ---------------------------------------------------------------------


def test_a_failed_unique_index_build_names_the_index_and_keeps_the_version_true(
    migrations: Migrations,
) -> None:
    migrations.add(TABLE_WITH_ROWS)
    migrations.upgrade()
    migrations.add(
        """
    op.add_column("item", sa.Column("note", sa.String(20)))
    op.create_index("uq_item_code", "item", ["code"], unique=True)
    """
    )
    with pytest.raises(MigrationInterrupted) as caught:
        migrations.upgrade()
    message = str(caught.value)
    assert 'index "uq_item_code"' in message
    assert "ALTER TABLE item ADD COLUMN note VARCHAR(20)" in message
    assert "alembic_version still says 0001" in message
    assert caught.value.committed == ["ALTER TABLE item ADD COLUMN note VARCHAR(20)"]
    assert migrations.version() == ["0001"]
    indexes = migrations.on_connection(lambda c: sa.inspect(c).get_indexes("item"))
    assert indexes == []  # the failed build is not left behind


# -- refused before anything runs ----------------------------------------------------------

REFUSED = {
    "type change": (
        'op.alter_column("item", "code", type_=sa.String(50))',
        'op.alter_column("item", "code"), type_=String(length=50)',
    ),
    "set not null": (
        'op.alter_column("item", "code", nullable=True)\n'
        'op.alter_column("item", "code", nullable=False)',
        "Aurora DSQL has no SET NOT NULL",
    ),
    "not null without default": (
        'op.add_column("item", sa.Column("size", sa.Integer, nullable=False))',
        "needs a server_default",
    ),
    "primary key column": (
        'op.add_column("item", sa.Column("k", sa.Integer, primary_key=True))',
        "cannot add a primary key column",
    ),
    "unique constraint": (
        'op.create_unique_constraint("uq_item_code", "item", ["code"])',
        "cannot add a UNIQUE constraint",
    ),
    "truncate": ('op.execute("TRUNCATE item")', "does not support TRUNCATE"),
    "plain create index": (
        'op.execute("CREATE INDEX ix_item_code ON item (code)")',
        "CREATE INDEX without ASYNC",
    ),
    "two statements": (
        'op.execute("CREATE TABLE a (id int PRIMARY KEY); CREATE TABLE b (id int PRIMARY KEY)")',
        "once per statement",
    ),
    "create type": (
        "op.execute(\"CREATE TYPE mood AS ENUM ('sad', 'ok')\")",
        "does not support CREATE TYPE",
    ),
    "foreign key without a name": (
        'op.create_foreign_key(None, "item", "item", ["id"], ["id"])',
        "needs a name",
    ),
}


@pytest.mark.parametrize("case", list(REFUSED), ids=list(REFUSED))
def test_a_forbidden_operation_is_refused_before_anything_runs(
    migrations: Migrations, case: str
) -> None:
    operation, expected = REFUSED[case]
    migrations.add(TABLE_WITH_ROWS)
    migrations.upgrade()
    migrations.add('op.create_table("ran_first", sa.Column("id", sa.Integer, primary_key=True))')
    migrations.add(operation)
    with pytest.raises(MigrationRefused) as caught:
        migrations.upgrade()
    message = str(caught.value)
    assert expected.lower() in message.lower()
    assert "migration 0003" in message
    assert "Nothing of it (or of the migrations after it) was sent" in message
    # Not even the migration before it ran: every migration is checked first.
    assert "ran_first" not in migrations.tables()
    assert migrations.version() == ["0001"]


def test_a_migration_that_reads_the_database_is_checked_as_it_runs(
    migrations: Migrations,
) -> None:
    migrations.add(TABLE_WITH_ROWS)
    migrations.add(
        """
    count = op.get_bind().scalar(sa.text("SELECT count(*) FROM item"))
    op.create_table("ran_first", sa.Column("id", sa.Integer, primary_key=True))
    if count:
        op.alter_column("item", "code", type_=sa.String(50))
    """
    )
    with pytest.raises(MigrationInterrupted) as caught:
        migrations.upgrade()
    assert isinstance(caught.value.__cause__, MigrationRefused)
    assert "CREATE TABLE ran_first" in str(caught.value)
    assert migrations.version() == ["0001"]


# -- autogenerate --------------------------------------------------------------------------


def test_autogenerate_sees_no_difference_in_dsql_features(migrations: Migrations) -> None:
    metadata = sa.MetaData()
    sa.Table(
        "gadget",
        metadata,
        sa.Column("id", sa.BigInteger, sa.Identity(cache=1), primary_key=True),
        sa.Column("serial", sa.BigInteger, sa.Identity(start=100, cache=65536), nullable=False),
        sa.Column("kind", sa.Enum("small", "large", native_enum=False, length=10)),
        sa.Column("name", sa.String(40), nullable=False),
        sa.Column("price", sa.Numeric(10, 2), server_default="0"),
        sa.Column("parent_id", sa.BigInteger, sa.ForeignKey("gadget.id")),
        sa.Index("ix_gadget_name", "name", auroradsql_include=["kind"]),
        sa.Index("ix_gadget_large", "kind", auroradsql_where=sa.text("kind = 'large'")),
        sa.Index("uq_gadget_serial", "serial", unique=True),
    )

    def create(connection: sa.Connection) -> None:
        metadata.create_all(connection)
        connection.commit()

    def compare(connection: sa.Connection) -> list[Any]:
        return compare_metadata(MigrationContext.configure(connection), metadata)

    migrations.on_connection(create)
    assert migrations.on_connection(compare) == []
