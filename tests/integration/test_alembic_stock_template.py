"""A project made by ``alembic init`` whose only edit is ``sqlalchemy.url``, on the emulator.

This is what a new user does: ``alembic init -t async migrations``, point
``sqlalchemy.url`` in ``alembic.ini`` at the cluster, write a migration, run
``alembic upgrade head``. Alembic finds the ``auroradsql`` implementation
through the package's ``alembic.plugins`` entry point, and the dialect signs
a token per connection from the AWS credential chain: ``env.py`` stays as
Alembic wrote it (the tests check that it is byte for byte the template).
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import alembic
import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from sqlalchemy_dsql.local import LocalDSQL

pytestmark = pytest.mark.integration

ALEMBIC = str(Path(sys.executable).with_name("alembic"))
TEMPLATES = Path(alembic.__file__).parent / "templates"

MIGRATION = '''\
"""A table and an index on it."""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "{table}",
        sa.Column("id", sa.BigInteger, primary_key=True),
        sa.Column("name", sa.String(50), nullable=False),
    )
    op.create_index("ix_{table}_name", "{table}", ["name"])


def downgrade() -> None:
    op.drop_index("ix_{table}_name", table_name="{table}")
    op.drop_table("{table}")
'''


def _init(directory: Path, template: str, url: str, table: str) -> Path:
    """``alembic init -t <template> migrations`` in ``directory``, the URL set, one migration.

    Returns the ``alembic.ini`` path.
    """
    made = subprocess.run(
        [ALEMBIC, "init", "-t", template, "migrations"],
        cwd=directory,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert made.returncode == 0, made.stderr
    ini = directory / "alembic.ini"
    # alembic.ini goes through configparser's interpolation: a % must be written %%.
    line = f"sqlalchemy.url = {url.replace('%', '%%')}"
    text, edits = re.subn(r"^sqlalchemy\.url = .*$", lambda _: line, ini.read_text(), flags=re.M)
    assert edits == 1
    ini.write_text(text)
    env_py = directory / "migrations" / "env.py"
    assert env_py.read_text() == (TEMPLATES / template / "env.py").read_text()
    (directory / "migrations" / "versions" / "0001_table.py").write_text(
        MIGRATION.format(table=table)
    )
    return ini


def _printed_environment(dsql: LocalDSQL) -> dict[str, str]:
    """This environment, less any AWS or libpq setting, plus what ``dsql-local`` prints."""
    kept = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "PG"))}
    return {**kept, **dsql.environ()}


def _alembic(directory: Path, dsql: LocalDSQL, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [ALEMBIC, *args],
        cwd=directory,
        env=_printed_environment(dsql),
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def checker(dsql: LocalDSQL) -> Iterator[sa.Engine]:
    """A plain engine on the emulator, to look at what the migrations did."""
    engine = sa.create_engine(dsql.url("psycopg"))
    yield engine
    engine.dispose()


def _start_clean(engine: sa.Engine, table: str) -> None:
    # What an earlier run (or another test's migrations) left in the public schema.
    with engine.connect() as connection:
        for name in (table, "alembic_version"):
            connection.execute(sa.text(f"DROP TABLE IF EXISTS {name}"))


def _tables_and_indexes(engine: sa.Engine, table: str) -> tuple[set[str], list[str]]:
    with engine.connect() as connection:
        inspector = sa.inspect(connection)
        tables = set(inspector.get_table_names())
        indexes = [i["name"] or "" for i in inspector.get_indexes(table)] if table in tables else []
        return tables, indexes


def _statements_since(dsql: LocalDSQL, mark: int) -> list[str]:
    assert dsql.statement_log is not None
    return [entry.sql for entry in list(dsql.statement_log)[mark:]]


@pytest.mark.parametrize(
    ("template", "driver"),
    [
        ("async", "asyncpg"),
        ("async", "psycopg_async"),
        ("generic", "psycopg"),
        ("generic", "psycopg2"),
    ],
)
def test_stock_template_with_only_the_url_upgrades_and_downgrades(
    dsql: LocalDSQL, checker: sa.Engine, tmp_path: Path, template: str, driver: str
) -> None:
    table = f"stock_{template}_{driver}"
    _start_clean(checker, table)
    # The URL as a user writes it: endpoint and database; the rest comes from the environment.
    url = f"auroradsql+{driver}://admin@{dsql.endpoint}/postgres"
    _init(tmp_path, template, url, table)
    assert dsql.statement_log is not None
    mark = len(dsql.statement_log)

    upgrade = _alembic(tmp_path, dsql, "upgrade", "head")
    assert upgrade.returncode == 0, upgrade.stderr
    assert "Context impl AuroraDSQLImpl." in upgrade.stderr
    assert "Running upgrade  -> 0001" in upgrade.stderr
    tables, indexes = _tables_and_indexes(checker, table)
    assert {table, "alembic_version"} <= tables
    assert indexes == [f"ix_{table}_name"]
    # DSQL builds indexes only asynchronously: the implementation sent ASYNC and waited.
    sent = _statements_since(dsql, mark)
    assert f"CREATE INDEX ASYNC ix_{table}_name ON {table} (name)" in sent
    assert any("sys.wait_for_job" in sql for sql in sent)
    with checker.connect() as connection:
        assert connection.scalar(sa.text("SELECT version_num FROM alembic_version")) == "0001"
        connection.execute(sa.text(f"INSERT INTO {table} (name) VALUES ('Deadpond')"))
        connection.commit()
        assert connection.scalar(sa.text(f"SELECT name FROM {table}")) == "Deadpond"

    downgrade = _alembic(tmp_path, dsql, "downgrade", "base")
    assert downgrade.returncode == 0, downgrade.stderr
    assert "Running downgrade 0001 -> " in downgrade.stderr
    tables, _ = _tables_and_indexes(checker, table)
    assert table not in tables
    with checker.connect() as connection:
        assert connection.scalar(sa.text("SELECT count(*) FROM alembic_version")) == 0


@pytest.fixture
def logging_restored() -> Iterator[None]:
    """Undo the template's logging.config.fileConfig, which reconfigures logging for good.

    It disables every existing logger and sets the levels and handlers of the root,
    ``sqlalchemy`` and ``alembic`` loggers; left so, later tests in this process would
    see no log records (SQLAlchemy's, botocore's, the integrations') and checks that
    read them would fail.
    """
    manager = logging.Logger.manager
    loggers = [manager.root] + [
        logger for logger in manager.loggerDict.values() if isinstance(logger, logging.Logger)
    ]
    saved = {
        id(logger): (logger.disabled, logger.level, list(logger.handlers), logger.propagate)
        for logger in loggers
    }
    yield
    for logger in [manager.root, *manager.loggerDict.values()]:
        if not isinstance(logger, logging.Logger):
            continue
        disabled, level, handlers, propagate = saved.get(id(logger), (False, 0, [], True))
        logger.disabled, logger.propagate = disabled, propagate
        logger.setLevel(level)
        for handler in list(logger.handlers):
            if handler not in handlers:
                logger.removeHandler(handler)
        for handler in handlers:
            if handler not in logger.handlers:
                logger.addHandler(handler)


@pytest.mark.usefixtures("logging_restored")
async def test_stock_async_template_in_process_with_the_emulators_url(
    dsql: LocalDSQL, checker: sa.Engine, tmp_path: Path
) -> None:
    # dsql.url() carries hostaddr, port and sslrootcert; the key pair is in os.environ.
    table = "stock_in_process"
    _start_clean(checker, table)
    config = Config(str(_init(tmp_path, "async", dsql.url(), table)))
    # The template's env.py calls asyncio.run(), which needs a thread without a running loop.
    await asyncio.to_thread(command.upgrade, config, "head")
    tables, indexes = _tables_and_indexes(checker, table)
    assert table in tables
    assert indexes == [f"ix_{table}_name"]

    await asyncio.to_thread(command.downgrade, config, "base")
    tables, _ = _tables_and_indexes(checker, table)
    assert table not in tables


def test_a_refused_operation_stops_before_anything_runs(
    dsql: LocalDSQL, checker: sa.Engine, tmp_path: Path
) -> None:
    # The stock env.py gets the implementation's check on paper too: a plain CREATE INDEX
    # sent as text is refused before the table of the same migration is created.
    table = "stock_refused"
    _start_clean(checker, table)
    _init(tmp_path, "async", f"auroradsql+asyncpg://admin@{dsql.endpoint}/postgres", table)
    migration = tmp_path / "migrations" / "versions" / "0001_table.py"
    migration.write_text(
        migration.read_text().replace(
            f'op.create_index("ix_{table}_name", "{table}", ["name"])',
            f'op.execute("CREATE INDEX ix_{table}_name ON {table} (name)")',
        )
    )

    upgrade = _alembic(tmp_path, dsql, "upgrade", "head")
    assert upgrade.returncode != 0
    assert "MigrationRefused" in upgrade.stderr
    assert "CREATE INDEX without ASYNC" in upgrade.stderr
    tables, _ = _tables_and_indexes(checker, table)
    assert table not in tables
