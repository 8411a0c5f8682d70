"""The auroradsql dialect through the emulator, with every driver."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    ForeignKey,
    Index,
    MetaData,
    String,
    Table,
    Uuid,
    create_engine,
    exc,
    func,
    insert,
    inspect,
    make_url,
    select,
    text,
)
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.orm import Session

from harness.dialect import DRIVERS, Driver
from sqlalchemy_dsql.dialect.asyncpg import AuroraDSQLDialect_asyncpg
from sqlalchemy_dsql.dialect.psycopg import (
    AuroraDSQLDialect_psycopg,
    AuroraDSQLDialect_psycopg_async,
)
from sqlalchemy_dsql.dialect.psycopg2 import AuroraDSQLDialect_psycopg2
from sqlalchemy_dsql.errors import DDLAfterDMLError, SavepointsNotSupported
from sqlalchemy_dsql.local import LocalDSQL

pytestmark = pytest.mark.integration


@pytest.fixture(params=DRIVERS)
async def driver(request: pytest.FixtureRequest, dsql: LocalDSQL) -> AsyncIterator[Driver]:
    made = Driver(dsql, request.param)
    yield made
    await made.dispose()


def _statements_since(dsql: LocalDSQL, mark: int) -> list[str]:
    assert dsql.statement_log is not None
    return [entry.sql for entry in list(dsql.statement_log)[mark:]]


def _mark(dsql: LocalDSQL) -> int:
    assert dsql.statement_log is not None
    return len(dsql.statement_log)


# -- which dialect a URL gives --------------------------------------------------

ENDPOINT = "abcdefghijklmnopqrstuvwxyz.dsql.us-east-1.on.aws"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (f"auroradsql+asyncpg://{ENDPOINT}/postgres", AuroraDSQLDialect_asyncpg),
        (f"auroradsql+psycopg://{ENDPOINT}/postgres", AuroraDSQLDialect_psycopg_async),
        (f"auroradsql+psycopg_async://{ENDPOINT}/postgres", AuroraDSQLDialect_psycopg_async),
        (f"auroradsql://{ENDPOINT}/postgres", AuroraDSQLDialect_asyncpg),
    ],
)
def test_async_urls_give_our_async_dialects(url: str, expected: type) -> None:
    engine = create_async_engine(url)
    assert type(engine.dialect) is expected
    assert engine.dialect.name == "auroradsql"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (f"auroradsql+psycopg://{ENDPOINT}/postgres", AuroraDSQLDialect_psycopg),
        (f"auroradsql+psycopg2://{ENDPOINT}/postgres", AuroraDSQLDialect_psycopg2),
        (f"auroradsql://{ENDPOINT}/postgres", AuroraDSQLDialect_psycopg),
    ],
)
def test_sync_urls_give_our_sync_dialects(url: str, expected: type) -> None:
    assert type(create_engine(url).dialect) is expected


# -- transactions ----------------------------------------------------------------


@pytest.mark.parametrize("level", ["READ COMMITTED", "SERIALIZABLE", "READ UNCOMMITTED", "bogus"])
def test_other_isolation_levels_are_refused_at_create_engine(level: str) -> None:
    # SQLAlchemy's own wording (its compliance suite matches it), then DSQL's reason.
    expected = (
        f"Invalid value '{level}' for isolation_level. Valid isolation levels for "
        "'auroradsql' are REPEATABLE READ, AUTOCOMMIT: Aurora DSQL runs every"
    )
    with pytest.raises(exc.ArgumentError, match=re.escape(expected)):
        create_engine(f"auroradsql+psycopg://{ENDPOINT}/postgres", isolation_level=level)


async def test_isolation_level_per_connection(driver: Driver, dsql: LocalDSQL) -> None:
    def refused(conn: Connection) -> None:
        with pytest.raises(exc.ArgumentError, match="REPEATABLE READ"):
            conn.execution_options(isolation_level="READ COMMITTED")

    mark = _mark(dsql)
    await driver.run(refused)
    assert not any("READ COMMITTED" in sql.upper() for sql in _statements_since(dsql, mark))

    def level(conn: Connection) -> str:
        return str(conn.get_isolation_level())

    assert await driver.run(level) == "REPEATABLE READ"


async def test_autocommit(driver: Driver) -> None:
    table_name = f"autocommit_{driver.name}"

    def write_then_roll_back(conn: Connection) -> None:
        conn.execute(text(f"CREATE TABLE IF NOT EXISTS {table_name} (id bigint PRIMARY KEY)"))
        conn.execute(text(f"DELETE FROM {table_name}"))
        conn.execute(text(f"INSERT INTO {table_name} VALUES (1)"))
        conn.rollback()  # nothing to roll back: each statement committed on its own

    def count(conn: Connection) -> int:
        return int(conn.execute(text(f"SELECT count(*) FROM {table_name}")).scalar_one())

    await driver.run(write_then_roll_back, isolation_level="AUTOCOMMIT")
    assert await driver.run(count) == 1


async def test_executemany_insert_is_sent_as_multi_row_statements(
    driver: Driver, dsql: LocalDSQL
) -> None:
    # One statement per page of at most 1,000 rows, not one per row. The log has a line per
    # statement parsed: asyncpg prepares each page's SQL once, psycopg parses every execution.
    table = Table(f"many_{driver.name}", MetaData(), Column("id", BigInteger, primary_key=True))
    rows = [{"id": i} for i in range(2500)]

    def insert_rows(conn: Connection) -> int:
        table.drop(conn, checkfirst=True)
        conn.commit()
        table.create(conn)
        conn.commit()
        conn.execute(table.insert(), rows)
        conn.commit()
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())

    mark = _mark(dsql)
    assert await driver.run(insert_rows) == 2500
    inserts = [sql for sql in _statements_since(dsql, mark) if sql.startswith("INSERT")]
    assert {sql.count("), (") + 1 for sql in inserts} == {1000, 500}


async def test_no_read_committed_after_pool_reset(driver: Driver, dsql: LocalDSQL) -> None:
    def work(conn: Connection) -> int:
        value = conn.execute(select(1)).scalar_one()
        conn.commit()
        return int(value)

    mark = _mark(dsql)
    rejections = dsql.totals()["rejections"]
    for options in (
        {},
        {"isolation_level": "AUTOCOMMIT"},
        {},
        {"isolation_level": "REPEATABLE READ"},
    ):
        assert await driver.run(work, **options) == 1
    seen = " ".join(_statements_since(dsql, mark)).upper()
    assert "READ COMMITTED" not in seen
    assert dsql.totals()["rejections"] == rejections


async def test_read_only_transactions(driver: Driver) -> None:
    def read_only(conn: Connection) -> None:
        assert conn.execute(text("SHOW transaction_read_only")).scalar_one() == "on"
        with pytest.raises(exc.DBAPIError, match="read-only"):
            conn.execute(text("CREATE TABLE never_t (id bigint PRIMARY KEY)"))

    await driver.run(read_only, postgresql_readonly=True)


async def test_begin_nested_is_refused_before_the_server(driver: Driver, dsql: LocalDSQL) -> None:
    def nested(conn: Connection) -> int:
        conn.execute(select(1))
        with pytest.raises(SavepointsNotSupported, match="savepoint"):
            conn.begin_nested()
        # The outer transaction is untouched.
        return int(conn.execute(select(2)).scalar_one())

    mark = _mark(dsql)
    assert await driver.run(nested) == 2
    assert not any("SAVEPOINT" in sql.upper() for sql in _statements_since(dsql, mark))


async def test_session_in_savepoint_mode_is_refused(driver: Driver) -> None:
    def join(conn: Connection) -> None:
        conn.begin()
        session = Session(bind=conn, join_transaction_mode="create_savepoint")
        with pytest.raises(SavepointsNotSupported, match="join_transaction_mode"):
            session.execute(select(1))
        session.close()

    await driver.run(join)


# -- DDL and DML -----------------------------------------------------------------


async def test_ddl_after_dml_is_refused_and_nothing_is_committed(driver: Driver) -> None:
    table_name = f"ddl_guard_{driver.name}"

    def setup(conn: Connection) -> None:
        conn.execute(text(f"CREATE TABLE IF NOT EXISTS {table_name} (id uuid PRIMARY KEY)"))
        conn.commit()

    def mixed(conn: Connection) -> None:
        conn.execute(text(f"INSERT INTO {table_name} VALUES (:id)"), {"id": uuid.uuid4()})
        with pytest.raises(DDLAfterDMLError, match="Nothing was committed"):
            conn.execute(text(f"CREATE TABLE {table_name}_never (id bigint PRIMARY KEY)"))
        conn.rollback()

    def check(conn: Connection) -> tuple[int, bool]:
        rows = conn.execute(text(f"SELECT count(*) FROM {table_name}")).scalar_one()
        return int(rows), inspect(conn).has_table(f"{table_name}_never")

    await driver.run(setup)
    await driver.run(mixed)
    assert await driver.run(check) == (0, False)


async def test_several_ddl_statements_in_one_begin_block(driver: Driver) -> None:
    prefix = f"multi_{driver.name}"

    def several(conn: Connection) -> None:
        with conn.begin():
            conn.execute(select(1))
            conn.execute(text(f"CREATE TABLE IF NOT EXISTS {prefix}_a (id bigint PRIMARY KEY)"))
            conn.execute(text(f"CREATE TABLE IF NOT EXISTS {prefix}_b (id bigint PRIMARY KEY)"))
            conn.execute(text(f"INSERT INTO {prefix}_a VALUES (1) ON CONFLICT DO NOTHING"))

    def check(conn: Connection) -> list[str]:
        names = set(inspect(conn).get_table_names())
        return sorted(names & {f"{prefix}_a", f"{prefix}_b"})

    await driver.run(several)
    assert await driver.run(check) == [f"{prefix}_a", f"{prefix}_b"]


async def test_ddl_text_after_a_comment_is_committed_on_its_own(driver: Driver) -> None:
    table_name = f"commented_ddl_{driver.name}"

    def commented(conn: Connection) -> None:
        with conn.begin():
            conn.execute(text(f"DROP TABLE IF EXISTS {table_name}"))
            conn.execute(
                text(f"-- why it exists\nCREATE TABLE {table_name} (id bigint PRIMARY KEY)")
            )
            # DSQL refuses this write in the DDL's transaction unless the dialect ended it.
            conn.execute(text(f"/* first row */ INSERT INTO {table_name} VALUES (1)"))

    def rows(conn: Connection) -> int:
        return int(conn.execute(text(f"SELECT count(*) FROM {table_name}")).scalar_one())

    await driver.run(commented)
    assert await driver.run(rows) == 1


def _model(suffix: str) -> tuple[MetaData, Table, Table]:
    metadata = MetaData()
    owner = Table(
        f"owner_{suffix}",
        metadata,
        Column("id", Uuid, primary_key=True, server_default=func.gen_random_uuid()),
        Column("name", String(80), nullable=False),
        Column("email", String(200)),
    )
    pet = Table(
        f"pet_{suffix}",
        metadata,
        Column("id", Uuid, primary_key=True, server_default=func.gen_random_uuid()),
        Column("owner_id", ForeignKey(owner.c.id), nullable=False),
        Column("name", String(80)),
    )
    Index(f"ix_owner_{suffix}_email", owner.c.email, unique=True, auroradsql_include=["name"])
    Index(f"ix_pet_{suffix}_owner", pet.c.owner_id)
    return metadata, owner, pet


async def test_run_sync_create_all_inside_begin(driver: Driver) -> None:
    metadata, owner, pet = _model(f"rs_{driver.name}")

    def create(conn: Connection) -> None:
        with conn.begin():
            metadata.drop_all(conn)
            metadata.create_all(conn)

    def use(conn: Connection) -> tuple[int, set[str]]:
        with conn.begin():
            owner_id = conn.execute(
                insert(owner).values(name="Ana", email="ana@example.com").returning(owner.c.id)
            ).scalar_one()
            conn.execute(insert(pet).values(owner_id=owner_id, name="Rex"))
        indexes = {index["name"] for index in inspect(conn).get_indexes(owner.name)}
        return int(conn.execute(select(func.count()).select_from(pet)).scalar_one()), indexes

    await driver.run(create)
    count, indexes = await driver.run(use)
    assert count == 1
    assert f"ix_owner_rs_{driver.name}_email" in indexes


async def test_reflection_round_trip(driver: Driver) -> None:
    metadata, owner, _pet = _model(f"rf_{driver.name}")

    def create_and_reflect(conn: Connection) -> MetaData:
        with conn.begin():
            metadata.drop_all(conn)
            metadata.create_all(conn)
        reflected = MetaData()
        reflected.reflect(conn, only=[owner.name, f"pet_rf_{driver.name}"])
        return reflected

    reflected = await driver.run(create_and_reflect)
    table = reflected.tables[owner.name]
    assert [c.name for c in table.columns] == ["id", "name", "email"]
    pet = reflected.tables[f"pet_rf_{driver.name}"]
    (fk,) = pet.foreign_keys
    assert fk.column.table.name == owner.name
    (email_index,) = [i for i in table.indexes if i.name == f"ix_owner_rf_{driver.name}_email"]
    assert email_index.unique
    # Only our prefix, and no USING: it would not compile back for DSQL.
    assert dict(email_index.dialect_kwargs) == {"auroradsql_include": ["name"]}


async def test_bare_name_url_connects(dsql: LocalDSQL) -> None:
    url = make_url(dsql.url("asyncpg")).set(drivername="auroradsql")
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            assert (await conn.execute(select(1))).scalar_one() == 1
    finally:
        await engine.dispose()
