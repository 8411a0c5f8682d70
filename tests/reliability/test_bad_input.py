"""The bad-input catalogue: every way of holding the toolkit wrong, and what the user gets.

One table of cases (:data:`CASES`) drives one parametrized test. Each case does
one wrong thing through the toolkit (a bad endpoint, missing or wrong
credentials, an expired or forged token, a TLS downgrade, a statement DSQL
refuses, DDL mixed with data, a savepoint, an isolation level, a transaction
over the row limit, malformed rows for the batch helpers, a forbidden
migration) and the test asserts:

- the exception type (and, for wrappers such as ``BatchFailed``, its cause);
- that the message tells the user what to do (phrases each case lists);
- that nothing was partially applied: afterwards, through a fresh raw asyncpg
  connection that bypasses the toolkit, the case's tables, rows, indexes and
  ``alembic_version`` are as before, the seeded table is untouched, no session
  of the case is left open on the emulator, and where the toolkit promises to
  refuse before anything is sent, the emulator's statement log shows that
  nothing was;
- that no secret shows: every log record (every logger at DEBUG, engines with
  ``echo="debug"``), the str, repr and chained traceback of the exception, and
  the reprs of the case's engines, pools and token generators are searched for
  the test secret key, every token minted during the case, their signatures,
  SigV4's query markers and any other secret the case used.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import re
import socket
import textwrap
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

import aioboto3
import asyncpg
import boto3
import botocore.auth
import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, exc, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine

from harness.engine import (
    assert_no_secrets,
    async_engine,
    exception_texts,
    secrets_of,
    sync_engine,
)
from sqlalchemy_dsql import RetryPolicy, auth, batch, schema
from sqlalchemy_dsql.auth import AsyncTokenGenerator, TokenGenerator
from sqlalchemy_dsql.batch import BatchFailed
from sqlalchemy_dsql.errors import (
    AuthenticationFailed,
    ClusterUnreachable,
    ConfigurationError,
    ConnectError,
    DDLAfterDMLError,
    MigrationRefused,
    SavepointsNotSupported,
    TLSVerificationFailed,
)
from sqlalchemy_dsql.local import LocalDSQL
from sqlalchemy_dsql.local.session import LoggedStatement
from sqlalchemy_dsql.pool import pool_counters
from sqlalchemy_dsql.retry import RetryStats, run_transaction

pytestmark = [pytest.mark.integration, pytest.mark.reliability]

# The table every case may try to damage; it must hold exactly SEED afterwards.
ITEMS = sa.Table(
    "bad_items",
    sa.MetaData(),
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("owner", sa.Integer, nullable=False),
    sa.Column("name", sa.String(10)),
)
SEED = [(1, 1, "one"), (2, 1, "two"), (3, 2, "three")]
OTHER_CLUSTER = "otherclusterid00000000000b"
# Secret keys the cases pass themselves: they must not show either.
FORGED_SECRET = "forged-secret-access-key-not-real"
UNKNOWN_KEY = ("AKIADSQLUNKNOWNKEY01", "unknown-identity-secret-not-real")
FAST = RetryPolicy(base_delay=0.001, max_delay=0.01)


# -- what a case gets to work with ---------------------------------------------------------


@dataclass
class Ctx:
    """One case's world: the emulator, names of its own, and what it made."""

    dsql: LocalDSQL
    prefix: str
    tmp_path: Path
    monkeypatch: pytest.MonkeyPatch
    aio: Any  # a shared aioboto3 session with the test credentials
    boto: boto3.Session
    engines: list[AsyncEngine | Engine] = field(default_factory=list)
    url_engines: list[AsyncEngine | Engine] = field(default_factory=list)
    secrets: list[str] = field(default_factory=list)
    notes: dict[str, Any] = field(default_factory=dict)
    mark: LoggedStatement | None = None
    sent: list[LoggedStatement] = field(default_factory=list)  # during the action

    def t(self, suffix: str) -> str:
        """A table (or index) name that only this case uses."""
        return f"{self.prefix}_{suffix}"

    def engine(self, **kwargs: Any) -> AsyncEngine:
        kwargs.setdefault("session", self.aio)
        made = async_engine(self.dsql, echo="debug", echo_pool="debug", **kwargs)
        self.engines.append(made)
        return made

    def sync_engine(self, driver: str = "psycopg", **kwargs: Any) -> Engine:
        kwargs.setdefault("session", self.boto)
        made = sync_engine(self.dsql, driver, echo="debug", echo_pool="debug", **kwargs)
        self.engines.append(made)
        return made

    def statements_since_mark(self) -> list[LoggedStatement]:
        """Every statement any session sent the emulator since ``mark``."""
        assert self.dsql.statement_log is not None
        logged = tuple(self.dsql.statement_log)  # one C-level copy: the emulator thread appends
        since: list[LoggedStatement] = []
        for entry in reversed(logged):
            if entry is self.mark:
                break
            since.append(entry)
        return since[::-1]


Action = Callable[[Ctx], Awaitable[Any]]
Check = Callable[[Ctx], Awaitable[None]]


async def observe(dsql: LocalDSQL, query: str, *args: Any) -> list[asyncpg.Record]:
    """Run ``query`` on a fresh raw asyncpg connection: an observer outside the toolkit."""
    conn = await asyncpg.connect(**dsql.connect_kwargs())
    try:
        return list(await conn.fetch(query, *args))
    finally:
        await conn.close()


async def execute_raw(dsql: LocalDSQL, *statements: str) -> None:
    """Set-up and clean-up outside the toolkit, each statement its own transaction."""
    conn = await asyncpg.connect(**dsql.connect_kwargs())
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


# -- "nothing was applied": checks run after the failure ------------------------------------


async def nothing_sent(ctx: Ctx) -> None:
    """Refused before any statement reached the server."""
    sent = [entry.sql for entry in ctx.sent]
    assert sent == [], f"statements reached the server: {sent}"


def not_sent(pattern: str) -> Check:
    """No statement matching ``pattern`` reached the server (the toolkit refused it first)."""

    async def check(ctx: Ctx) -> None:
        sent = [e.sql for e in ctx.sent if re.search(pattern, e.sql, re.I)]
        assert sent == [], f"statements matching {pattern!r} reached the server: {sent}"

    return check


def absent(*suffixes: str) -> Check:
    """None of the case's tables, views or indexes exist."""

    async def check(ctx: Ctx) -> None:
        for suffix in suffixes:
            rows = await observe(ctx.dsql, "SELECT to_regclass($1) IS NULL AS gone", ctx.t(suffix))
            assert rows[0]["gone"], f"{ctx.t(suffix)} was created"

    return check


def ids_present(*ids: int) -> Check:
    """Exactly the seeded rows plus ``ids`` are in bad_items."""

    async def check(ctx: Ctx) -> None:
        rows = await observe(ctx.dsql, "SELECT id FROM bad_items ORDER BY id")
        assert [r["id"] for r in rows] == sorted([s[0] for s in SEED] + list(ids))

    return check


def version_is(*revisions: str) -> Check:
    """The case's alembic version table names exactly ``revisions``."""

    async def check(ctx: Ctx) -> None:
        rows = await observe(ctx.dsql, f"SELECT version_num FROM {ctx.t('version')}")
        assert sorted(r["version_num"] for r in rows) == sorted(revisions)

    return check


def note(key: str, expected: Any) -> Check:
    async def check(ctx: Ctx) -> None:
        assert ctx.notes.get(key) == expected, f"{key}: {ctx.notes.get(key)!r} != {expected!r}"

    return check


def checks(*parts: Check) -> Check:
    async def check(ctx: Ctx) -> None:
        for part in parts:
            await part(ctx)

    return check


# -- actions --------------------------------------------------------------------------------


async def connect(ctx: Ctx, **engine_kwargs: Any) -> None:
    """Open one connection through our async engine and run SELECT 1."""
    engine = ctx.engine(**engine_kwargs)
    async with engine.connect() as conn:
        await conn.execute(text("SELECT 1"))


def connect_sync(ctx: Ctx, driver: str = "psycopg", **engine_kwargs: Any) -> None:
    engine = ctx.sync_engine(driver, **engine_kwargs)
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))


async def in_transaction(ctx: Ctx, *statements: str, autocommit: bool = False) -> None:
    """Run ``statements`` as text() in one transaction of our async engine."""
    engine = ctx.engine()
    async with engine.connect() as conn:
        if autocommit:
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
        async with conn.begin():
            for statement in statements:
                await conn.execute(text(statement.format(t=ctx.prefix)))


def driver_sql_sync(ctx: Ctx, statement: str, driver: str = "psycopg") -> None:
    """One query string, possibly several statements, sent as is through psycopg."""
    engine = ctx.sync_engine(driver)
    with engine.begin() as conn:
        conn.exec_driver_sql(statement.format(t=ctx.prefix))


def clock_at(offset: dt.timedelta) -> Any:
    """Sign tokens as if this machine's clock were ``offset`` away from the server's."""
    return mock.patch.object(
        botocore.auth,
        "get_current_datetime",
        return_value=dt.datetime.now(dt.timezone.utc) + offset,
    )


async def expired_token(ctx: Ctx) -> None:
    with clock_at(-dt.timedelta(hours=1)):
        await connect(ctx)


async def future_token(ctx: Ctx) -> None:
    with clock_at(dt.timedelta(minutes=30)):
        await connect(ctx)


async def forged_token(ctx: Ctx) -> None:
    ctx.secrets.append(FORGED_SECRET)
    forged = aioboto3.Session(
        aws_access_key_id=ctx.dsql.credentials.access_key, aws_secret_access_key=FORGED_SECRET
    )
    await connect(ctx, session=forged)


def forged_token_sync(ctx: Ctx) -> None:
    ctx.secrets.append(FORGED_SECRET)
    forged = boto3.Session(
        aws_access_key_id=ctx.dsql.credentials.access_key, aws_secret_access_key=FORGED_SECRET
    )
    connect_sync(ctx, "psycopg2", session=forged)


async def unknown_identity(ctx: Ctx) -> None:
    ctx.secrets.append(UNKNOWN_KEY[1])
    session = aioboto3.Session(
        aws_access_key_id=UNKNOWN_KEY[0], aws_secret_access_key=UNKNOWN_KEY[1]
    )
    await connect(ctx, session=session)


def _no_aws_files(ctx: Ctx) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        ctx.monkeypatch.delenv(name, raising=False)
    ctx.monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(ctx.tmp_path / "no-credentials"))
    ctx.monkeypatch.setenv("AWS_CONFIG_FILE", str(ctx.tmp_path / "no-config"))
    ctx.monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    # A default-chain generator cached by an earlier test could hold credentials.
    ctx.monkeypatch.setattr(auth, "_async_generators", {})


async def no_credentials(ctx: Ctx) -> None:
    _no_aws_files(ctx)
    await connect(ctx, session=None)


async def unknown_profile(ctx: Ctx) -> None:
    _no_aws_files(ctx)
    await connect(ctx, session=None, profile="no-such-profile")


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def compile_refused(
    ctx: Ctx, column: sa.Column[Any] | None = None, descending_index: bool = False
) -> None:
    """schema.create_all of a good table and a bad one: nothing may be created."""
    metadata = sa.MetaData()
    sa.Table(ctx.t("good"), metadata, sa.Column("id", sa.BigInteger, primary_key=True))
    bad = sa.Table(ctx.t("bad"), metadata, sa.Column("id", sa.BigInteger, primary_key=True))
    if column is not None:
        bad.append_column(column)
    if descending_index:
        sa.Index(ctx.t("ix"), bad.c.id.desc())
    await schema.create_all(ctx.engine(), metadata)


async def temporary_table_metadata(ctx: Ctx) -> None:
    metadata = sa.MetaData()
    sa.Table(ctx.t("good"), metadata, sa.Column("id", sa.BigInteger, primary_key=True))
    sa.Table(
        ctx.t("bad"),
        metadata,
        sa.Column("id", sa.BigInteger, primary_key=True),
        prefixes=["TEMPORARY"],
    )
    await schema.create_all(ctx.engine(), metadata)


async def select_for_share(ctx: Ctx) -> None:
    async with ctx.engine().begin() as conn:
        await conn.execute(ITEMS.insert().values(id=100, owner=1))
        await conn.execute(sa.select(ITEMS).with_for_update(read=True))


async def ddl_after_dml(ctx: Ctx) -> None:
    async with ctx.engine().begin() as conn:
        await conn.execute(ITEMS.insert().values(id=100, owner=1, name="new"))
        await conn.execute(text(f"CREATE TABLE {ctx.t('late')} (id bigint PRIMARY KEY)"))


async def ddl_after_dml_session(ctx: Ctx) -> None:
    late = sa.Table(ctx.t("late"), sa.MetaData(), sa.Column("id", sa.BigInteger, primary_key=True))
    async with AsyncSession(ctx.engine()) as session, session.begin():
        await session.execute(ITEMS.update().where(ITEMS.c.id == 1).values(name="changed"))
        await session.execute(sa.schema.CreateTable(late))


async def begin_nested_core(ctx: Ctx) -> None:
    async with ctx.engine().connect() as conn, conn.begin():
        await conn.execute(ITEMS.insert().values(id=100, owner=1))
        async with conn.begin_nested():
            await conn.execute(ITEMS.insert().values(id=101, owner=1))


async def begin_nested_orm(ctx: Ctx) -> None:
    async with AsyncSession(ctx.engine()) as session, session.begin():
        await session.execute(ITEMS.insert().values(id=100, owner=1))
        async with session.begin_nested():
            await session.execute(ITEMS.insert().values(id=101, owner=1))


async def savepoint_join_mode(ctx: Ctx) -> None:
    async with ctx.engine().connect() as conn, conn.begin():
        await conn.execute(ITEMS.insert().values(id=100, owner=1))
        async with AsyncSession(bind=conn, join_transaction_mode="create_savepoint") as session:
            await session.execute(ITEMS.insert().values(id=101, owner=1))


def begin_nested_sync(ctx: Ctx) -> None:
    with ctx.sync_engine("psycopg").connect() as conn, conn.begin():
        conn.execute(ITEMS.insert().values(id=100, owner=1))
        with conn.begin_nested():
            conn.execute(ITEMS.insert().values(id=101, owner=1))


async def isolation_on_engine(ctx: Ctx) -> None:
    ctx.engine(isolation_level="SERIALIZABLE")


async def isolation_on_connection(ctx: Ctx) -> None:
    async with ctx.engine().connect() as conn:
        await conn.execution_options(isolation_level="READ COMMITTED")
        await conn.execute(ITEMS.insert().values(id=100, owner=1))
        await conn.commit()


async def isolation_on_url_engine(ctx: Ctx) -> None:
    """An engine from a URL alone, as frameworks make them."""
    engine = create_async_engine(ctx.dsql.url())
    ctx.url_engines.append(engine)
    async with engine.connect() as conn:
        await conn.execution_options(isolation_level="SERIALIZABLE")


def _rows(count: int, start: int = 1000) -> list[dict[str, Any]]:
    return [{"id": start + i, "owner": 1, "name": f"r{i}"} for i in range(count)]


async def rows_in_one_statement(ctx: Ctx) -> None:
    async with ctx.engine().begin() as conn:
        await conn.execute(ITEMS.insert(), _rows(3001))


async def rows_in_two_statements(ctx: Ctx) -> None:
    async with ctx.engine().begin() as conn:
        await conn.execute(ITEMS.insert(), _rows(2000))
        await conn.execute(ITEMS.insert(), _rows(1001, start=5000))


async def rows_through_run_transaction(ctx: Ctx) -> None:
    stats = RetryStats()

    async def write(conn: Any) -> None:
        await conn.execute(ITEMS.insert(), _rows(3001))

    try:
        await run_transaction(ctx.engine(), write, policy=FAST, stats=stats)
    finally:
        ctx.notes["attempts"] = stats.attempts


def rows_sync(ctx: Ctx) -> None:
    with ctx.sync_engine("psycopg").begin() as conn:
        conn.execute(
            text("INSERT INTO bad_items SELECT g, 1, 'x' FROM generate_series(1000, 4000) g")
        )


async def batch_insert(ctx: Ctx, rows: Any, **kwargs: Any) -> None:
    kwargs.setdefault("progress", False)
    ctx.notes["report"] = await batch.insert(ctx.engine(), ITEMS, rows, **kwargs)


async def batch_second_batch_fails(ctx: Ctx) -> None:
    rows = [*_rows(3), {"id": 1, "owner": 1, "name": "dup"}]  # id 1 is seeded
    try:
        await batch.insert(ctx.engine(), ITEMS, rows, batch_size=2, concurrency=1, progress=False)
    except BatchFailed as failed:
        ctx.notes["ranges"] = (failed.committed, failed.failed, failed.not_attempted)
        raise


async def delete_without_primary_key(ctx: Ctx) -> None:
    keyless = sa.Table(ctx.t("keyless"), sa.MetaData(), sa.Column("a", sa.Integer))
    await batch.delete(ctx.engine(), keyless, progress=False)


# -- engines from a URL alone, as frameworks make them --------------------------------------

ASYNC_DRIVERS = ("asyncpg", "psycopg_async")
# A password a user might paste into a URL or connect_args: it must never show.
URL_PASSWORD = "pasted-password-not-a-token"
ENDPOINT_ID = "abcdefghijklmnopqrstuvwxyz"


def secret(ctx: Ctx, value: str) -> str:
    """``value``, which the case's texts are then searched for."""
    ctx.secrets.append(value)
    return value


def url_of(
    ctx: Ctx,
    driver: str,
    *,
    host: str | None = None,
    port: int | None = None,
    database: str | None = None,
    password: str | None = None,
    drop: tuple[str, ...] = (),
    **query: str | list[str],
) -> str:
    """The emulator's URL for ``driver`` with parts replaced, query parameters dropped or set."""
    url = sa.make_url(ctx.dsql.url(driver))
    parts: dict[str, Any] = {"host": host, "port": port, "database": database}
    url = url.set(**{name: value for name, value in parts.items() if value is not None})
    if password is not None:
        url = url.set(password=password)
    url = url.difference_update_query(drop).update_query_dict(query)
    return url.render_as_string(hide_password=False)


async def url_connect(ctx: Ctx, driver: str, url: str | None = None, **kwargs: Any) -> None:
    """create_(async_)engine(url) and SELECT 1: no factory of ours, no credentials passed."""
    url = url or ctx.dsql.url(driver)
    kwargs.update(echo="debug", echo_pool="debug")
    if driver in ASYNC_DRIVERS:
        engine = create_async_engine(url, **kwargs)
        ctx.url_engines.append(engine)
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        return

    def run() -> None:
        engine = sa.create_engine(url, **kwargs)
        ctx.url_engines.append(engine)
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    await asyncio.to_thread(run)


async def url_without_region(ctx: Ctx, driver: str) -> None:
    """A bare cluster id in the URL, and no Region anywhere."""
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION"):
        ctx.monkeypatch.delenv(name, raising=False)
    await url_connect(ctx, driver, url_of(ctx, driver, host=ENDPOINT_ID))


async def url_without_hostaddr(ctx: Ctx, driver: str) -> None:
    """The emulator's endpoint, which is in no DNS, without hostaddr or PGHOSTADDR."""
    ctx.monkeypatch.delenv("PGHOSTADDR", raising=False)
    await url_connect(ctx, driver, url_of(ctx, driver, drop=("hostaddr",), connect_timeout="5"))


async def url_no_credentials(ctx: Ctx, driver: str) -> None:
    _no_aws_files(ctx)
    ctx.monkeypatch.setattr(auth, "_generators", {})
    await url_connect(ctx, driver)


async def url_unknown_profile(ctx: Ctx, driver: str) -> None:
    _no_aws_files(ctx)
    ctx.monkeypatch.setattr(auth, "_generators", {})
    await url_connect(ctx, driver, url_of(ctx, driver, profile="no-such-profile"))


# -- migrations -----------------------------------------------------------------------------

ENV = """
from alembic import context

config = context.config
context.configure(
    connection=config.attributes["connection"],
    version_table=config.attributes["version_table"],
)
with context.begin_transaction():
    context.run_migrations()
"""

MIGRATION = """
import sqlalchemy as sa
from alembic import op

revision = "{revision}"
down_revision = {down!r}


def upgrade():
{body}


def downgrade():
    pass
"""


def _write_migration(ctx: Ctx, revision: str, down: str | None, body: str) -> None:
    indented = textwrap.indent(textwrap.dedent(body.format(t=ctx.prefix)).strip(), "    ")
    path = ctx.tmp_path / "migrations" / "versions" / f"{revision}_step.py"
    path.write_text(MIGRATION.format(revision=revision, down=down, body=indented))


def _upgrade_on(ctx: Ctx) -> Callable[[sa.Connection], None]:
    def run(connection: sa.Connection) -> None:
        config = Config()
        config.set_main_option("script_location", str(ctx.tmp_path / "migrations"))
        config.attributes["connection"] = connection
        config.attributes["version_table"] = ctx.t("version")
        command.upgrade(config, "head")

    return run


async def applied_first_migration(ctx: Ctx) -> None:
    """Set-up: migration 0001 (a table with a row) is in; the version table says so."""
    (ctx.tmp_path / "migrations" / "versions").mkdir(parents=True)
    (ctx.tmp_path / "migrations" / "env.py").write_text(ENV)
    _write_migration(
        ctx,
        "0001",
        None,
        """
        op.create_table(
            "{t}_item",
            sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
            sa.Column("code", sa.String(10)),
        )
        op.execute("INSERT INTO {t}_item VALUES (1, 'a')")
        """,
    )
    async with ctx.engine().connect() as conn:
        await conn.run_sync(_upgrade_on(ctx))


def migrate(operation: str, driver: str = "asyncpg") -> Action:
    """Add 0002 (creates a table) and 0003 (``operation``) and upgrade: 0003 is refused."""

    async def action(ctx: Ctx) -> None:
        _write_migration(
            ctx, "0002", "0001", 'op.create_table("{t}_ran", sa.Column("id", sa.Integer))'
        )
        _write_migration(ctx, "0003", "0002", operation)
        if driver == "asyncpg":
            async with ctx.engine().connect() as conn:
                await conn.run_sync(_upgrade_on(ctx))
        else:
            with ctx.sync_engine(driver).connect() as conn:
                _upgrade_on(ctx)(conn)

    return action


async def drop_migrated(ctx: Ctx) -> None:
    await execute_raw(
        ctx.dsql,
        f"DROP TABLE IF EXISTS {ctx.t('item')}",
        f"DROP TABLE IF EXISTS {ctx.t('version')}",
    )


async def migration_untouched(ctx: Ctx) -> None:
    """0001's table is as it left it, 0002 never ran, and the version still says 0001."""
    await absent("ran")(ctx)
    await version_is("0001")(ctx)
    columns = await observe(
        ctx.dsql,
        "SELECT column_name, data_type, character_maximum_length, is_nullable "
        "FROM information_schema.columns WHERE table_name = $1 ORDER BY ordinal_position",
        ctx.t("item"),
    )
    assert [tuple(c) for c in columns] == [
        ("id", "bigint", None, "NO"),
        ("code", "character varying", 10, "YES"),
    ]
    rows = await observe(ctx.dsql, f"SELECT * FROM {ctx.t('item')}")
    assert [tuple(r) for r in rows] == [(1, "a")]
    # Nothing of 0002 or 0003 was even sent, and no version was written.
    touched = rf"{ctx.t('ran')}|{ctx.t('item')}|(UPDATE|INSERT INTO|DELETE FROM) {ctx.t('version')}"
    await not_sent(touched)(ctx)


# -- the catalogue --------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One bad input: what it does, what it must raise and say, and what must not change."""

    id: str
    category: str
    action: Action
    raises: type[BaseException]
    advice: tuple[str, ...]  # regular expressions, each found in str(error)
    applied: Check  # asserts that nothing of the action is in the database
    cause: type[BaseException] | None = None
    setup: Action | None = None
    cleanup: Action | None = None


ENDPOINTS = "endpoints and regions"
CREDENTIALS = "credentials"
TOKENS = "expired and forged tokens"
TLS = "TLS downgrade and wrong CA"
STATEMENTS = "unsupported DDL and statements"
MIXED = "DDL mixed with DML"
SAVEPOINTS = "begin_nested() and savepoints"
ISOLATION = "isolation levels"
LIMITS = "oversized transactions"
BATCH = "malformed rows to the batch helpers"
MIGRATIONS = "migrations with forbidden operations"
URLS = "settings in a URL, on each driver"

_REFUSED_TOKEN = r"refused the IAM token for user 'admin'"

CASES: list[Case] = [
    # -- endpoints and regions --
    Case(
        "endpoint-empty",
        ENDPOINTS,
        lambda ctx: connect(ctx, host="  "),
        ConfigurationError,
        (r"host is empty", r"pass the cluster endpoint \(<cluster-id>\.dsql\.<region>\.on\.aws\)"),
        nothing_sent,
    ),
    Case(
        "endpoint-bare-cluster-id-without-region",
        ENDPOINTS,
        lambda ctx: connect(ctx, host="abcdefghijklmnopqrstuvwxyz"),
        ConfigurationError,
        (r"looks like a bare cluster id, which needs region=", r"or pass the full endpoint"),
        nothing_sent,
    ),
    Case(
        "endpoint-not-dsql-without-region",
        ENDPOINTS,
        lambda ctx: connect(ctx, host="db.example.com"),
        ConfigurationError,
        (r"cannot read an AWS region from host 'db\.example\.com'", r"pass region="),
        nothing_sent,
    ),
    Case(
        "region-contradicts-endpoint",
        ENDPOINTS,
        lambda ctx: connect(ctx, region="eu-west-1"),
        ConfigurationError,
        (r"region 'eu-west-1' does not match the endpoint", r"drop region= or fix the host"),
        nothing_sent,
    ),
    Case(
        "endpoint-of-another-cluster",
        ENDPOINTS,
        lambda ctx: connect(ctx, host=f"{OTHER_CLUSTER}.dsql.{ctx.dsql.region}.on.aws"),
        AuthenticationFailed,
        (
            r"not for this cluster's endpoint",
            rf"tokens are signed for host '{OTHER_CLUSTER}\.dsql\.us-east-1\.on\.aws': pass "
            r"the cluster's endpoint as host \(to dial another address, use hostaddr=\)",
        ),
        nothing_sent,
    ),
    Case(
        "endpoint-nothing-listening",
        ENDPOINTS,
        lambda ctx: connect(ctx, port=_closed_port()),
        ClusterUnreachable,
        (r"cannot reach", r"Check the endpoint \(cluster id and region\), DNS, the network"),
        nothing_sent,
    ),
    Case(
        "endpoint-address-does-not-resolve",
        ENDPOINTS,
        lambda ctx: connect(ctx, hostaddr="no-such-host.invalid"),
        ClusterUnreachable,
        (r"cannot reach", r"Check the endpoint .*DNS"),
        nothing_sent,
    ),
    Case(
        "hostaddr-does-not-resolve-sync",
        ENDPOINTS,
        lambda ctx: asyncio.to_thread(connect_sync, ctx, hostaddr="no-such-host.invalid"),
        ConfigurationError,
        (r"hostaddr='no-such-host\.invalid' does not resolve", r"pass an IP address"),
        nothing_sent,
    ),
    Case(
        "database-other-than-postgres",
        ENDPOINTS,
        lambda ctx: connect(ctx, database="app"),
        ConfigurationError,
        (r"database 'app'", r"single database, 'postgres'", r"end the URL with /postgres"),
        nothing_sent,
    ),
    # -- credentials --
    Case(
        "credentials-none-found",
        CREDENTIALS,
        no_credentials,
        ConfigurationError,
        (r"no AWS credentials found", r"set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"),
        nothing_sent,
    ),
    Case(
        "credentials-unknown-profile",
        CREDENTIALS,
        unknown_profile,
        ConfigurationError,
        (r"AWS profile 'no-such-profile'", r"check its name, create it", r"or pass session="),
        nothing_sent,
    ),
    Case(
        "credentials-two-sources",
        CREDENTIALS,
        lambda ctx: connect(ctx, profile="dev"),
        ConfigurationError,
        (r"pass one credentials source, not session and profile",),
        nothing_sent,
    ),
    Case(
        "credentials-unknown-identity",
        CREDENTIALS,
        unknown_identity,
        AuthenticationFailed,
        (
            _REFUSED_TOKEN,
            r"credentials this cluster does not know",
            r"the IAM identity behind your credentials needs dsql:DbConnectAdmin",
        ),
        nothing_sent,
    ),
    Case(
        "credentials-role-does-not-exist",
        CREDENTIALS,
        lambda ctx: connect(ctx, user="nobody_here"),
        AuthenticationFailed,
        (
            r"refused the IAM token for user 'nobody_here'",
            r"role 'nobody_here' must exist WITH LOGIN and be linked to that IAM identity",
        ),
        nothing_sent,
    ),
    # -- expired and forged tokens --
    Case(
        "token-expired",
        TOKENS,
        expired_token,
        AuthenticationFailed,
        (_REFUSED_TOKEN, r"HINT: Signature expired: ", r"check this machine's clock"),
        nothing_sent,
    ),
    Case(
        "token-signed-in-the-future",
        TOKENS,
        future_token,
        AuthenticationFailed,
        (_REFUSED_TOKEN, r"HINT: Signature not yet current: ", r"check this machine's clock"),
        nothing_sent,
    ),
    Case(
        "token-forged-with-a-wrong-secret",
        TOKENS,
        forged_token,
        AuthenticationFailed,
        (_REFUSED_TOKEN, r"signature does not match", r"needs dsql:DbConnectAdmin on this cluster"),
        nothing_sent,
    ),
    Case(
        "token-forged-sync-psycopg2",
        TOKENS,
        lambda ctx: asyncio.to_thread(forged_token_sync, ctx),
        AuthenticationFailed,
        (_REFUSED_TOKEN, r"signature does not match", r"needs dsql:DbConnectAdmin on this cluster"),
        nothing_sent,
    ),
    Case(
        "token-lifetime-over-a-week",
        TOKENS,
        lambda ctx: connect(ctx, token_lifetime=8 * 24 * 3600),
        ConfigurationError,
        (r"token lifetime must be between 1 s and one week",),
        nothing_sent,
    ),
    # -- TLS downgrade and wrong CA --
    Case(
        "tls-require-towards-dsql",
        TLS,
        lambda ctx: connect(ctx, sslmode="require"),
        ConfigurationError,
        (r"would send the IAM token over a connection whose server is not verified",),
        nothing_sent,
    ),
    Case(
        "tls-disable-towards-dsql",
        TLS,
        lambda ctx: connect(ctx, sslmode="disable"),
        ConfigurationError,
        (r"sslmode='disable'", r"use sslmode='verify-full'"),
        nothing_sent,
    ),
    Case(
        "tls-prefer-is-not-a-mode",
        TLS,
        lambda ctx: connect(ctx, sslmode="prefer"),
        ConfigurationError,
        (r"sslmode='prefer' is not supported: use 'verify-full'",),
        nothing_sent,
    ),
    Case(
        "tls-plaintext-forced",
        TLS,
        lambda ctx: connect(ctx, sslmode="disable", allow_insecure_tls=True),
        ConnectError,
        (r"requires TLS", r"connect with sslmode='verify-full'"),
        nothing_sent,
    ),
    Case(
        "tls-system-store-does-not-trust-the-ca",
        TLS,
        lambda ctx: connect(ctx, sslrootcert="system"),
        TLSVerificationFailed,
        (r"could not verify the TLS certificate", r"pass its CA file as sslrootcert="),
        nothing_sent,
    ),
    Case(
        "tls-ca-file-missing",
        TLS,
        lambda ctx: connect(ctx, sslrootcert=str(ctx.tmp_path / "missing.pem")),
        ConfigurationError,
        (r"cannot load the CA file", r"pass the path of a PEM file, or 'system'"),
        nothing_sent,
    ),
    Case(
        "tls-certificate-for-another-name",
        TLS,
        lambda ctx: connect(ctx, host="db.example.com", region=ctx.dsql.region),
        TLSVerificationFailed,
        (r"must be issued for db\.example\.com", r"sslrootcert="),
        nothing_sent,
    ),
    Case(
        "tls-wrong-ca-sync-psycopg",
        TLS,
        lambda ctx: asyncio.to_thread(
            connect_sync, ctx, "psycopg", sslrootcert="/etc/ssl/certs/ca-certificates.crt"
        ),
        TLSVerificationFailed,
        (r"could not verify the TLS certificate", r"pass its CA file as sslrootcert="),
        nothing_sent,
    ),
    # -- unsupported DDL and statements --
    Case(
        "truncate",
        STATEMENTS,
        lambda ctx: in_transaction(ctx, "TRUNCATE bad_items"),
        exc.DBAPIError,
        (r"unsupported statement: Truncate", r"HINT:  use DELETE in batches of up to 3,000 rows"),
        ids_present(),
    ),
    Case(
        "temporary-table-in-sql",
        STATEMENTS,
        lambda ctx: in_transaction(ctx, "CREATE TEMPORARY TABLE {t}_tmp (id int PRIMARY KEY)"),
        exc.DBAPIError,
        (r"TEMPORARY or TEMP table not supported for CREATE TABLE", r"HINT:  use a table"),
        absent("tmp"),
    ),
    Case(
        "temporary-table-in-metadata",
        STATEMENTS,
        temporary_table_metadata,
        exc.CompileError,
        (r"supports neither TEMPORARY nor UNLOGGED", r"Create a regular table"),
        checks(absent("good", "bad"), not_sent("CREATE")),
    ),
    Case(
        "index-without-async",
        STATEMENTS,
        lambda ctx: in_transaction(ctx, "CREATE INDEX {t}_ix ON bad_items (owner)"),
        exc.DBAPIError,
        (r"please use CREATE INDEX ASYNC",),
        absent("ix"),
    ),
    Case(
        "array-column-in-create-all",
        STATEMENTS,
        lambda ctx: compile_refused(ctx, sa.Column("tags", sa.ARRAY(sa.Text))),
        exc.CompileError,
        (r"is an ARRAY", r"Store the values as JSON/JSONB or in a child table"),
        checks(absent("good", "bad"), not_sent("CREATE")),
    ),
    Case(
        "index-key-with-sort-direction",
        STATEMENTS,
        lambda ctx: compile_refused(ctx, descending_index=True),
        exc.CompileError,
        (r"has an explicit DESC", r"Remove \.desc\(\)"),
        checks(absent("good", "bad", "ix"), not_sent("CREATE")),
    ),
    Case(
        "select-for-share",
        STATEMENTS,
        select_for_share,
        exc.CompileError,
        (r"does not support SELECT \.\.\. FOR SHARE", r"use with_for_update\(\)"),
        checks(ids_present(), not_sent("FOR SHARE")),
    ),
    Case(
        "advisory-lock",
        STATEMENTS,
        lambda ctx: in_transaction(
            ctx, "INSERT INTO bad_items VALUES (100, 1, 'x')", "SELECT pg_advisory_lock(42)"
        ),
        exc.DBAPIError,
        (r"function pg_advisory_lock not supported", r"HINT:  .*optimistic concurrency control"),
        ids_present(),
    ),
    Case(
        "set-statement-timeout",
        STATEMENTS,
        lambda ctx: in_transaction(ctx, "SET statement_timeout = 1000"),
        exc.DBAPIError,
        (r'"statement_timeout" not supported', r"HINT:  only search_path"),
        ids_present(),
    ),
    Case(
        "listen",
        STATEMENTS,
        lambda ctx: in_transaction(ctx, "LISTEN bad_channel", autocommit=True),
        exc.DBAPIError,
        (r"LISTEN is not supported", r"HINT:  .*use a message queue"),
        ids_present(),
    ),
    # -- DDL mixed with DML --
    Case(
        "ddl-after-dml-core",
        MIXED,
        ddl_after_dml,
        DDLAfterDMLError,
        (r"Nothing was committed", r"Commit the data changes first, then run the DDL"),
        checks(ids_present(), absent("late"), not_sent("CREATE TABLE")),
    ),
    Case(
        "ddl-after-dml-orm-session",
        MIXED,
        ddl_after_dml_session,
        DDLAfterDMLError,
        (r"Nothing was committed", r"Commit the data changes first, then run the DDL"),
        checks(ids_present(), absent("late"), not_sent("CREATE TABLE")),
    ),
    Case(
        "dml-and-ddl-in-one-string",
        MIXED,
        lambda ctx: asyncio.to_thread(
            driver_sql_sync,
            ctx,
            "INSERT INTO bad_items VALUES (100, 1, 'x'); CREATE TABLE {t}_late (id int)",
        ),
        exc.DBAPIError,
        (r"ddl and dml are not supported in the same transaction", r"HINT:  commit the data"),
        checks(ids_present(), absent("late")),
    ),
    Case(
        "two-ddl-in-one-string",
        MIXED,
        lambda ctx: asyncio.to_thread(
            driver_sql_sync,
            ctx,
            "CREATE TABLE {t}_a (id int PRIMARY KEY); CREATE TABLE {t}_b (id int PRIMARY KEY)",
        ),
        exc.DBAPIError,
        (
            r"multiple ddl statements not supported in a transaction",
            r"HINT:  run each DDL statement in its own transaction",
        ),
        absent("a", "b"),
    ),
    # -- begin_nested() and savepoints --
    Case(
        "begin-nested-core",
        SAVEPOINTS,
        begin_nested_core,
        SavepointsNotSupported,
        (r"does not support savepoints", r"Run the inner unit of work as its own transaction"),
        checks(ids_present(), not_sent("SAVEPOINT")),
    ),
    Case(
        "begin-nested-orm-session",
        SAVEPOINTS,
        begin_nested_orm,
        SavepointsNotSupported,
        (r"does not support savepoints", r"Run the inner unit of work as its own transaction"),
        checks(ids_present(), not_sent("SAVEPOINT")),
    ),
    Case(
        "session-joins-in-savepoint-mode",
        SAVEPOINTS,
        savepoint_join_mode,
        SavepointsNotSupported,
        (r"join_transaction_mode='conditional_savepoint' or 'rollback_only'",),
        checks(ids_present(), not_sent("SAVEPOINT")),
    ),
    Case(
        "begin-nested-sync-psycopg",
        SAVEPOINTS,
        lambda ctx: asyncio.to_thread(begin_nested_sync, ctx),
        SavepointsNotSupported,
        (r"Run the inner unit of work as its own transaction",),
        checks(ids_present(), not_sent("SAVEPOINT")),
    ),
    Case(
        "savepoint-in-sql",
        SAVEPOINTS,
        lambda ctx: in_transaction(
            ctx, "INSERT INTO bad_items VALUES (100, 1, 'x')", "SAVEPOINT inner_work"
        ),
        exc.DBAPIError,
        (r"SAVEPOINT is not supported", r"HINT:  retry the whole transaction instead"),
        ids_present(),
    ),
    # -- isolation levels --
    Case(
        "isolation-serializable-on-the-engine",
        ISOLATION,
        isolation_on_engine,
        exc.ArgumentError,
        (r"Valid isolation levels for 'auroradsql' are REPEATABLE READ, AUTOCOMMIT",),
        nothing_sent,
    ),
    Case(
        "isolation-read-committed-on-a-connection",
        ISOLATION,
        isolation_on_connection,
        exc.ArgumentError,
        (r"Aurora DSQL runs every transaction at REPEATABLE READ \(the default\)",),
        checks(ids_present(), not_sent("ISOLATION")),
    ),
    Case(
        "isolation-on-a-url-engine",
        ISOLATION,
        isolation_on_url_engine,
        exc.ArgumentError,
        (r"Valid isolation levels for 'auroradsql' are REPEATABLE READ, AUTOCOMMIT",),
        checks(ids_present(), not_sent("ISOLATION")),
    ),
    Case(
        "isolation-set-in-sql",
        ISOLATION,
        lambda ctx: in_transaction(
            ctx,
            "INSERT INTO bad_items VALUES (100, 1, 'x')",
            "SET TRANSACTION ISOLATION LEVEL READ COMMITTED",
        ),
        exc.DBAPIError,
        (r"unsupported isolation level: read committed", r"HINT:  .*REPEATABLE READ"),
        ids_present(),
    ),
    # -- oversized transactions --
    Case(
        "rows-3001-in-one-statement",
        LIMITS,
        rows_in_one_statement,
        exc.DBAPIError,
        (r"row limit exceeded", r"HINT:  .*at most 3,000 rows", r"sqlalchemy_dsql\.batch"),
        ids_present(),
    ),
    Case(
        "rows-2000-then-1001-in-one-transaction",
        LIMITS,
        rows_in_two_statements,
        exc.DBAPIError,
        (r"row limit exceeded", r"split the work into several transactions"),
        ids_present(),
    ),
    Case(
        "rows-3001-not-retried-by-run-transaction",
        LIMITS,
        rows_through_run_transaction,
        exc.DBAPIError,
        (r"row limit exceeded", r"split the work into several transactions"),
        checks(ids_present(), note("attempts", 1)),
    ),
    Case(
        "rows-3001-sync-psycopg",
        LIMITS,
        lambda ctx: asyncio.to_thread(rows_sync, ctx),
        exc.DBAPIError,
        (r"row limit exceeded", r"HINT:  .*at most 3,000 rows"),
        ids_present(),
    ),
    Case(
        "batch-size-over-the-limit",
        LIMITS,
        lambda ctx: batch_insert(ctx, _rows(10), batch_size=3001),
        ConfigurationError,
        (r"batch_size must be between 1 and 3000",),
        checks(ids_present(), nothing_sent),
    ),
    # -- malformed rows to the batch helpers --
    Case(
        "batch-rows-are-tuples",
        BATCH,
        lambda ctx: batch_insert(ctx, [(1000, 1, "a"), (1001, 1, "b")]),
        BatchFailed,
        (r"must be a mapping of column names to values", r"dict\(zip\(names, values\)\)"),
        checks(ids_present(), not_sent("INSERT")),
        cause=ConfigurationError,
    ),
    Case(
        "batch-one-dict-instead-of-a-list",
        BATCH,
        lambda ctx: batch_insert(ctx, {"id": 1000, "owner": 1}),
        ConfigurationError,
        (r"rows is a single mapping", r"for one row: \[row\]"),
        nothing_sent,
    ),
    Case(
        "batch-misspelt-column",
        BATCH,
        lambda ctx: batch_insert(ctx, [{"id": 1000, "owner": 1, "nmae": "typo"}]),
        BatchFailed,
        (r"columns bad_items does not have: \['nmae'\]", r"fix or drop those keys"),
        checks(ids_present(), not_sent("INSERT")),
        cause=ConfigurationError,
    ),
    Case(
        "batch-null-in-a-not-null-column",
        BATCH,
        lambda ctx: batch_insert(ctx, [*_rows(5), {"id": 1005, "owner": None}]),
        BatchFailed,
        (
            r"the batch of rows \[0, 6\) failed with IntegrityError",
            r"Committed \(0 rows in 0 batches\): none",
            r"write the rows of the failed and not-attempted ranges again",
        ),
        ids_present(),
        cause=exc.IntegrityError,
    ),
    Case(
        "batch-second-batch-hits-a-duplicate-key",
        BATCH,
        batch_second_batch_fails,
        BatchFailed,
        (
            r"the batch of rows \[2, 4\) failed with IntegrityError",
            r"Committed \(2 rows in 1 batches\): \[0, 2\)",
            r"write the rows of the failed and not-attempted ranges again",
        ),
        # Exactly the committed batch is in; nothing of the failed one.
        checks(ids_present(1000, 1001), note("ranges", ([(0, 2)], (2, 4), []))),
        cause=exc.IntegrityError,
        cleanup=lambda ctx: execute_raw(ctx.dsql, "DELETE FROM bad_items WHERE id >= 1000"),
    ),
    Case(
        "upsert-key-not-a-column",
        BATCH,
        lambda ctx: batch.upsert(ctx.engine(), ITEMS, _rows(2), key=["code"]),
        ConfigurationError,
        (r"key names columns bad_items does not have: \['code'\]",),
        nothing_sent,
    ),
    Case(
        "delete-from-a-table-without-primary-key",
        BATCH,
        delete_without_primary_key,
        ConfigurationError,
        (r"batch\.delete needs a primary key",),
        nothing_sent,
    ),
    # -- migrations with forbidden operations --
    Case(
        "migration-column-type-change",
        MIGRATIONS,
        migrate('op.alter_column("{t}_item", "code", type_=sa.String(50))'),
        MigrationRefused,
        (r"migration 0003", r"add a column of the new type, copy the data over"),
        migration_untouched,
        setup=applied_first_migration,
        cleanup=drop_migrated,
    ),
    Case(
        "migration-truncate",
        MIGRATIONS,
        migrate('op.execute("TRUNCATE {t}_item")'),
        MigrationRefused,
        (r"does not support TRUNCATE", r"delete the rows in batches of at most 3,000"),
        migration_untouched,
        setup=applied_first_migration,
        cleanup=drop_migrated,
    ),
    Case(
        "migration-not-null-column-without-default",
        MIGRATIONS,
        migrate('op.add_column("{t}_item", sa.Column("size", sa.Integer, nullable=False))'),
        MigrationRefused,
        (r"needs a server_default", r"Give it a server_default"),
        migration_untouched,
        setup=applied_first_migration,
        cleanup=drop_migrated,
    ),
    Case(
        "migration-set-not-null-psycopg",
        MIGRATIONS,
        migrate('op.alter_column("{t}_item", "code", nullable=False)', driver="psycopg"),
        MigrationRefused,
        (r"has no SET NOT NULL", r"op\.create_check_constraint\("),
        migration_untouched,
        setup=applied_first_migration,
        cleanup=drop_migrated,
    ),
    Case(
        "migration-lock-table",
        MIGRATIONS,
        migrate('op.execute("LOCK TABLE {t}_item IN EXCLUSIVE MODE")'),
        MigrationRefused,
        (r"does not support LOCK TABLE", r"drop the lock"),
        migration_untouched,
        setup=applied_first_migration,
        cleanup=drop_migrated,
    ),
    # -- settings in a URL, on each driver --
    *(
        Case(
            f"url-password-in-the-url-{driver}",
            URLS,
            lambda ctx, d=driver: url_connect(
                ctx, d, url_of(ctx, d, password=secret(ctx, URL_PASSWORD))
            ),
            ConfigurationError,
            (r"the URL carries a password", r"signs a fresh IAM token for every connection"),
            nothing_sent,
        )
        for driver in ("asyncpg", "psycopg2")
    ),
    Case(
        "url-password-parameter-psycopg",
        URLS,
        lambda ctx: url_connect(
            ctx, "psycopg", url_of(ctx, "psycopg") + "&password=" + secret(ctx, URL_PASSWORD)
        ),
        ConfigurationError,
        (r"the URL parameter password= carries a password", r"AWS_PROFILE or profile="),
        nothing_sent,
    ),
    Case(
        "url-secret-key-parameter-asyncpg",
        URLS,
        lambda ctx: url_connect(
            ctx,
            "asyncpg",
            url_of(ctx, "asyncpg", aws_secret_access_key=secret(ctx, URL_PASSWORD)),
        ),
        ConfigurationError,
        (r"the URL parameter aws_secret_access_key= carries a password",),
        nothing_sent,
    ),
    *(
        Case(
            f"url-password-in-connect-args-{driver}",
            URLS,
            lambda ctx, d=driver: url_connect(
                ctx, d, connect_args={"password": secret(ctx, URL_PASSWORD)}
            ),
            ConfigurationError,
            (r"connect_args carries a password", r"Remove it and give AWS credentials"),
            nothing_sent,
        )
        for driver in ("asyncpg", "psycopg_async", "psycopg2")
    ),
    Case(
        "url-misspelt-parameter-psycopg_async",
        URLS,
        lambda ctx: url_connect(ctx, "psycopg_async", url_of(ctx, "psycopg_async", sslmdoe="x")),
        ConfigurationError,
        (r"unknown URL parameter 'sslmdoe'", r"pass anything else to the driver in connect_args"),
        nothing_sent,
    ),
    Case(
        "url-asyncpg-option-on-psycopg2",
        URLS,
        lambda ctx: url_connect(ctx, "psycopg2", url_of(ctx, "psycopg2", command_timeout="5")),
        ConfigurationError,
        (r"unknown URL parameter 'command_timeout'", r"these libpq options: client_encoding"),
        nothing_sent,
    ),
    Case(
        "url-libpq-option-on-asyncpg",
        URLS,
        lambda ctx: url_connect(ctx, "asyncpg", url_of(ctx, "asyncpg", keepalives_idle="30")),
        ConfigurationError,
        (r"unknown URL parameter 'keepalives_idle'", r"these asyncpg options: command_timeout"),
        nothing_sent,
    ),
    Case(
        "url-stock-asyncpg-ssl-parameter",
        URLS,
        lambda ctx: url_connect(ctx, "asyncpg", url_of(ctx, "asyncpg", ssl="verify-full")),
        ConfigurationError,
        (r"unknown URL parameter 'ssl': write sslmode instead",),
        nothing_sent,
    ),
    Case(
        "url-amazon-token-duration-name",
        URLS,
        lambda ctx: url_connect(ctx, "psycopg", url_of(ctx, "psycopg", token_duration_secs="900")),
        ConfigurationError,
        (r"unknown URL parameter 'token_duration_secs': write token_lifetime instead",),
        nothing_sent,
    ),
    Case(
        "url-dbname-parameter",
        URLS,
        lambda ctx: url_connect(ctx, "psycopg2", url_of(ctx, "psycopg2", dbname="postgres")),
        ConfigurationError,
        (r"unknown URL parameter 'dbname': write the URL's database",),
        nothing_sent,
    ),
    Case(
        "url-session-as-a-parameter",
        URLS,
        lambda ctx: url_connect(ctx, "asyncpg", url_of(ctx, "asyncpg", session="default")),
        ConfigurationError,
        (r"session is an object: pass it as a keyword argument, not in the URL",),
        nothing_sent,
    ),
    Case(
        "url-sslmode-prefer-psycopg",
        URLS,
        lambda ctx: url_connect(ctx, "psycopg", url_of(ctx, "psycopg", sslmode="prefer")),
        ConfigurationError,
        (r"sslmode='prefer' is not supported: use 'verify-full'",),
        nothing_sent,
    ),
    Case(
        "url-sslmode-require-towards-dsql-psycopg2",
        URLS,
        lambda ctx: url_connect(ctx, "psycopg2", url_of(ctx, "psycopg2", sslmode="require")),
        ConfigurationError,
        (r"whose server is not verified; use sslmode='verify-full'", r"allow_insecure_tls"),
        nothing_sent,
    ),
    Case(
        "url-plaintext-forced-psycopg",
        URLS,
        lambda ctx: url_connect(
            ctx, "psycopg", url_of(ctx, "psycopg", sslmode="disable", allow_insecure_tls="true")
        ),
        ConnectError,
        (r"requires TLS", r"connect with sslmode='verify-full'"),
        nothing_sent,
    ),
    Case(
        "url-token-lifetime-over-a-week-psycopg_async",
        URLS,
        lambda ctx: url_connect(
            ctx, "psycopg_async", url_of(ctx, "psycopg_async", token_lifetime="691200")
        ),
        ConfigurationError,
        (r"token lifetime must be between 1 s and one week \(604800 s\), got 691200",),
        nothing_sent,
    ),
    Case(
        "url-age-in-words",
        URLS,
        lambda ctx: url_connect(ctx, "asyncpg", url_of(ctx, "asyncpg", max_connection_age="55m")),
        ConfigurationError,
        (r"max_connection_age='55m' is not a number of seconds; write e\.g\.",),
        nothing_sent,
    ),
    Case(
        "url-negative-jitter-asyncpg",
        URLS,
        lambda ctx: url_connect(ctx, "asyncpg", url_of(ctx, "asyncpg", connection_age_jitter="-5")),
        ConfigurationError,
        (r"connection_age_jitter must be at least 0 and below max_connection_age",),
        nothing_sent,
    ),
    Case(
        "url-jitter-not-below-the-age-psycopg",
        URLS,
        lambda ctx: url_connect(
            ctx,
            "psycopg",
            url_of(ctx, "psycopg", max_connection_age="600", connection_age_jitter="600"),
        ),
        ConfigurationError,
        (r"below max_connection_age \(600\.0 s\), got 600\.0",),
        nothing_sent,
    ),
    Case(
        "url-connect-timeout-zero-psycopg2",
        URLS,
        lambda ctx: url_connect(ctx, "psycopg2", url_of(ctx, "psycopg2", connect_timeout="0")),
        ConfigurationError,
        (r"connect_timeout must be positive \(seconds\), got 0",),
        nothing_sent,
    ),
    Case(
        "url-direct-tls-maybe-asyncpg",
        URLS,
        lambda ctx: url_connect(ctx, "asyncpg", url_of(ctx, "asyncpg", direct_tls="maybe")),
        ConfigurationError,
        (r"direct_tls='maybe' is not a yes/no value; write direct_tls=true or false",),
        nothing_sent,
    ),
    Case(
        "url-region-contradicts-endpoint-psycopg",
        URLS,
        lambda ctx: url_connect(ctx, "psycopg", url_of(ctx, "psycopg", region="eu-west-1")),
        ConfigurationError,
        (r"region 'eu-west-1' does not match the endpoint", r"drop region= or fix the host"),
        nothing_sent,
    ),
    Case(
        "url-uppercase-region-psycopg2",
        URLS,
        lambda ctx: url_connect(ctx, "psycopg2", url_of(ctx, "psycopg2", region="US-EAST-1")),
        ConfigurationError,
        (r"region='US-EAST-1' is not an AWS Region name", r"lower case, dashes"),
        nothing_sent,
    ),
    Case(
        "url-region-given-twice-asyncpg",
        URLS,
        lambda ctx: url_connect(
            ctx, "asyncpg", url_of(ctx, "asyncpg", region=["us-east-1", "us-west-2"])
        ),
        ConfigurationError,
        (r"the URL gives region 2 times \(us-east-1, us-west-2\); give it once",),
        nothing_sent,
    ),
    Case(
        "url-and-keyword-disagree-psycopg_async",
        URLS,
        lambda ctx: url_connect(
            ctx,
            "psycopg_async",
            url_of(ctx, "psycopg_async", connect_timeout="5"),
            connect_timeout=10,
        ),
        ConfigurationError,
        (r"connect_timeout is given twice, '5' in the URL and 10 as a keyword argument",),
        nothing_sent,
    ),
    Case(
        "url-bare-cluster-id-without-region-asyncpg",
        URLS,
        lambda ctx: url_without_region(ctx, "asyncpg"),
        ConfigurationError,
        (r"looks like a bare cluster id, which needs region=", r"\.dsql\.<region>\.on\.aws"),
        nothing_sent,
    ),
    Case(
        "url-malformed-endpoint-psycopg",
        URLS,
        lambda ctx: url_connect(ctx, "psycopg", url_of(ctx, "psycopg", host="cluster.dsql.on.aws")),
        ConfigurationError,
        (r"is not a valid Aurora DSQL endpoint", r"copy it from the console"),
        nothing_sent,
    ),
    Case(
        "url-several-hosts-asyncpg",
        URLS,
        lambda ctx: url_connect(
            ctx, "asyncpg", url_of(ctx, "asyncpg", host=f"{ctx.dsql.endpoint},127.0.0.1")
        ),
        ConfigurationError,
        (r"the URL names several hosts", r"connects to one cluster endpoint"),
        nothing_sent,
    ),
    *(
        Case(
            f"url-port-{port}-{driver}",
            URLS,
            lambda ctx, d=driver, p=port: url_connect(ctx, d, url_of(ctx, d, port=p)),
            ConfigurationError,
            (rf"port={port} is not a TCP port \(1 to 65535\)",),
            nothing_sent,
        )
        for port, driver in ((0, "asyncpg"), (70000, "psycopg"))
    ),
    Case(
        "url-port-twice-psycopg2",
        URLS,
        lambda ctx: url_connect(ctx, "psycopg2", url_of(ctx, "psycopg2") + "&port=5432"),
        ConfigurationError,
        (r"the URL gives the port twice", r"keep the one after the host"),
        nothing_sent,
    ),
    *(
        Case(
            f"url-database-other-than-postgres-{driver}",
            URLS,
            lambda ctx, d=driver: url_connect(ctx, d, url_of(ctx, d, database="app")),
            ConfigurationError,
            (r"database 'app'", r"single database, 'postgres'", r"end the URL with /postgres"),
            nothing_sent,
        )
        for driver in ("asyncpg", "psycopg_async", "psycopg", "psycopg2")
    ),
    Case(
        "url-hostaddr-does-not-resolve-psycopg",
        URLS,
        lambda ctx: url_connect(
            ctx, "psycopg", url_of(ctx, "psycopg", hostaddr="no-such-host.invalid")
        ),
        ConfigurationError,
        (r"hostaddr='no-such-host\.invalid' does not resolve", r"pass an IP address"),
        nothing_sent,
    ),
    Case(
        "url-hostaddr-does-not-resolve-asyncpg",
        URLS,
        lambda ctx: url_connect(
            ctx, "asyncpg", url_of(ctx, "asyncpg", hostaddr="no-such-host.invalid")
        ),
        ClusterUnreachable,
        (r"cannot reach .*dialled at no-such-host\.invalid", r"Check the endpoint .*DNS"),
        nothing_sent,
    ),
    *(
        Case(
            f"url-endpoint-not-in-dns-without-hostaddr-{driver}",
            URLS,
            lambda ctx, d=driver: url_without_hostaddr(ctx, d),
            ClusterUnreachable,
            (
                r"does not resolve",
                r"set hostaddr=<address> in the URL, or PGHOSTADDR in the environment",
            ),
            nothing_sent,
        )
        for driver in ("asyncpg", "psycopg_async", "psycopg2")
    ),
    Case(
        "url-ca-file-missing-psycopg2",
        URLS,
        lambda ctx: url_connect(
            ctx, "psycopg2", url_of(ctx, "psycopg2", sslrootcert=str(ctx.tmp_path / "ca.pem"))
        ),
        ConfigurationError,
        (r"cannot load the CA file", r"pass the path of a PEM file, or 'system'"),
        nothing_sent,
    ),
    Case(
        "url-system-store-does-not-trust-the-emulator-psycopg_async",
        URLS,
        lambda ctx: url_connect(
            ctx, "psycopg_async", url_of(ctx, "psycopg_async", sslrootcert="system")
        ),
        TLSVerificationFailed,
        (r"could not verify the TLS certificate of", r"pass its CA file as sslrootcert="),
        nothing_sent,
    ),
    Case(
        "url-no-credentials-anywhere-psycopg",
        URLS,
        lambda ctx: url_no_credentials(ctx, "psycopg"),
        ConfigurationError,
        (r"no AWS credentials found", r"set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"),
        nothing_sent,
    ),
    Case(
        "url-unknown-profile-asyncpg",
        URLS,
        lambda ctx: url_unknown_profile(ctx, "asyncpg"),
        ConfigurationError,
        (r"AWS profile 'no-such-profile'", r"check its name, create it"),
        nothing_sent,
    ),
]


# -- running a case -------------------------------------------------------------------------


@pytest.fixture(scope="module")
async def seeded(dsql: LocalDSQL) -> AsyncIterator[None]:
    await execute_raw(
        dsql,
        "DROP TABLE IF EXISTS bad_items",
        "CREATE TABLE bad_items (id int PRIMARY KEY, owner int NOT NULL, name varchar(10))",
        "INSERT INTO bad_items VALUES (1, 1, 'one'), (2, 1, 'two'), (3, 2, 'three')",
    )
    yield
    await execute_raw(dsql, "DROP TABLE IF EXISTS bad_items")


@pytest.fixture(scope="module")
def credentials(dsql: LocalDSQL) -> tuple[Any, boto3.Session]:
    """One aioboto3 and one boto3 session for the module: a token client each, made once."""
    aio = aioboto3.Session(
        aws_access_key_id=dsql.credentials.access_key,
        aws_secret_access_key=dsql.credentials.secret_key,
    )
    sync = boto3.Session(
        aws_access_key_id=dsql.credentials.access_key,
        aws_secret_access_key=dsql.credentials.secret_key,
    )
    return aio, sync


@pytest.fixture
def minted(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every token signed while the test runs, by our generators or the emulator's helper."""
    tokens: list[str] = []
    async_token, sync_token, local_token = (
        AsyncTokenGenerator.token,
        TokenGenerator.token,
        LocalDSQL.token,
    )

    async def recording_async(self: AsyncTokenGenerator, *args: Any, **kwargs: Any) -> str:
        tokens.append(await async_token(self, *args, **kwargs))
        return tokens[-1]

    def recording_sync(self: TokenGenerator, *args: Any, **kwargs: Any) -> str:
        tokens.append(sync_token(self, *args, **kwargs))
        return tokens[-1]

    def recording_local(self: LocalDSQL, *args: Any, **kwargs: Any) -> str:
        tokens.append(local_token(self, *args, **kwargs))
        return tokens[-1]

    monkeypatch.setattr(AsyncTokenGenerator, "token", recording_async)
    monkeypatch.setattr(TokenGenerator, "token", recording_sync)
    monkeypatch.setattr(LocalDSQL, "token", recording_local)
    return tokens


async def _sessions_closed(dsql: LocalDSQL, before: set[int]) -> None:
    """The case's sessions are gone (the emulator notices a client's goodbye shortly after)."""
    left = set(dsql.session_ids()) - before
    for _ in range(150):
        if not left:
            break
        await asyncio.sleep(0.02)
        left = set(dsql.session_ids()) - before
    assert not left, f"sessions left open on the emulator: {sorted(left)}"


async def _dispose(ctx: Ctx) -> list[str]:
    """Dispose of the case's engines; return what a user could print of them."""
    shown: list[str] = []
    for engine in [*ctx.engines, *ctx.url_engines]:
        sync = engine.sync_engine if isinstance(engine, AsyncEngine) else engine
        shown += [repr(engine), repr(sync.pool), sync.pool.status(), str(sync.url)]
        if engine in ctx.engines:
            # Our engines' URLs carry no password at all, even rendered with it.
            shown += [sync.url.render_as_string(hide_password=False)]
            shown += [repr(pool_counters(engine))]
        if isinstance(engine, AsyncEngine):
            await engine.dispose()
        else:
            await asyncio.to_thread(engine.dispose)
    shown += [repr(g) for g in auth._async_generators.values()]
    shown += [repr(g) for g in auth._generators.values()]
    return shown


def _case_prefix(case: Case) -> str:
    return "bi_" + re.sub(r"\W+", "_", case.id)[:40]


@pytest.mark.parametrize(
    "case",
    CASES,
    ids=[case.id for case in CASES],
)
async def test_bad_input(
    case: Case,
    dsql: LocalDSQL,
    seeded: None,
    credentials: tuple[Any, boto3.Session],
    minted: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    ctx = Ctx(dsql, _case_prefix(case), tmp_path, monkeypatch, *credentials)
    sessions_before = set(dsql.session_ids())
    shown: list[str] = []
    seed_after: list[tuple[Any, ...]] = []
    with caplog.at_level(logging.DEBUG):
        try:
            if case.setup is not None:
                await case.setup(ctx)
            log = dsql.statement_log
            assert log is not None
            ctx.mark = log[-1] if log else None
            try:
                with pytest.raises(case.raises) as caught:
                    await case.action(ctx)
            finally:
                shown = await _dispose(ctx)
                # Before any check's observer adds statements of its own.
                ctx.sent = ctx.statements_since_mark()
            error = caught.value
            message = str(error)
            for advice in case.advice:
                assert re.search(advice, message, re.S), f"{advice!r} not in: {message}"
            if case.cause is not None:
                assert isinstance(error.__cause__, case.cause), repr(error.__cause__)
            await _sessions_closed(dsql, sessions_before)
            await case.applied(ctx)
        finally:
            if case.cleanup is not None:
                await case.cleanup(ctx)
            seed_after = await _seed_restored(dsql)
        assert seed_after == SEED, "bad_items changed"
    texts = [*exception_texts(error), *shown, caplog.text]
    texts += [record.getMessage() for record in caplog.records]
    signatures = [t.rsplit("X-Amz-Signature=", 1)[-1] for t in minted]
    assert_no_secrets(texts, [*secrets_of(dsql), *minted, *signatures, *ctx.secrets])


async def _seed_restored(dsql: LocalDSQL) -> list[tuple[Any, ...]]:
    """bad_items as the case left it; restored to SEED, so that a broken case breaks no other."""
    rows = [tuple(r) for r in await observe(dsql, "SELECT * FROM bad_items ORDER BY id")]
    if rows != SEED:
        await execute_raw(
            dsql,
            "DELETE FROM bad_items",
            "INSERT INTO bad_items VALUES (1, 1, 'one'), (2, 1, 'two'), (3, 2, 'three')",
        )
    return rows


def test_the_catalogue_covers_every_category() -> None:
    by_category: dict[str, int] = {}
    for case in CASES:
        by_category[case.category] = by_category.get(case.category, 0) + 1
    assert set(by_category) == {
        ENDPOINTS,
        CREDENTIALS,
        TOKENS,
        TLS,
        STATEMENTS,
        MIXED,
        SAVEPOINTS,
        ISOLATION,
        LIMITS,
        BATCH,
        MIGRATIONS,
        URLS,
    }
    assert len(CASES) >= 100
    assert len({case.id for case in CASES}) == len(CASES)
