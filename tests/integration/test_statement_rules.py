"""DSQL's statement rules, in the simple and the extended query protocol."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import psycopg
import pytest

from sqlalchemy_dsql.local import LocalDSQL

pytestmark = pytest.mark.integration

# (statement, SQLSTATE, a word the message must contain)
REFUSED = [
    ("SAVEPOINT s1", "0A000", "savepoint"),
    ("RELEASE SAVEPOINT s1", "0A000", "savepoint"),
    ("ROLLBACK TO SAVEPOINT s1", "0A000", "savepoint"),
    ("TRUNCATE rules_t", "0A000", "truncate"),
    ("CREATE TEMPORARY TABLE tmp_t (a int)", "0A000", "temporary"),
    ("CREATE UNLOGGED TABLE unlogged_t (a int)", "0A000", "unlogged"),
    (
        "CREATE TRIGGER trg BEFORE INSERT ON rules_t FOR EACH ROW EXECUTE FUNCTION f()",
        "0A000",
        "trigger",
    ),
    ("DO $$ BEGIN NULL; END $$", "0A000", "do"),
    (
        "CREATE FUNCTION plf() RETURNS int LANGUAGE plpgsql AS $$ BEGIN RETURN 1; END $$",
        "0A000",
        "plpgsql",
    ),
    ("CREATE EXTENSION hstore", "0A000", "extension"),
    ("LISTEN ch", "0A000", "listen"),
    ("NOTIFY ch", "0A000", "notify"),
    ("UNLISTEN *", "0A000", "unlisten"),
    ("SELECT pg_advisory_lock(1)", "0A000", "advisory"),
    ("SELECT pg_advisory_unlock_all()", "0A000", "advisory"),
    ("DECLARE c1 CURSOR FOR SELECT 1", "0A000", "cursor"),
    ("CREATE TYPE mood AS ENUM ('happy')", "0A000", "createenum"),
    ("CREATE TABLE arr_t (id bigint PRIMARY KEY, tags text[])", "0A000", "text[]"),
    ("CREATE TABLE serial_t (id serial PRIMARY KEY)", "42704", 'type "serial" does not exist'),
    ("CREATE SEQUENCE seq_nocache", "0A000", "cache"),
    ("CREATE SEQUENCE seq_small CACHE 100", "22023", "cache"),
    ("CREATE SEQUENCE seq_int AS integer CACHE 1", "22023", "bigint"),
    (
        "CREATE TABLE ident_t (id int GENERATED ALWAYS AS IDENTITY (CACHE 1) PRIMARY KEY)",
        "0A000",
        "bigint",
    ),
    ("CREATE INDEX plain_idx ON rules_t (a)", "0A000", "async"),
    ("CREATE INDEX ASYNC using_idx ON rules_t USING hash (a)", "0A000", "using"),
    ("CREATE INDEX ASYNC desc_idx ON rules_t (a DESC)", "0A000", "sort order"),
    ("CREATE INDEX CONCURRENTLY conc_idx ON rules_t (a)", "0A000", "concurrently"),
    ("BEGIN ISOLATION LEVEL READ COMMITTED", "0A000", "isolation"),
    ("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", "0A000", "isolation"),
    ("SET statement_timeout = 1000", "0A000", "statement_timeout"),
    ("SET work_mem = '64MB'", "0A000", "work_mem"),
    ("LOCK TABLE rules_t", "0A000", "lock"),
    ("SELECT * FROM rules_t FOR SHARE", "0A000", "share"),
    ("ALTER TABLE rules_t ALTER COLUMN a TYPE bigint", "0A000", "type"),
    ("ALTER TABLE rules_t ADD COLUMN b int DEFAULT 1", "0A000", "default"),
    ("ALTER TABLE rules_t ADD COLUMN c int NOT NULL", "0A000", "not null"),
    ("ALTER TABLE rules_t ALTER COLUMN a SET NOT NULL", "0A000", "not null"),
    ("CREATE MATERIALIZED VIEW mv AS SELECT 1", "0A000", "createtableas"),
    ("CREATE TABLE part_t (id bigint) PARTITION BY RANGE (id)", "0A000", "partition"),
    ("CREATE DATABASE other", "0A000", "database"),
]


@pytest.fixture(scope="module")
async def _rules_table(dsql: LocalDSQL) -> None:
    conn = await asyncpg.connect(**dsql.connect_kwargs())
    await conn.execute("CREATE TABLE IF NOT EXISTS rules_t (id bigint PRIMARY KEY, a int)")
    await conn.close()


@pytest.fixture
async def conn(dsql: LocalDSQL, _rules_table: None) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(**dsql.connect_kwargs(), statement_cache_size=0)
    yield connection
    await connection.close()


def _check(error: asyncpg.PostgresError, sqlstate: str, word: str) -> None:
    assert error.sqlstate == sqlstate, (error.sqlstate, str(error))
    assert word in str(error).lower(), str(error)


@pytest.mark.parametrize(("sql", "sqlstate", "word"), REFUSED, ids=[r[0][:40] for r in REFUSED])
async def test_refused_in_simple_protocol(
    conn: asyncpg.Connection, sql: str, sqlstate: str, word: str
) -> None:
    with pytest.raises(asyncpg.PostgresError) as caught:
        await conn.execute(sql)  # no arguments: asyncpg sends a simple Query
    _check(caught.value, sqlstate, word)
    assert await conn.fetchval("SELECT 1") == 1


@pytest.mark.parametrize(("sql", "sqlstate", "word"), REFUSED, ids=[r[0][:40] for r in REFUSED])
async def test_refused_in_extended_protocol(
    conn: asyncpg.Connection, sql: str, sqlstate: str, word: str
) -> None:
    with pytest.raises(asyncpg.PostgresError) as caught:
        await conn.fetch(sql)  # Parse/Bind/Execute/Sync
    _check(caught.value, sqlstate, word)
    assert await conn.fetchval("SELECT $1::int", 7) == 7


@pytest.mark.parametrize(
    ("sql", "sqlstate", "word"), REFUSED[:12], ids=[r[0][:40] for r in REFUSED[:12]]
)
def test_refused_for_psycopg(dsql: LocalDSQL, sql: str, sqlstate: str, word: str) -> None:
    with psycopg.connect(dsql.conninfo(), autocommit=True) as connection:
        with pytest.raises(psycopg.Error) as caught:
            connection.execute(sql)
        assert caught.value.sqlstate == sqlstate
        assert word in str(caught.value).lower()
        assert connection.execute("SELECT %s::int", (3,)).fetchone() == (3,)


async def test_refusal_inside_a_transaction_aborts_it_like_a_server_error(
    conn: asyncpg.Connection,
) -> None:
    await conn.execute("BEGIN")
    await conn.execute("SELECT 1")
    with pytest.raises(asyncpg.FeatureNotSupportedError):
        await conn.execute("SAVEPOINT inner_work")
    with pytest.raises(asyncpg.InFailedSQLTransactionError):
        await conn.execute("SELECT 1")
    await conn.execute("ROLLBACK")
    assert await conn.fetchval("SELECT 2") == 2


async def test_pipelined_extended_batch_fails_at_the_refused_message(dsql: LocalDSQL) -> None:
    with psycopg.connect(dsql.conninfo(), autocommit=True) as connection:

        def pipelined() -> None:
            with connection.pipeline():
                connection.execute("SELECT 1")
                connection.execute("SELECT pg_advisory_lock(%s)", (1,))
                connection.execute("SELECT 3")

        with pytest.raises(psycopg.errors.FeatureNotSupported):
            pipelined()
        assert connection.execute("SELECT 4").fetchone() == (4,)


ACCEPTED = [
    "CREATE TABLE IF NOT EXISTS ok_ident (id bigint GENERATED BY DEFAULT AS IDENTITY (CACHE 1) "
    "PRIMARY KEY, note text)",
    "CREATE SEQUENCE IF NOT EXISTS ok_seq CACHE 65536",
    "SET search_path = public",
    "SET enable_seqscan = off",
    "RESET ALL",
    "SELECT * FROM rules_t FOR UPDATE",
    "SHOW statement_timeout",
    "BEGIN READ ONLY",
    "COMMIT",
]


@pytest.mark.parametrize("sql", ACCEPTED)
async def test_accepted(conn: asyncpg.Connection, sql: str) -> None:
    await conn.execute(sql)


async def test_ddl_and_dml_never_share_a_transaction(conn: asyncpg.Connection) -> None:
    await conn.execute("BEGIN")
    await conn.execute("INSERT INTO rules_t VALUES (1001, 1) ON CONFLICT DO NOTHING")
    with pytest.raises(asyncpg.FeatureNotSupportedError, match="ddl and dml"):
        await conn.execute("CREATE TABLE mixed_t (id bigint PRIMARY KEY)")
    await conn.execute("ROLLBACK")

    await conn.execute("BEGIN")
    await conn.execute("CREATE TABLE IF NOT EXISTS mixed_t (id bigint PRIMARY KEY)")
    with pytest.raises(asyncpg.FeatureNotSupportedError, match="ddl and dml"):
        await conn.fetch("INSERT INTO mixed_t VALUES ($1)", 1)
    await conn.execute("ROLLBACK")


async def test_one_ddl_statement_per_transaction(conn: asyncpg.Connection) -> None:
    await conn.execute("BEGIN")
    await conn.execute("CREATE TABLE IF NOT EXISTS first_t (id bigint PRIMARY KEY)")
    with pytest.raises(
        asyncpg.FeatureNotSupportedError,
        match="multiple ddl statements not supported in a transaction",
    ):
        await conn.execute("CREATE TABLE IF NOT EXISTS second_t (id bigint PRIMARY KEY)")
    await conn.execute("ROLLBACK")
    with pytest.raises(
        asyncpg.FeatureNotSupportedError,
        match="multiple ddl statements not supported in a transaction",
    ):
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS third_t (id bigint PRIMARY KEY); "
            "CREATE TABLE IF NOT EXISTS fourth_t (id bigint PRIMARY KEY)"
        )
    # Reads may accompany DDL: SQLAlchemy's create_all checks for the table first.
    await conn.execute("BEGIN")
    await conn.fetch("SELECT relname FROM pg_class WHERE relname = $1", "first_t")
    await conn.execute("CREATE TABLE IF NOT EXISTS first_t (id bigint PRIMARY KEY)")
    await conn.execute("COMMIT")


async def test_ddl_then_dml_in_separate_transactions(conn: asyncpg.Connection) -> None:
    async with conn.transaction():
        await conn.execute("CREATE TABLE IF NOT EXISTS separate_t (id bigint PRIMARY KEY)")
    async with conn.transaction():
        await conn.execute("INSERT INTO separate_t VALUES (1) ON CONFLICT DO NOTHING")
    assert await conn.fetchval("SELECT count(*) FROM separate_t") == 1
