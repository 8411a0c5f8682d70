"""run_transaction through the emulator: real conflicts, injected ones, and what is not retried."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, event, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session, sessionmaker

from harness.engine import async_engine, sync_engine
from sqlalchemy_dsql import RetryPolicy, run_transaction, run_transaction_sync, transactional
from sqlalchemy_dsql.errors import ConnectionLost, RetriesExhausted
from sqlalchemy_dsql.local import LocalDSQL
from sqlalchemy_dsql.retry import Attempts, AttemptState, RetryEvent, RetryReason, RetryStats

pytestmark = pytest.mark.integration

OC000 = "change conflicts with another transaction (OC000)"
OC001 = "schema has been updated by another transaction (OC001)"
FAST = RetryPolicy(base_delay=0.001, max_delay=0.01)


@pytest.fixture(scope="module")
async def engine(dsql: LocalDSQL) -> AsyncIterator[AsyncEngine]:
    made = async_engine(dsql, pool_size=50, max_overflow=0)
    async with made.begin() as conn:
        await conn.execute(text("DROP TABLE IF EXISTS retry_counter"))
    async with made.begin() as conn:
        await conn.execute(text("CREATE TABLE retry_counter (id int PRIMARY KEY, n int NOT NULL)"))
    yield made
    async with made.begin() as conn:
        await conn.execute(text("DROP TABLE retry_counter"))
    await made.dispose()


async def _reset(engine: AsyncEngine, *ids: int) -> None:
    async with engine.begin() as conn:
        await conn.execute(text("DELETE FROM retry_counter"))
        for row_id in ids:
            await conn.execute(text("INSERT INTO retry_counter VALUES (:id, 0)"), {"id": row_id})


async def _value(engine: AsyncEngine, row_id: int = 1) -> int:
    async with engine.connect() as conn:
        result = await conn.execute(
            text("SELECT n FROM retry_counter WHERE id = :id"), {"id": row_id}
        )
        return int(result.scalar_one())


async def _increment(conn: AsyncConnection) -> None:
    # Read, then write what was read: a lost update unless conflicts are retried.
    n = (await conn.execute(text("SELECT n FROM retry_counter WHERE id = 1"))).scalar_one()
    await conn.execute(text("UPDATE retry_counter SET n = :n WHERE id = 1"), {"n": n + 1})


async def test_fifty_tasks_twenty_increments_each_end_at_exactly_1000(engine: AsyncEngine) -> None:
    await _reset(engine, 1)
    stats = RetryStats()
    policy = RetryPolicy(max_attempts=200, deadline=None)

    async def task() -> None:
        for _ in range(20):
            await run_transaction(engine, _increment, policy=policy, stats=stats)

    await asyncio.gather(*(task() for _ in range(50)))
    assert await _value(engine) == 1000
    print(f"with run_transaction: 1000 of 1000, retries {stats.as_dict()}")
    assert stats.transactions == 1000
    assert stats.retries > 0
    assert stats.attempts == 1000 + stats.retries
    assert stats.gave_up == 0

    # The same work without the helper: updates are lost or raise.
    await _reset(engine, 1)
    failed = 0

    async def task_without_retries() -> None:
        nonlocal failed
        for _ in range(20):
            try:
                async with engine.begin() as conn:
                    await _increment(conn)
            except DBAPIError:
                failed += 1

    await asyncio.gather(*(task_without_retries() for _ in range(50)))
    reached = await _value(engine)
    print(f"without: {reached} of 1000, {failed} transactions raised")
    assert reached < 1000
    assert reached + failed == 1000


async def test_injected_oc001_at_commit_is_retried(engine: AsyncEngine, dsql: LocalDSQL) -> None:
    await _reset(engine, 1)
    events: list[RetryEvent] = []
    dsql.fail_next_commits("40001", OC001, times=2)
    await run_transaction(engine, _increment, policy=FAST, on_retry=events.append)
    assert await _value(engine) == 1
    assert [(e.attempt, e.sqlstate) for e in events] == [(1, "OC001"), (2, "OC001")]
    assert all(0 <= e.delay <= FAST.max_delay for e in events)


async def test_oc000_as_the_sqlstate_itself_is_retried(
    engine: AsyncEngine, dsql: LocalDSQL
) -> None:
    await _reset(engine, 1)
    stats = RetryStats()
    dsql.fail_next_commits("OC000", "change conflicts with another transaction")
    await run_transaction(engine, _increment, policy=FAST, stats=stats)
    assert await _value(engine) == 1
    assert dict(stats.retries_by_sqlstate) == {"OC000": 1}


@pytest.mark.parametrize(
    ("sqlstate", "message"),
    [
        ("54000", "transaction row limit exceeded"),
        ("0A000", "unsupported statement"),
        ("28000", "access denied"),
        ("23505", "duplicate key value violates unique constraint"),
    ],
)
async def test_other_errors_are_not_retried(
    engine: AsyncEngine, dsql: LocalDSQL, sqlstate: str, message: str
) -> None:
    await _reset(engine, 1)
    stats = RetryStats()
    dsql.fail_next_commits(sqlstate, message)
    with pytest.raises(DBAPIError) as caught:
        await run_transaction(engine, _increment, policy=FAST, stats=stats)
    assert caught.value.orig.sqlstate == sqlstate  # type: ignore[union-attr]
    assert (stats.attempts, stats.retries) == (1, 0)
    assert await _value(engine) == 0


async def test_a_real_unsupported_statement_is_not_retried(engine: AsyncEngine) -> None:
    stats = RetryStats()

    async def truncate(conn: AsyncConnection) -> None:
        await conn.execute(text("TRUNCATE retry_counter"))

    with pytest.raises(DBAPIError, match=r"0A000|not supported|TRUNCATE"):
        await run_transaction(engine, truncate, policy=FAST, stats=stats)
    assert stats.attempts == 1


async def test_a_conflict_wrapped_by_application_code_is_recognised(
    engine: AsyncEngine, dsql: LocalDSQL
) -> None:
    await _reset(engine, 1)

    class BookingFailed(Exception):
        pass

    async def wrapped(conn: AsyncConnection) -> None:
        await _increment(conn)
        try:
            await conn.commit()
        except DBAPIError as error:
            raise BookingFailed("could not book the visit") from error

    stats = RetryStats()
    dsql.fail_next_commits("40001", OC000)
    await run_transaction(engine, wrapped, policy=FAST, stats=stats)
    assert stats.retries == 1
    assert await _value(engine) == 1


async def test_giving_up_reports_attempts_and_the_last_conflict(
    engine: AsyncEngine, dsql: LocalDSQL
) -> None:
    await _reset(engine, 1)
    dsql.fail_next_commits("40001", OC000, times=3)
    with pytest.raises(RetriesExhausted) as caught:
        await run_transaction(engine, _increment, policy=RetryPolicy(max_attempts=3))
    error = caught.value
    assert error.attempts == 3
    assert error.sqlstate == "OC000"
    assert "after 3 attempts" in str(error)
    assert "(OC000)" in str(error)
    assert isinstance(error.__cause__, DBAPIError)


async def test_the_deadline_bounds_the_retries(engine: AsyncEngine, dsql: LocalDSQL) -> None:
    await _reset(engine, 1)
    dsql.fail_next_commits("40001", OC000, times=60)
    policy = RetryPolicy(max_attempts=1000, base_delay=0.02, max_delay=0.05, deadline=0.3)
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        with pytest.raises(RetriesExhausted, match="deadline") as caught:
            await run_transaction(engine, _increment, policy=policy)
        elapsed = loop.time() - started
    finally:
        await _drain_commit_failures(engine)
    assert elapsed < 0.3 + 0.2  # no sleep starts that would end past the deadline
    assert 1 < caught.value.attempts < 60


async def _drain_commit_failures(engine: AsyncEngine) -> None:
    """Use up injected failures a test left behind."""
    while True:
        try:
            async with engine.begin() as conn:
                await conn.execute(text("UPDATE retry_counter SET n = n WHERE id = -1"))
            return
        except DBAPIError:
            continue


async def test_commit_lost_with_the_connection_is_retried_only_if_idempotent(
    engine: AsyncEngine, dsql: LocalDSQL
) -> None:
    await _reset(engine, 1)
    kills = {"left": 1}

    def kill_at_commit(conn: Any) -> None:
        if kills["left"]:
            kills["left"] -= 1
            dsql.kill(conn.connection.driver_connection.get_server_pid())

    event.listen(engine.sync_engine, "commit", kill_at_commit)
    try:
        stats = RetryStats()
        with pytest.raises(ConnectionLost) as caught:
            await run_transaction(engine, _increment, policy=FAST, stats=stats)
        assert caught.value.during_commit
        assert stats.attempts == 1

        kills["left"] = 1
        stats = RetryStats()
        await run_transaction(
            engine, _increment, policy=RetryPolicy(idempotent=True, base_delay=0.001), stats=stats
        )
        assert stats.attempts == 2
        assert dict(stats.retries_by_sqlstate) == {"08006": 1}
    finally:
        event.remove(engine.sync_engine, "commit", kill_at_commit)
    assert await _value(engine) == 1  # the killed commits never reached the server


async def test_connection_lost_before_commit_is_retried(
    engine: AsyncEngine, dsql: LocalDSQL
) -> None:
    await _reset(engine, 1)
    killed: list[int] = []

    async def killed_once(conn: AsyncConnection) -> None:
        if not killed:
            raw = (await conn.get_raw_connection()).driver_connection
            killed.append(raw.get_server_pid())  # type: ignore[union-attr]
            dsql.kill(killed[0])
            await asyncio.sleep(0.05)
        await _increment(conn)

    stats = RetryStats()
    await run_transaction(engine, killed_once, policy=FAST, stats=stats)
    assert stats.attempts == 2
    assert await _value(engine) == 1


async def test_async_sessionmaker_and_decorator(engine: AsyncEngine, dsql: LocalDSQL) -> None:
    await _reset(engine, 1, 2)
    factory = async_sessionmaker(engine)

    async def read(session: AsyncSession) -> int:
        return int((await session.execute(text("SELECT sum(n) FROM retry_counter"))).scalar_one())

    @transactional(factory, policy=FAST)
    async def add(session: AsyncSession, row_id: int, amount: int) -> int:
        await session.execute(
            text("UPDATE retry_counter SET n = n + :a WHERE id = :id"), {"a": amount, "id": row_id}
        )
        return amount

    dsql.fail_next_commits("40001", OC000)
    assert await add(2, 5) == 5
    assert add.__name__ == "add"
    assert await run_transaction(factory, read) == 5


@pytest.fixture
def sync_target(dsql: LocalDSQL) -> Iterator[Engine]:
    made = sync_engine(dsql, "psycopg")
    yield made
    made.dispose()


def test_sync_twin_with_engine_and_sessionmaker(
    sync_target: Engine, dsql: LocalDSQL, engine: AsyncEngine
) -> None:
    """(``engine`` is here for the table it creates.)"""
    stats = RetryStats()

    def bump(conn: Connection | Session) -> int:
        conn.execute(text("UPDATE retry_counter SET n = n + 1 WHERE id = 1"))
        return int(conn.execute(text("SELECT n FROM retry_counter WHERE id = 1")).scalar_one())

    with sync_target.begin() as conn:
        conn.execute(text("DELETE FROM retry_counter"))
        conn.execute(text("INSERT INTO retry_counter VALUES (1, 0)"))
    dsql.fail_next_commits("40001", OC001)
    assert run_transaction_sync(sync_target, bump, policy=FAST, stats=stats) == 1
    dsql.fail_next_commits("40001", OC000)
    assert run_transaction_sync(sessionmaker(sync_target), bump, policy=FAST, stats=stats) == 2
    assert stats.as_dict()["retries_by_sqlstate"] == {"OC001": 1, "OC000": 1}


async def test_wrong_target_is_refused() -> None:
    with pytest.raises(Exception, match="needs an AsyncEngine or an async_sessionmaker"):
        await run_transaction(object(), _increment)  # type: ignore[call-overload]


async def test_attempts_used_directly_retry_a_real_conflict(
    engine: AsyncEngine, dsql: LocalDSQL
) -> None:
    await _reset(engine, 1)
    stats = RetryStats()
    states: list[tuple[int, AttemptState]] = []
    dsql.fail_next_commits("40001", OC001)
    loop = Attempts(FAST, name="direct increment", stats=stats)
    async for attempt in loop:
        with attempt:
            async with engine.begin() as conn:
                await _increment(conn)
        states.append((attempt.number, attempt.state))
    assert states == [(1, AttemptState.RETRYING), (2, AttemptState.SUCCEEDED)]
    assert dict(stats.retries_by_sqlstate) == {"OC001": 1}
    assert await _value(engine) == 1


async def _lose_the_connection(conn: AsyncConnection, dsql: LocalDSQL) -> None:
    raw = (await conn.get_raw_connection()).driver_connection
    dsql.kill(raw.get_server_pid())  # type: ignore[union-attr]
    await asyncio.sleep(0.05)
    await _increment(conn)


async def test_attempts_for_conflicts_only_let_a_lost_connection_through(
    engine: AsyncEngine, dsql: LocalDSQL
) -> None:
    await _reset(engine, 1)
    stats = RetryStats()

    async def lose_it_once_per_attempt() -> None:
        async for attempt in Attempts(FAST, stats=stats, retry_on={RetryReason.CONFLICT}):
            with attempt:
                async with engine.begin() as conn:
                    await _lose_the_connection(conn, dsql)

    with pytest.raises(ConnectionLost) as caught:
        await lose_it_once_per_attempt()
    assert not caught.value.during_commit
    assert (stats.attempts, stats.retries) == (1, 0)


async def test_repeated_connection_loss_gives_up_with_its_own_reason(
    engine: AsyncEngine, dsql: LocalDSQL
) -> None:
    await _reset(engine, 1)

    async def always_lost(conn: AsyncConnection) -> None:
        await _lose_the_connection(conn, dsql)

    policy = RetryPolicy(max_attempts=2, base_delay=0.001, max_delay=0.01)
    with pytest.raises(RetriesExhausted) as caught:
        await run_transaction(engine, always_lost, policy=policy)
    error = caught.value
    assert error.reason is RetryReason.CONNECTION_LOST
    assert error.attempts == 2
    assert error.sqlstate is None  # asyncpg's lost connection has none, and none is made up
    assert "the connection kept being lost" in str(error)
    assert isinstance(error.__cause__, ConnectionLost)
    assert await _value(engine) == 0
