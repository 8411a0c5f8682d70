"""Async DDL jobs, transaction limits, connection age, OCC conflicts and fault hooks."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator

import asyncpg
import psycopg
import pytest

from sqlalchemy_dsql.local import LocalDSQL

pytestmark = pytest.mark.integration

# What asyncpg raises for a connection the server closed, depending on when it noticed.
_CLOSED = (asyncpg.ConnectionDoesNotExistError, asyncpg.InterfaceError, ConnectionError)


@pytest.fixture
async def conn(dsql: LocalDSQL) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(**dsql.connect_kwargs())
    yield connection
    await connection.close()


@pytest.fixture(scope="module")
def strict() -> Iterator[LocalDSQL]:
    """An emulator with tiny limits, so age and row limits fire within a test."""
    with LocalDSQL(
        max_connection_age=2, max_transaction_age=1, max_rows_per_transaction=10
    ) as emulator:
        yield emulator


# -- async DDL -------------------------------------------------------------


async def test_index_job_completes_and_is_listed(conn: asyncpg.Connection) -> None:
    await conn.execute("CREATE TABLE IF NOT EXISTS job_t (id bigint PRIMARY KEY, a int, b text)")
    await conn.execute(
        "INSERT INTO job_t SELECT g, g % 7, 'x' FROM generate_series(1, 100) g "
        "ON CONFLICT DO NOTHING"
    )
    job_id = await conn.fetchval(
        "CREATE UNIQUE INDEX ASYNC IF NOT EXISTS job_t_b_idx ON job_t (id, a NULLS FIRST) "
        "INCLUDE (b) NULLS NOT DISTINCT WHERE a > 0"
    )
    assert isinstance(job_id, str)
    assert len(job_id) == 26
    assert await conn.fetchval("CALL sys.wait_for_job($1)", job_id) is True
    row = await conn.fetchrow("SELECT status, job_type FROM sys.jobs WHERE job_id = $1", job_id)
    assert (row["status"], row["job_type"]) == ("completed", "INDEX_BUILD")
    definition = await conn.fetchval(
        "SELECT indexdef FROM pg_indexes WHERE indexname = 'job_t_b_idx'"
    )
    assert "UNIQUE" in definition
    assert "INCLUDE (b)" in definition
    assert "NULLS NOT DISTINCT" in definition
    assert "WHERE (a > 0)" in definition


async def test_call_form_of_wait_for_job(conn: asyncpg.Connection) -> None:
    await conn.execute("CREATE TABLE IF NOT EXISTS call_t (id bigint PRIMARY KEY, a int)")
    records = await conn.fetch("CREATE INDEX ASYNC IF NOT EXISTS call_t_a ON call_t (a)")
    job_id = records[0]["job_id"]
    result = await conn.fetch(f"CALL sys.wait_for_job('{job_id}')")
    assert result[0][0] is True


async def test_index_job_finds_the_table_on_the_sessions_search_path(
    conn: asyncpg.Connection,
) -> None:
    # The same table name in two schemas: the job must index the one the session meant.
    await conn.execute("CREATE SCHEMA IF NOT EXISTS path_s")
    for qualified in ("public.path_t", "path_s.path_t"):
        await conn.execute(f"CREATE TABLE IF NOT EXISTS {qualified} (id int PRIMARY KEY, a int)")
    await conn.execute("SET search_path TO path_s")
    try:
        job_id = await conn.fetchval("CREATE INDEX ASYNC IF NOT EXISTS path_t_a ON path_t (a)")
        assert await conn.fetchval("CALL sys.wait_for_job($1)", job_id) is True
        schemas = await conn.fetch("SELECT schemaname FROM pg_indexes WHERE indexname = 'path_t_a'")
        assert [r["schemaname"] for r in schemas] == ["path_s"]
    finally:
        await conn.execute("RESET search_path")


async def test_unique_build_over_duplicates_fails_the_job(conn: asyncpg.Connection) -> None:
    await conn.execute("CREATE TABLE IF NOT EXISTS dup_t (id bigint PRIMARY KEY, email text)")
    await conn.execute("INSERT INTO dup_t VALUES (1, 'a@x'), (2, 'a@x') ON CONFLICT DO NOTHING")
    job_id = await conn.fetchval("CREATE UNIQUE INDEX ASYNC dup_t_email ON dup_t (email)")
    assert await conn.fetchval("CALL sys.wait_for_job($1)", job_id) is False
    status, details = await conn.fetchrow(
        "SELECT status, details FROM sys.jobs WHERE job_id = $1", job_id
    )
    assert status == "failed"
    assert "duplicate" in details.lower() or "unique" in details.lower()
    assert (
        await conn.fetchval("SELECT count(*) FROM pg_indexes WHERE indexname = 'dup_t_email'") == 0
    )


async def test_validate_constraint_job(conn: asyncpg.Connection) -> None:
    await conn.execute("CREATE TABLE IF NOT EXISTS parent_t (id bigint PRIMARY KEY)")
    await conn.execute("CREATE TABLE IF NOT EXISTS child_t (id bigint PRIMARY KEY, parent bigint)")
    await conn.execute("ALTER TABLE child_t DROP CONSTRAINT IF EXISTS child_parent_fk")
    await conn.execute(
        "ALTER TABLE child_t ADD CONSTRAINT child_parent_fk FOREIGN KEY (parent) "
        "REFERENCES parent_t (id) NOT VALID"
    )
    job_id = await conn.fetchval("ALTER TABLE ASYNC child_t VALIDATE CONSTRAINT child_parent_fk")
    assert await conn.fetchval("CALL sys.wait_for_job($1)", job_id) is True
    assert (
        await conn.fetchval("SELECT job_type FROM sys.jobs WHERE job_id = $1", job_id)
        == "VALIDATE_CONSTRAINT"
    )
    assert (
        await conn.fetchval(
            "SELECT convalidated FROM pg_constraint WHERE conname = 'child_parent_fk'"
        )
        is True
    )


async def test_async_ddl_is_not_allowed_in_a_multi_statement_query(
    conn: asyncpg.Connection,
) -> None:
    await conn.execute("CREATE TABLE IF NOT EXISTS multi_t (id bigint PRIMARY KEY, a int)")
    with pytest.raises(asyncpg.FeatureNotSupportedError):
        await conn.execute("SELECT 1; CREATE INDEX ASYNC multi_a ON multi_t (a)")


async def test_wait_for_unknown_job(conn: asyncpg.Connection) -> None:
    with pytest.raises(asyncpg.UndefinedObjectError, match="does not exist"):
        await conn.fetchval("CALL sys.wait_for_job('nosuchjob')")


# -- limits --------------------------------------------------------------------


async def test_row_limit_in_explicit_transaction(strict: LocalDSQL) -> None:
    conn = await asyncpg.connect(**strict.connect_kwargs())
    try:
        await conn.execute("CREATE TABLE IF NOT EXISTS rows_t (id bigint PRIMARY KEY)")
        await conn.execute("DELETE FROM rows_t")
        await conn.execute("BEGIN")
        await conn.execute("INSERT INTO rows_t SELECT generate_series(1, 6)")
        with pytest.raises(asyncpg.ProgramLimitExceededError, match="row limit") as caught:
            await conn.execute("INSERT INTO rows_t SELECT generate_series(7, 12)")
        assert caught.value.sqlstate == "54000"
        # The transaction cannot commit any more: as after any error, COMMIT rolls back.
        assert await conn.execute("COMMIT") == "ROLLBACK"
        assert await conn.fetchval("SELECT count(*) FROM rows_t") == 0
    finally:
        await conn.close()


async def test_row_limit_for_an_autocommit_statement_writes_nothing(strict: LocalDSQL) -> None:
    conn = await asyncpg.connect(**strict.connect_kwargs())
    try:
        await conn.execute("CREATE TABLE IF NOT EXISTS rows2_t (id bigint PRIMARY KEY)")
        await conn.execute("DELETE FROM rows2_t")
        with pytest.raises(asyncpg.ProgramLimitExceededError, match="row limit"):
            await conn.execute("INSERT INTO rows2_t SELECT generate_series(1, 11)")
        with pytest.raises(asyncpg.ProgramLimitExceededError, match="row limit"):
            await conn.fetch("INSERT INTO rows2_t SELECT generate_series(1, $1::int)", 11)
        assert await conn.fetchval("SELECT count(*) FROM rows2_t") == 0
        await conn.execute("INSERT INTO rows2_t SELECT generate_series(1, 10)")
        assert await conn.fetchval("SELECT count(*) FROM rows2_t") == 10
    finally:
        await conn.close()


async def test_row_limit_counts_a_whole_autocommit_executemany(strict: LocalDSQL) -> None:
    conn = await asyncpg.connect(**strict.connect_kwargs())
    try:
        await conn.execute("CREATE TABLE IF NOT EXISTS rows4_t (id bigint PRIMARY KEY)")
        await conn.execute("DELETE FROM rows4_t")
        # One Sync for all rows: DSQL sees one transaction of 11 rows and refuses it.
        with pytest.raises(asyncpg.ProgramLimitExceededError, match="row limit"):
            await conn.executemany("INSERT INTO rows4_t VALUES ($1)", [(i,) for i in range(11)])
        assert await conn.fetchval("SELECT count(*) FROM rows4_t") == 0
        await conn.executemany("INSERT INTO rows4_t VALUES ($1)", [(i,) for i in range(10)])
        assert await conn.fetchval("SELECT count(*) FROM rows4_t") == 10
    finally:
        await conn.close()


def test_pipelined_autocommit_writes(dsql: LocalDSQL) -> None:
    with psycopg.connect(dsql.conninfo(), autocommit=True) as connection:
        connection.execute("CREATE TABLE IF NOT EXISTS piped_t (id bigint PRIMARY KEY)")
        connection.execute("DELETE FROM piped_t")
        with connection.pipeline():
            for number in range(20):
                connection.execute("INSERT INTO piped_t VALUES (%s)", (number,))
            total = connection.execute("SELECT count(*) FROM piped_t")
        assert total.fetchone() == (20,)


def test_row_limit_through_psycopg(strict: LocalDSQL) -> None:
    with psycopg.connect(strict.conninfo()) as connection:
        connection.execute("CREATE TABLE IF NOT EXISTS rows3_t (id bigint PRIMARY KEY)")
        connection.commit()
        with pytest.raises(psycopg.errors.ProgramLimitExceeded):
            connection.execute("INSERT INTO rows3_t SELECT generate_series(1, %s::int)", (20,))
        assert connection.info.transaction_status == psycopg.pq.TransactionStatus.INERROR
        connection.rollback()
        assert connection.execute("SELECT count(*) FROM rows3_t").fetchone() == (0,)


async def test_commit_after_the_age_limit_fails_and_rolls_back(strict: LocalDSQL) -> None:
    conn = await asyncpg.connect(**strict.connect_kwargs())
    try:
        await conn.execute("CREATE TABLE IF NOT EXISTS aged_t (id bigint PRIMARY KEY)")
        await conn.execute("DELETE FROM aged_t")
        await conn.execute("BEGIN")
        await conn.execute("INSERT INTO aged_t VALUES (1)")
        await asyncio.sleep(1.2)
        with pytest.raises(asyncpg.ProgramLimitExceededError, match="age limit"):
            await conn.execute("COMMIT")
        # A failed COMMIT ends the transaction: the session is idle again.
        assert not conn.is_in_transaction()
        assert await conn.fetchval("SELECT count(*) FROM aged_t") == 0
    finally:
        await conn.close()


async def test_transaction_age_limit(strict: LocalDSQL) -> None:
    conn = await asyncpg.connect(**strict.connect_kwargs())
    try:
        await conn.execute("BEGIN")
        await conn.fetchval("SELECT 1")
        await asyncio.sleep(1.2)
        with pytest.raises(asyncpg.ProgramLimitExceededError, match="age limit") as caught:
            await conn.fetchval("SELECT 2")
        assert caught.value.sqlstate == "54000"
        await conn.execute("ROLLBACK")
        assert await conn.fetchval("SELECT 3") == 3
    finally:
        await conn.close()


async def test_session_closed_at_maximum_age(strict: LocalDSQL) -> None:
    conn = await asyncpg.connect(**strict.connect_kwargs())
    assert await conn.fetchval("SELECT 1") == 1
    await asyncio.sleep(2.5)
    with pytest.raises(_CLOSED):
        await conn.fetchval("SELECT 1")
    assert conn.is_closed()


# -- optimistic concurrency ----------------------------------------------------


async def test_conflicting_writers_get_oc000(dsql: LocalDSQL) -> None:
    setup = await asyncpg.connect(**dsql.connect_kwargs())
    await setup.execute("CREATE TABLE IF NOT EXISTS occ_t (id bigint PRIMARY KEY, n int)")
    await setup.execute("INSERT INTO occ_t VALUES (1, 0) ON CONFLICT (id) DO UPDATE SET n = 0")
    first = await asyncpg.connect(**dsql.connect_kwargs())
    second = await asyncpg.connect(**dsql.connect_kwargs())
    try:
        await first.execute("BEGIN")
        await second.execute("BEGIN")
        assert await first.fetchval("SELECT n FROM occ_t WHERE id = 1") == 0
        assert await second.fetchval("SELECT n FROM occ_t WHERE id = 1") == 0
        await first.execute("UPDATE occ_t SET n = n + 1 WHERE id = 1")
        await first.execute("COMMIT")

        async def increment_and_commit() -> None:
            # DSQL fails the COMMIT; PostgreSQL already fails the UPDATE. Both are 40001.
            await second.execute("UPDATE occ_t SET n = n + 1 WHERE id = 1")
            await second.execute("COMMIT")

        with pytest.raises(asyncpg.SerializationError) as caught:
            await increment_and_commit()
        assert caught.value.sqlstate == "40001"
        assert "(OC000)" in str(caught.value)
        await second.execute("ROLLBACK")
        assert await setup.fetchval("SELECT n FROM occ_t WHERE id = 1") == 1
    finally:
        for connection in (setup, first, second):
            await connection.close()


def test_a_second_writer_gets_a_conflict_instead_of_waiting(dsql: LocalDSQL) -> None:
    """Two sync clients in one thread: PostgreSQL alone would block the second forever."""
    with psycopg.connect(dsql.conninfo()) as first, psycopg.connect(dsql.conninfo()) as second:
        first.execute("CREATE TABLE IF NOT EXISTS wait_t (id bigint PRIMARY KEY, n int)")
        first.commit()
        first.execute("INSERT INTO wait_t VALUES (1, 0) ON CONFLICT DO NOTHING")
        first.commit()
        first.execute("UPDATE wait_t SET n = n + 1 WHERE id = 1")
        with pytest.raises(psycopg.errors.SerializationFailure, match=r"\(OC000\)"):
            second.execute("UPDATE wait_t SET n = n + 10 WHERE id = 1")
        second.rollback()
        first.commit()
        assert second.execute("SELECT n FROM wait_t WHERE id = 1").fetchone() == (1,)


async def test_schema_change_during_a_transaction_gets_oc001(dsql: LocalDSQL) -> None:
    admin = await asyncpg.connect(**dsql.connect_kwargs())
    reader = await asyncpg.connect(**dsql.connect_kwargs())
    try:
        await admin.execute("CREATE TABLE IF NOT EXISTS schema_t (id bigint PRIMARY KEY)")
        await reader.execute("BEGIN")
        await reader.fetch("SELECT * FROM schema_t")
        await admin.execute("ALTER TABLE schema_t ADD COLUMN note text")
        with pytest.raises(asyncpg.SerializationError, match=r"\(OC001\)"):
            await reader.fetch("SELECT * FROM schema_t")
        await reader.execute("ROLLBACK")
        # A new transaction sees the new catalog.
        assert await reader.fetch("SELECT * FROM schema_t") == []
    finally:
        await admin.close()
        await reader.close()


async def test_schema_change_fails_the_commit_of_a_writer(dsql: LocalDSQL) -> None:
    admin = await asyncpg.connect(**dsql.connect_kwargs())
    writer = await asyncpg.connect(**dsql.connect_kwargs())
    try:
        await admin.execute("CREATE TABLE IF NOT EXISTS schema2_t (id bigint PRIMARY KEY)")
        await writer.execute("BEGIN")
        await writer.execute("INSERT INTO schema2_t VALUES (1) ON CONFLICT DO NOTHING")
        # DSQL does not make the DDL wait for the open writer; neither does the emulator.
        await asyncio.wait_for(admin.execute("ALTER TABLE schema2_t ADD COLUMN note text"), 5)
        with pytest.raises(asyncpg.SerializationError, match=r"\(OC001\)"):
            await writer.execute("COMMIT")
        await writer.execute("ROLLBACK")
        assert await admin.fetchval("SELECT count(*) FROM schema2_t") == 0
    finally:
        await admin.close()
        await writer.close()


# -- scale and hooks -----------------------------------------------------------


async def test_fifty_concurrent_clients(dsql: LocalDSQL) -> None:
    setup = await asyncpg.connect(**dsql.connect_kwargs())
    await setup.execute("CREATE TABLE IF NOT EXISTS many_t (id bigint PRIMARY KEY, client int)")
    await setup.execute("DELETE FROM many_t")

    async def client(number: int) -> int:
        conn = await asyncpg.connect(**dsql.connect_kwargs())
        try:
            async with conn.transaction():
                await conn.executemany(
                    "INSERT INTO many_t VALUES ($1, $2)",
                    [(number * 100 + i, number) for i in range(10)],
                )
            return int(await conn.fetchval("SELECT count(*) FROM many_t WHERE client = $1", number))
        finally:
            await conn.close()

    counts = await asyncio.gather(*(client(n) for n in range(50)))
    assert counts == [10] * 50
    assert await setup.fetchval("SELECT count(*) FROM many_t") == 500
    await setup.close()


async def test_counters_kill_and_statement_log(dsql: LocalDSQL) -> None:
    conn = await asyncpg.connect(**dsql.connect_kwargs())
    before = dsql.totals()
    session_id = conn.get_server_pid()  # the emulator hands out its session id as the pid
    assert session_id in dsql.session_ids()
    await conn.fetchval("SELECT 'counted'")
    with pytest.raises(asyncpg.FeatureNotSupportedError):
        await conn.execute("TRUNCATE rules_t")
    counters = dsql.counters()[session_id]
    assert counters["round_trips"] >= 2
    assert counters["statements"] >= 2
    assert counters["rejections"] == 1
    assert dsql.totals()["rejections"] == before["rejections"] + 1
    assert dsql.statement_log is not None
    assert any(entry.sql == "SELECT 'counted'" for entry in dsql.statement_log)
    assert dsql.kill(session_id) == 1
    await asyncio.sleep(0.1)
    with pytest.raises(_CLOSED):
        await conn.fetchval("SELECT 1")


async def test_round_trips_are_counted_and_traced_as_the_client_waits(dsql: LocalDSQL) -> None:
    conn = await asyncpg.connect(**dsql.connect_kwargs())
    try:
        session_id = conn.get_server_pid()
        before = dsql.counters()[session_id]["round_trips"]
        await conn.execute("BEGIN")
        statement = await conn.prepare("SELECT $1::int + 1")  # asyncpg waits on a Flush
        assert await statement.fetchval(1) == 2
        assert await statement.fetchval(2) == 3
        await conn.execute("COMMIT")
        counted = dsql.counters()[session_id]["round_trips"] - before
    finally:
        await conn.close()
    assert dsql.round_trip_log is not None
    trips = [(t.messages, t.sql) for t in dsql.round_trip_log if t.session_id == session_id]
    sql = "SELECT $1::int + 1"
    assert trips[-5:] == [
        ("Q", ("BEGIN",)),
        ("PDH", (sql,)),
        ("BES", (sql,)),
        ("BES", (sql,)),
        ("Q", ("COMMIT",)),
    ]
    assert counted == 5


async def test_injected_latency_applies_per_round_trip(dsql: LocalDSQL) -> None:
    conn = await asyncpg.connect(**dsql.connect_kwargs())
    try:
        dsql.set_latency(50)
        started = time.perf_counter()
        for _ in range(3):
            await conn.fetchval("SELECT 1")
        elapsed = time.perf_counter() - started
    finally:
        dsql.set_latency(0)
        await conn.close()
    assert elapsed >= 0.15  # three round trips, each delayed by at least 50 ms


async def test_kill_all_sessions(dsql: LocalDSQL) -> None:
    conns = [await asyncpg.connect(**dsql.connect_kwargs()) for _ in range(3)]
    assert dsql.kill() >= 3
    await asyncio.sleep(0.1)
    for conn in conns:
        with pytest.raises(_CLOSED):
            await conn.fetchval("SELECT 1")
