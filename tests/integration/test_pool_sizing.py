"""Pool defaults, overflow churn, the waiting-checkout error and first-come-first-served waits.

Counts, never timings: connections opened and overflow connections closed are
exact for a given sequence of checkouts.
"""

from __future__ import annotations

import asyncio
import logging
import threading

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, exc, text
from sqlalchemy.ext.asyncio import AsyncEngine

from harness.engine import async_engine, sync_engine
from sqlalchemy_dsql import batch, pool_counters
from sqlalchemy_dsql.errors import PoolTimeout
from sqlalchemy_dsql.local import LocalDSQL
from sqlalchemy_dsql.pool import CHURN_WARN_AFTER, DEFAULT_POOL_SIZE


async def _hold_together(engine: AsyncEngine, count: int) -> None:
    """``count`` checkouts in use at the same moment, then all returned."""
    arrived = 0
    everyone = asyncio.Event()

    async def hold() -> None:
        nonlocal arrived
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
            arrived += 1
            if arrived == count:
                everyone.set()
            await everyone.wait()

    await asyncio.gather(*(hold() for _ in range(count)))


async def test_the_default_pool_opens_each_connection_once_under_a_burst(
    dsql: LocalDSQL,
) -> None:
    # The new-user case: 50 tasks x 5 transactions. SQLAlchemy's 5 + 10
    # opened 283 connections for these 250 transactions.
    engine = async_engine(dsql)
    try:
        assert engine.pool.size() == DEFAULT_POOL_SIZE  # type: ignore[attr-defined]

        async def task() -> None:
            for _ in range(5):
                async with engine.begin() as conn:
                    await conn.execute(text("SELECT pg_sleep(0.002)"))

        await asyncio.gather(*(task() for _ in range(50)))
        counters = pool_counters(engine)
        assert counters.connections_opened == DEFAULT_POOL_SIZE
        assert counters.tokens_minted == DEFAULT_POOL_SIZE
        assert counters.overflow_closed == 0
        assert counters.checkout_timeouts == 0
    finally:
        await engine.dispose()


async def test_overflow_churn_is_counted_and_warned_about_once(
    dsql: LocalDSQL, caplog: pytest.LogCaptureFixture
) -> None:
    engine = async_engine(dsql, pool_size=2, max_overflow=3)
    rounds = CHURN_WARN_AFTER // 3 + 2
    try:
        with caplog.at_level(logging.WARNING, logger="sqlalchemy_dsql.pool"):
            for _ in range(rounds):
                await _hold_together(engine, 5)
        counters = pool_counters(engine)
        # Each round opens 3 overflow connections and closes them as they come back.
        assert counters.overflow_closed == 3 * rounds
        assert counters.connections_opened == 2 + 3 * rounds
        warnings = [r for r in caplog.records if r.name == "sqlalchemy_dsql.pool"]
        assert len(warnings) == 1
        message = warnings[0].getMessage()
        assert "pool_size=2, max_overflow=3" in message
        assert "pool_size=5, max_overflow=0" in message
    finally:
        await engine.dispose()


async def test_the_end_of_one_burst_is_not_churn(
    dsql: LocalDSQL, caplog: pytest.LogCaptureFixture
) -> None:
    engine = async_engine(dsql, pool_size=2, max_overflow=10)
    try:
        with caplog.at_level(logging.WARNING, logger="sqlalchemy_dsql.pool"):
            await _hold_together(engine, 12)
        assert pool_counters(engine).overflow_closed == 10
        assert not [r for r in caplog.records if r.name == "sqlalchemy_dsql.pool"]
    finally:
        await engine.dispose()


async def test_a_pool_without_overflow_never_churns(
    dsql: LocalDSQL, caplog: pytest.LogCaptureFixture
) -> None:
    engine = async_engine(dsql, pool_size=5)
    try:
        with caplog.at_level(logging.WARNING, logger="sqlalchemy_dsql.pool"):
            for _ in range(6):
                await _hold_together(engine, 5)
        counters = pool_counters(engine)
        assert counters.connections_opened == 5
        assert counters.overflow_closed == 0
        assert not [r for r in caplog.records if r.name == "sqlalchemy_dsql.pool"]
    finally:
        await engine.dispose()


async def test_a_checkout_that_gives_up_gets_a_clear_error(dsql: LocalDSQL) -> None:
    engine = async_engine(dsql, pool_size=1, pool_timeout=0.2)
    try:
        async with engine.connect() as held:
            await held.execute(text("SELECT 1"))

            async def wait() -> None:
                async with engine.connect():
                    pass

            results = await asyncio.gather(*(wait() for _ in range(3)), return_exceptions=True)
            assert all(isinstance(r, PoolTimeout) for r in results), results
            first = results[0]
            assert isinstance(first, exc.TimeoutError)  # existing handlers keep working
            assert isinstance(first, PoolTimeout)
            assert (first.pool_size, first.max_overflow, first.timeout) == (1, 0, 0.2)
            assert 1 <= first.waiting <= 3
            message = str(first)
            assert "pool_timeout=0.2 s" in message
            assert "pool_size=1, max_overflow=0" in message
            assert "checkouts were waiting" in message
            assert "Raise pool_size" in message
            assert "run fewer tasks at once" in message
        counters = pool_counters(engine)
        assert counters.checkout_timeouts == 3
        # Nothing leaked: the one connection serves the next checkout at once.
        async with engine.connect() as conn:
            assert (await conn.execute(text("SELECT 2"))).scalar_one() == 2
        assert counters.connections_opened == 1
    finally:
        await engine.dispose()


def test_a_sync_checkout_that_gives_up_gets_the_same_error(dsql: LocalDSQL) -> None:
    engine = sync_engine(dsql, pool_size=1, pool_timeout=0.2)
    try:
        with engine.connect() as held:
            held.execute(text("SELECT 1"))
            failures: list[BaseException] = []

            def wait() -> None:
                try:
                    with engine.connect():
                        pass
                except BaseException as error:
                    failures.append(error)

            waiter = threading.Thread(target=wait)
            waiter.start()
            waiter.join()
        assert len(failures) == 1
        error = failures[0]
        assert isinstance(error, PoolTimeout)
        assert error.waiting == 1
        assert "1 checkouts were waiting" in str(error)
        assert pool_counters(engine).checkout_timeouts == 1
    finally:
        engine.dispose()


async def test_waiting_checkouts_are_served_first_come_first_served(dsql: LocalDSQL) -> None:
    engine = async_engine(dsql, pool_size=1)
    served: list[str] = []
    try:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))  # opened: the waiters below only queue

        async def use(name: str) -> None:
            async with engine.connect() as conn:
                served.append(name)
                await conn.execute(text("SELECT 1"))

        async def holder() -> None:
            async with engine.connect() as conn:
                served.append("holder")
                await asyncio.sleep(0.05)  # the waiters queue up meanwhile
                await conn.execute(text("SELECT 1"))
            # Back at once for another, while the first waiter has not run yet: with
            # asyncio.Queue this checkout would take the connection from under it.
            await use("holder again")

        holding = asyncio.create_task(holder())
        await asyncio.sleep(0.01)
        waiters = []
        for i in range(5):
            waiters.append(asyncio.create_task(use(f"waiter {i}")))
            await asyncio.sleep(0.001)
        await asyncio.gather(holding, *waiters)
        assert served == ["holder", *(f"waiter {i}" for i in range(5)), "holder again"]
    finally:
        await engine.dispose()


async def test_batch_runs_no_more_batches_than_the_pool_serves(
    dsql: LocalDSQL, caplog: pytest.LogCaptureFixture
) -> None:
    engine = async_engine(dsql, pool_size=2)
    table = Table(
        "pool_batch", MetaData(), Column("id", Integer, primary_key=True), Column("s", String)
    )
    try:
        async with engine.begin() as conn:
            await conn.execute(text("DROP TABLE IF EXISTS pool_batch"))
        async with engine.begin() as conn:
            await conn.run_sync(table.metadata.create_all)
        rows = [{"id": i, "s": "x"} for i in range(800)]
        with caplog.at_level(logging.WARNING, logger="sqlalchemy_dsql.batch"):
            report = await batch.insert(engine, table, rows, batch_size=50, progress=False)
        assert report.rows == 800
        warnings = [r.getMessage() for r in caplog.records if r.name == "sqlalchemy_dsql.batch"]
        assert len(warnings) == 1
        assert "running 2 batches at once instead of concurrency=8" in warnings[0]
        assert "pool_size=8" in warnings[0]
        # Two batches at a time on two connections: none waited for a connection.
        assert pool_counters(engine).checkout_waits == 0
    finally:
        await engine.dispose()
