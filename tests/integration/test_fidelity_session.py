"""Transaction semantics as a live DSQL cluster shows them: snapshots, conflicts, size limits.

Each test names the behaviour it pins; docs/emulator.md's fidelity table gives the source.
"""

from __future__ import annotations

import asyncio
import base64
import os
import time
from collections.abc import AsyncIterator

import asyncpg
import psycopg
import pytest

from sqlalchemy_dsql.local import LocalDSQL

pytestmark = pytest.mark.integration

_MIB = 1024 * 1024


@pytest.fixture
async def pair(dsql: LocalDSQL) -> AsyncIterator[tuple[asyncpg.Connection, asyncpg.Connection]]:
    first = await asyncpg.connect(**dsql.connect_kwargs())
    second = await asyncpg.connect(**dsql.connect_kwargs())
    await first.execute(
        "CREATE TABLE IF NOT EXISTS fidelity_snap (id bigint PRIMARY KEY, n bigint NOT NULL)"
    )
    await first.execute("DELETE FROM fidelity_snap")
    await first.execute("INSERT INTO fidelity_snap VALUES (1, 0)")
    yield first, second
    await first.close()
    await second.close()


# -- snapshots ------------------------------------------------------------------


async def test_an_explicit_transaction_reads_the_snapshot_taken_at_begin(
    pair: tuple[asyncpg.Connection, asyncpg.Connection],
) -> None:
    reader, writer = pair
    await reader.execute("BEGIN")
    await writer.execute("INSERT INTO fidelity_snap VALUES (2, 0)")  # commits after BEGIN
    assert await reader.fetchval("SELECT count(*) FROM fidelity_snap") == 1
    await reader.execute("COMMIT")
    assert await reader.fetchval("SELECT count(*) FROM fidelity_snap") == 2


def test_the_snapshot_at_begin_holds_for_psycopg_too(dsql: LocalDSQL) -> None:
    with (
        psycopg.connect(dsql.conninfo(), autocommit=True) as reader,
        psycopg.connect(dsql.conninfo(), autocommit=True) as writer,
    ):
        writer.execute(
            "CREATE TABLE IF NOT EXISTS fidelity_snap_pg (id bigint PRIMARY KEY, n bigint)"
        )
        writer.execute("DELETE FROM fidelity_snap_pg")
        reader.execute("BEGIN")  # explicit, then nothing until the writer has committed
        writer.execute("INSERT INTO fidelity_snap_pg VALUES (1, 1)")
        assert reader.execute("SELECT count(*) FROM fidelity_snap_pg").fetchone() == (0,)
        reader.execute("ROLLBACK")
        assert reader.execute("SELECT count(*) FROM fidelity_snap_pg").fetchone() == (1,)


async def test_begin_is_still_one_round_trip_with_one_reply(dsql: LocalDSQL) -> None:
    connection = await asyncpg.connect(**dsql.connect_kwargs())
    try:
        session_id = connection.get_server_pid()
        before = dsql.counters()[session_id]["round_trips"]
        status = await connection.execute("BEGIN ISOLATION LEVEL REPEATABLE READ -- a comment")
        assert status == "BEGIN"  # the snapshot statement's reply is not relayed
        assert dsql.counters()[session_id]["round_trips"] == before + 1
        assert await connection.fetchval("SELECT 41 + 1") == 42
        await connection.execute("COMMIT")
    finally:
        await connection.close()


# -- conflicts ------------------------------------------------------------------


async def test_a_write_after_a_concurrent_commit_since_begin_conflicts(
    pair: tuple[asyncpg.Connection, asyncpg.Connection],
) -> None:
    """With the snapshot at BEGIN, a row changed after BEGIN is a conflict, as on DSQL.

    (With PostgreSQL's own snapshot at the first statement this UPDATE would succeed.)
    """
    loser, winner = pair
    await loser.execute("BEGIN")
    await winner.execute("UPDATE fidelity_snap SET n = n + 1 WHERE id = 1")
    with pytest.raises(
        asyncpg.SerializationError, match=r"^change conflicts with another transaction \(OC000\)$"
    ):
        await loser.execute("UPDATE fidelity_snap SET n = n + 10 WHERE id = 1")
    await loser.execute("ROLLBACK")
    assert await loser.fetchval("SELECT n FROM fidelity_snap WHERE id = 1") == 1


async def test_a_writer_waits_for_an_open_writer_at_most_the_lock_timeout(
    pair: tuple[asyncpg.Connection, asyncpg.Connection], dsql: LocalDSQL
) -> None:
    """DSQL never blocks; the emulator bounds PostgreSQL's row-lock wait (documented)."""
    first, second = pair
    await first.execute("BEGIN")
    await first.execute("UPDATE fidelity_snap SET n = n + 1 WHERE id = 1")
    await second.execute("BEGIN")
    started = time.monotonic()
    with pytest.raises(asyncpg.SerializationError, match=r"\(OC000\)"):
        await second.execute("UPDATE fidelity_snap SET n = n + 1 WHERE id = 1")
    waited = time.monotonic() - started
    await second.execute("ROLLBACK")
    await first.execute("COMMIT")
    # lock_timeout_ms is 50 by default; the bound is loose because the machine is shared.
    assert waited < 2.0
    assert await first.fetchval("SELECT n FROM fidelity_snap WHERE id = 1") == 1


async def test_select_for_update_of_a_row_changed_since_begin_conflicts(
    pair: tuple[asyncpg.Connection, asyncpg.Connection],
) -> None:
    reader, writer = pair
    await reader.execute("BEGIN")
    await writer.execute("UPDATE fidelity_snap SET n = 5 WHERE id = 1")
    with pytest.raises(asyncpg.SerializationError, match=r"\(OC000\)"):
        await reader.fetchval("SELECT n FROM fidelity_snap WHERE id = 1 FOR UPDATE")
    await reader.execute("ROLLBACK")


# -- transaction size -----------------------------------------------------------


async def test_more_than_10_mib_written_in_one_transaction_fails_at_commit(
    dsql: LocalDSQL,
) -> None:
    connection = await asyncpg.connect(**dsql.connect_kwargs())
    try:
        await connection.execute(
            "CREATE TABLE IF NOT EXISTS fidelity_big (id bigint PRIMARY KEY, body text)"
        )
        await connection.execute("DELETE FROM fidelity_big")
        chunk = "x" * (900 * 1024)
        await connection.execute("BEGIN")
        for number in range(12):  # about 10.5 MiB, each statement well under the limit
            await connection.execute("INSERT INTO fidelity_big VALUES ($1, $2)", number, chunk)
        with pytest.raises(
            asyncpg.ProgramLimitExceededError, match="transaction size limit 10mb exceeded"
        ) as caught:
            await connection.execute("COMMIT")
        assert caught.value.detail == "Current transaction size 10.5mb > 10mb"
        assert await connection.fetchval("SELECT count(*) FROM fidelity_big") == 0
        # A transaction under the limit commits.
        async with connection.transaction():
            for number in range(3):
                await connection.execute("INSERT INTO fidelity_big VALUES ($1, $2)", number, chunk)
        assert await connection.fetchval("SELECT count(*) FROM fidelity_big") == 3
    finally:
        await connection.close()


async def test_an_autocommit_batch_over_10_mib_is_refused(dsql: LocalDSQL) -> None:
    """asyncpg's executemany is one implicit transaction up to its Sync: the limit applies."""
    connection = await asyncpg.connect(**dsql.connect_kwargs())
    try:
        await connection.execute(
            "CREATE TABLE IF NOT EXISTS fidelity_big_batch (id bigint PRIMARY KEY, body text)"
        )
        await connection.execute("DELETE FROM fidelity_big_batch")
        chunk = "y" * (900 * 1024)
        with pytest.raises(
            asyncpg.ProgramLimitExceededError, match="transaction size limit 10mb exceeded"
        ):
            await connection.executemany(
                "INSERT INTO fidelity_big_batch VALUES ($1, $2)",
                [(number, chunk) for number in range(12)],
            )
        assert await connection.fetchval("SELECT count(*) FROM fidelity_big_batch") == 0
    finally:
        await connection.close()


async def test_a_protocol_message_over_10_mib_closes_the_connection(dsql: LocalDSQL) -> None:
    """DSQL drops the connection without an error (the client sees the socket close)."""
    connection = await asyncpg.connect(**dsql.connect_kwargs())
    try:
        with pytest.raises((asyncpg.ConnectionDoesNotExistError, ConnectionError)):
            await connection.execute("SELECT $1::text", "z" * (10 * _MIB + 1))
        assert connection.is_closed()
    finally:
        await connection.close()
    survivor = await asyncpg.connect(**dsql.connect_kwargs())
    try:  # a message just under the limit is fine
        assert await survivor.fetchval("SELECT length($1::text)", "z" * (9 * _MIB)) == 9 * _MIB
    finally:
        await survivor.close()


async def test_many_sessions_keep_their_own_transaction_state(dsql: LocalDSQL) -> None:
    """The state machine is per session: interleaved transactions do not leak into each other."""
    connections = [await asyncpg.connect(**dsql.connect_kwargs()) for _ in range(4)]
    try:
        await connections[0].execute(
            "CREATE TABLE IF NOT EXISTS fidelity_many (id bigint PRIMARY KEY, who bigint)"
        )
        await connections[0].execute("DELETE FROM fidelity_many")

        async def work(index: int, connection: asyncpg.Connection) -> None:
            async with connection.transaction():
                await connection.execute("INSERT INTO fidelity_many VALUES ($1, $1)", index)
                await asyncio.sleep(0.01)

        await asyncio.gather(*(work(i, c) for i, c in enumerate(connections)))
        assert await connections[0].fetchval("SELECT count(*) FROM fidelity_many") == 4
    finally:
        for connection in connections:
            await connection.close()


async def test_errors_of_the_emulators_own_catalog_checks_carry_no_context(
    dsql: LocalDSQL,
) -> None:
    """DSQL's limit errors have no CONTEXT; the backend helper that raises them must not show."""
    connection = await asyncpg.connect(**dsql.connect_kwargs())
    try:
        columns = ", ".join(f"c{number} int" for number in range(257))
        with pytest.raises(asyncpg.PostgresError) as caught:
            await connection.execute(f"CREATE TABLE fidelity_wide ({columns})")
        assert caught.value.sqlstate == "54011"
        assert caught.value.context is None
    finally:
        await connection.close()


async def test_a_written_value_over_1_mib_compressed_is_refused(dsql: LocalDSQL) -> None:
    """DSQL judges the stored (compressed) size: random bytes over 1 MiB fail, a long run passes."""
    connection = await asyncpg.connect(**dsql.connect_kwargs())
    try:
        await connection.execute(
            "CREATE TABLE IF NOT EXISTS fidelity_values (id bigint PRIMARY KEY, b bytea, t text)"
        )
        await connection.execute("DELETE FROM fidelity_values")
        with pytest.raises(
            asyncpg.ProgramLimitExceededError,
            match="datatype limit greater than 1048576 bytes not supported for bytea",
        ):
            await connection.execute(
                "INSERT INTO fidelity_values (id, b) VALUES (1, $1)", os.urandom(_MIB + 1)
            )
        random_text = base64.b64encode(os.urandom(_MIB)).decode()  # about 1.3 MiB, incompressible
        with pytest.raises(asyncpg.ProgramLimitExceededError, match="not supported for text"):
            await connection.execute(
                "INSERT INTO fidelity_values (id, t) VALUES (2, $1)", random_text
            )
        await connection.execute(
            "INSERT INTO fidelity_values (id, b, t) VALUES (3, $1, $2)",
            os.urandom(_MIB),  # exactly 1 MiB: accepted
            "x" * (3 * _MIB),  # compresses to almost nothing: accepted
        )
        # A read may carry a large value: the limit is on what is stored.
        assert await connection.fetchval("SELECT length($1::text)", random_text) > _MIB
        assert await connection.fetchval("SELECT count(*) FROM fidelity_values") == 1
    finally:
        await connection.close()


async def test_version_names_only_the_major_version(dsql: LocalDSQL) -> None:
    connection = await asyncpg.connect(**dsql.connect_kwargs())
    try:
        assert await connection.fetchval("SELECT version()") == "PostgreSQL 16"
        assert await connection.fetchval("SELECT pg_catalog.version()") == "PostgreSQL 16"
    finally:
        await connection.close()


async def test_a_very_long_expression_does_not_bring_the_emulator_down(dsql: LocalDSQL) -> None:
    """30,000 terms overflow an ordinary thread's stack in the proxy's parser; DSQL, like the
    backend, answers 54001 stack depth limit exceeded."""
    connection = await asyncpg.connect(**dsql.connect_kwargs())
    try:
        sql = "SELECT " + " + ".join(["1"] * 30_000)
        with pytest.raises(asyncpg.StatementTooComplexError, match="stack depth limit exceeded"):
            await connection.fetchval(sql)
        assert await connection.fetchval("SELECT 2") == 2  # the session goes on
    finally:
        await connection.close()
    again = await asyncpg.connect(**dsql.connect_kwargs())  # and so does the emulator
    await again.close()


async def test_alter_constraint_deferrable_is_accepted(dsql: LocalDSQL) -> None:
    """In AWS's ALTER TABLE syntax: a foreign key can be made deferrable after the fact."""
    connection = await asyncpg.connect(**dsql.connect_kwargs())
    try:
        await connection.execute(
            "CREATE TABLE IF NOT EXISTS fidelity_parent (id bigint PRIMARY KEY)"
        )
        await connection.execute(
            "CREATE TABLE IF NOT EXISTS fidelity_child (id bigint PRIMARY KEY, "
            "parent_id bigint CONSTRAINT fidelity_child_fk REFERENCES fidelity_parent (id))"
        )
        await connection.execute(
            "ALTER TABLE fidelity_child ALTER CONSTRAINT fidelity_child_fk "
            "DEFERRABLE INITIALLY DEFERRED"
        )
        deferred = await connection.fetchval(
            "SELECT condeferred FROM pg_constraint WHERE conname = 'fidelity_child_fk'"
        )
        assert deferred is True
    finally:
        await connection.close()
