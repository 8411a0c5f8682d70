"""The engine under load, against an emulator in its own process (no shared GIL).

- 100 tasks run transactions for a minute (``DSQL_SOAK_SECONDS``) while the
  server closes connections after a few seconds and the engine retires them
  sooner: no task sees an error, and no update is lost.
- With the engine's age above the server's, every idle connection the server
  closed is replaced at checkout without an error.
- Opening 50 connections does not hold up the event loop: a ticker task is
  never late by more than a few milliseconds (no more than with raw asyncpg
  and a precomputed password), while minting tokens the way
  Amazon's connector does (a new boto3 client per token) makes it late by
  hundreds of milliseconds.
"""

from __future__ import annotations

import asyncio
import gc
import os
import ssl
import time
from collections.abc import Iterator
from typing import Any

import asyncpg
import boto3
import pytest
from sqlalchemy import text

from harness.engine import async_engine
from sqlalchemy_dsql import pool_counters
from sqlalchemy_dsql.local.process import SpawnedDSQL, spawn

pytestmark = pytest.mark.integration

SERVER_MAX_AGE = 6.0
SOAK_SECONDS = float(os.environ.get("DSQL_SOAK_SECONDS", "60"))
TICKER_LIMIT_MS = 10.0


@pytest.fixture(scope="module")
def short_lived_dsql(aws_test_keys: None) -> Iterator[SpawnedDSQL]:
    """``dsql-local`` in a subprocess, closing every connection after SERVER_MAX_AGE s."""
    with spawn(max_connection_age=SERVER_MAX_AGE) as dsql:
        yield dsql


@pytest.mark.timeout(SOAK_SECONDS + 120)
async def test_soak_with_retirement(short_lived_dsql: SpawnedDSQL) -> None:
    dsql = short_lived_dsql
    engine = async_engine(
        dsql,
        # Retired 2-3 s old, 3 s or more before the server closes them: on a loaded 2-core
        # machine a transaction checked out just before retirement was seen to outlive a
        # 1.5 s margin (1 of about 50,000 lost in use).
        max_connection_age=SERVER_MAX_AGE - 3.0,
        connection_age_jitter=1.0,
        pool_size=20,
        max_overflow=10,
        pool_timeout=30,
    )
    tasks = 100
    errors: list[BaseException] = []
    committed = [0] * tasks
    try:
        async with engine.begin() as conn:
            await conn.execute(text("DROP TABLE IF EXISTS soak_counter"))
        async with engine.begin() as conn:
            await conn.execute(text("CREATE TABLE soak_counter (id int PRIMARY KEY, n int)"))
        async with engine.begin() as conn:
            await conn.execute(
                text("INSERT INTO soak_counter VALUES (:id, 0)"), [{"id": i} for i in range(tasks)]
            )
        deadline = time.monotonic() + SOAK_SECONDS

        async def worker(task: int) -> None:
            while time.monotonic() < deadline:
                try:
                    async with engine.begin() as conn:
                        await conn.execute(
                            text("UPDATE soak_counter SET n = n + 1 WHERE id = :id"), {"id": task}
                        )
                        await asyncio.sleep(0.005)  # a transaction that takes a moment
                    committed[task] += 1
                except Exception as error:  # every error is a failure of this test
                    errors.append(error)
                    await asyncio.sleep(0.1)

        await asyncio.gather(*(worker(i) for i in range(tasks)))
        async with engine.connect() as conn:
            rows = (await conn.execute(text("SELECT id, n FROM soak_counter"))).all()
        stored = {row.id: row.n for row in rows}
        async with engine.begin() as conn:
            await conn.execute(text("DROP TABLE soak_counter"))
    finally:
        await engine.dispose()
    counters = pool_counters(engine)
    print(f"soak: {sum(committed)} transactions in {SOAK_SECONDS:.0f} s, {counters.as_dict()}")
    assert errors == [], f"{len(errors)} errors, first: {errors[:1]!r}"
    assert stored == dict(enumerate(committed))  # nothing lost, nothing doubled
    assert sum(committed) > tasks * SOAK_SECONDS  # the soak did real work
    # Connections were visibly retired and replaced, well before the server's limit.
    assert counters.retired_for_age >= SOAK_SECONDS / SERVER_MAX_AGE
    assert counters.connections_opened > 30 + counters.retired_for_age / 2
    assert counters.lost_in_use == 0


async def test_idle_connections_the_server_closed_are_replaced(
    short_lived_dsql: SpawnedDSQL,
) -> None:
    engine = async_engine(short_lived_dsql, pool_size=10, max_overflow=0)
    try:
        held = [await engine.connect() for _ in range(10)]
        for conn in held:
            await conn.execute(text("SELECT 1"))
            await conn.close()
        await asyncio.sleep(SERVER_MAX_AGE + 0.5)  # the server closes all ten

        async def use() -> int:
            async with engine.connect() as conn:
                await asyncio.sleep(0.05)
                return int((await conn.execute(text("SELECT 1"))).scalar_one())

        assert await asyncio.gather(*(use() for _ in range(10))) == [1] * 10
        counters = pool_counters(engine)
        assert counters.replaced_after_server_close == 10
        assert counters.lost_in_use == 0
    finally:
        await engine.dispose()


async def _ticker_lateness(work: Any, repeat: int = 1) -> float:
    """The worst lateness (ms) of a 1 ms ticker while ``work`` runs.

    With ``repeat``, the smallest worst case of that many runs: a stall our
    code causes shows in every run, the OS scheduling another process now and
    then (two cores, the emulator busy) does not.
    """
    if repeat > 1:
        return min([await _ticker_lateness(work) for _ in range(repeat)])
    worst = 0.0
    done = asyncio.Event()

    async def tick() -> None:
        nonlocal worst
        while not done.is_set():
            started = time.perf_counter()
            await asyncio.sleep(0.001)
            worst = max(worst, (time.perf_counter() - started) * 1000 - 1.0)

    gc.collect()
    gc.disable()  # collector pauses are not what this measures
    ticker = asyncio.create_task(tick())
    try:
        await asyncio.sleep(0.01)
        await work()
    finally:
        gc.enable()
        done.set()
        await ticker
    return worst


async def _open_fifty(connect: Any) -> None:
    """Open 50 connections, two handshakes at a time, and hold all until the end.

    A TLS handshake step takes 2-4 ms of the loop here whoever signs the
    token, and asyncio runs every ready step before a due timer: 50 at once
    delay a ticker by 25-35 ms even for raw asyncpg with a precomputed
    password. Two at a time is a pool growing under load.
    """
    gate = asyncio.Semaphore(2)

    async def one() -> Any:
        async with gate:
            return await connect()

    held = await asyncio.gather(*(one() for _ in range(50)))
    for conn in held:
        await conn.close()


async def test_token_minting_does_not_block_the_loop(short_lived_dsql: SpawnedDSQL) -> None:
    dsql = short_lived_dsql
    engine = async_engine(dsql, pool_size=50, max_overflow=0)
    try:
        async with engine.connect():  # first connect: dialect set-up, client creation
            pass
        await engine.dispose()
        before = pool_counters(engine).tokens_minted

        async def open_and_dispose() -> None:
            await _open_fifty(engine.connect)
            await engine.dispose()

        ours = await _ticker_lateness(open_and_dispose, repeat=3)
        assert pool_counters(engine).tokens_minted - before == 150
    finally:
        await engine.dispose()

    # The same, with each token minted as Amazon's connector does: a new boto3 client.
    def blocking_token() -> str:
        client = boto3.Session(
            aws_access_key_id=dsql.credentials.access_key,
            aws_secret_access_key=dsql.credentials.secret_key,
        ).client("dsql", region_name=dsql.region)
        return str(client.generate_db_connect_admin_auth_token(dsql.endpoint, dsql.region))

    tls = ssl.create_default_context(cafile=dsql.ca_file)  # the certificate covers 127.0.0.1

    async def connect_blocking() -> Any:
        return await asyncpg.connect(
            host=dsql.host,
            port=dsql.port,
            user="admin",
            password=blocking_token(),
            database="postgres",
            ssl=tls,
        )

    precomputed = blocking_token()

    async def connect_precomputed() -> Any:
        return await asyncpg.connect(
            host=dsql.host,
            port=dsql.port,
            user="admin",
            password=precomputed,
            database="postgres",
            ssl=tls,
        )

    theirs = await _ticker_lateness(lambda: _open_fifty(connect_blocking))
    baseline = await _ticker_lateness(lambda: _open_fifty(connect_precomputed), repeat=3)
    print(
        f"ticker worst lateness: ours {ours:.2f} ms, raw asyncpg with a precomputed token "
        f"{baseline:.2f} ms, new boto3 client per token {theirs:.2f} ms"
    )
    assert ours < TICKER_LIMIT_MS
    assert ours < baseline + 3.0  # signing adds no stall of its own
    assert theirs > 3 * TICKER_LIMIT_MS  # the measurement does see a blocked loop
