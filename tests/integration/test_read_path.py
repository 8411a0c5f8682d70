"""The read path at its round-trip minimum, on every driver, counted by the emulator.

``run_transaction(..., read_only=True)`` sends no BEGIN and no COMMIT: one
round trip per statement once the driver has what it caches per connection
(asyncpg prepares a statement the first time a connection runs it; psycopg
prepares it on its sixth run). ``snapshot=True`` is one read-only transaction:
two round trips more. Each test gets its own one-connection pool, so every
round trip in the emulator's log during a unit is the unit's.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from sqlalchemy import Engine, String, create_engine, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from harness.dialect import ASYNC_DRIVERS, DRIVERS, Driver
from sqlalchemy_dsql import run_transaction, run_transaction_sync, transactional
from sqlalchemy_dsql.errors import ReadOnlyViolation
from sqlalchemy_dsql.local import LocalDSQL, RoundTrip
from sqlalchemy_dsql.retry import RetryPolicy, RetryStats
from sqlalchemy_dsql.schema import create_all

pytestmark = pytest.mark.integration

# Round trips of the same read by key, run seven times on one connection: asyncpg
# prepares it first (Parse/Describe, then Bind/Execute), psycopg on the sixth run,
# after prepare_threshold=5 (a Parse of its own, then Bind/Execute from then on);
# psycopg2 sends it as text.
READ_BY_KEY_TRIPS = {
    "asyncpg": [2, 1, 1, 1, 1, 1, 1],
    "psycopg_async": [1, 1, 1, 1, 1, 2, 1],
    "psycopg": [1, 1, 1, 1, 1, 2, 1],
    "psycopg2": [1, 1, 1, 1, 1, 1, 1],
}
# What a unit that reads after a read-only one begins with: the driver's default BEGIN.
BEGIN = {
    "asyncpg": "BEGIN",
    "psycopg_async": "BEGIN ISOLATION LEVEL REPEATABLE READ",
    "psycopg": "BEGIN ISOLATION LEVEL REPEATABLE READ",
    "psycopg2": "BEGIN",
}
POLICY = RetryPolicy(max_attempts=3, base_delay=0.001, max_delay=0.01)


class Base(DeclarativeBase):
    pass


class Reading(Base):
    __tablename__ = "read_path_readings"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    label: Mapped[str] = mapped_column(String(40))


KEY = uuid.UUID("00000000-0000-4000-8000-000000000018")


@pytest.fixture(scope="module")
async def table(dsql: LocalDSQL) -> None:
    engine = create_async_engine(dsql.url())
    try:
        await create_all(engine, Base.metadata)
        async with engine.begin() as conn:
            await conn.execute(Reading.__table__.delete())
            await conn.execute(Reading.__table__.insert(), [{"id": KEY, "label": "first"}])
    finally:
        await engine.dispose()


@pytest.fixture(params=DRIVERS)
async def driver(
    request: pytest.FixtureRequest, dsql: LocalDSQL, table: None
) -> AsyncIterator[Driver]:
    found = Driver(dsql, request.param, pool_size=1, max_overflow=0)
    try:
        yield found
    finally:
        await found.dispose()


def _log(dsql: LocalDSQL) -> Any:
    assert dsql.round_trip_log is not None
    return dsql.round_trip_log


async def trips(dsql: LocalDSQL, unit: Callable[[], Any]) -> list[RoundTrip]:
    """The round trips ``unit`` (a coroutine function or a plain one) made."""
    log = _log(dsql)
    log.clear()
    result = unit()
    if hasattr(result, "__await__"):
        await result
    return list(log)


def sessions(driver: Driver) -> async_sessionmaker[Any] | sessionmaker[Session]:
    if isinstance(driver.engine, AsyncEngine):
        return async_sessionmaker(driver.engine, expire_on_commit=False)
    return sessionmaker(driver.engine, expire_on_commit=False)


async def run(driver: Driver, target: Any, fn: Callable[[Any], Any], **options: Any) -> Any:
    """``run_transaction`` for the async drivers, ``run_transaction_sync`` for the others."""
    if driver.name in ASYNC_DRIVERS:

        async def unit(conn_or_session: Any) -> Any:
            result = fn(conn_or_session)
            return await result if hasattr(result, "__await__") else result

        return await run_transaction(target, unit, **options)
    return run_transaction_sync(target, fn, **options)


def read_label(session: Any) -> Any:
    return session.get(Reading, KEY)


async def connect(driver: Driver) -> None:
    """Open the pool's connection, so that connecting is not counted."""
    await driver.run(lambda conn: conn.execute(text("SELECT 1")))


async def test_read_by_key_is_one_round_trip_without_begin_or_commit(
    dsql: LocalDSQL, driver: Driver
) -> None:
    target = sessions(driver)
    await connect(driver)
    counts = []
    found: list[Any] = []

    async def unit() -> None:
        found.append(await run(driver, target, read_label, read_only=True))

    for _ in range(7):
        made = await trips(dsql, unit)
        assert found[-1].label == "first"
        sql = [statement for trip in made for statement in trip.sql]
        assert all(s.lstrip().upper().startswith("SELECT") for s in sql), sql
        counts.append(len(made))
    assert counts == READ_BY_KEY_TRIPS[driver.name]


async def test_without_read_only_the_same_read_costs_begin_and_commit(
    dsql: LocalDSQL, driver: Driver
) -> None:
    target = sessions(driver)
    await connect(driver)
    await run(driver, target, read_label, read_only=True)  # asyncpg prepares it here
    made = await trips(dsql, lambda: run(driver, target, read_label))
    assert len(made) == 3
    assert made[0].sql[0].upper().startswith("BEGIN")
    assert made[-1].sql[0].upper().startswith("COMMIT")


async def test_a_read_only_unit_on_an_engine_costs_one_round_trip_per_statement(
    dsql: LocalDSQL, driver: Driver
) -> None:
    def two_reads(conn: Any) -> Any:
        first = select(Reading.label).where(Reading.id == KEY)
        second = select(Reading.id).where(Reading.label == "first")
        if driver.name in ASYNC_DRIVERS:

            async def both() -> tuple[Any, Any]:
                return (await conn.scalar(first), await conn.scalar(second))

            return both()
        return (conn.scalar(first), conn.scalar(second))

    await connect(driver)
    await run(driver, driver.engine, two_reads, read_only=True)
    made = await trips(dsql, lambda: run(driver, driver.engine, two_reads, read_only=True))
    assert len(made) == 2, [(t.messages, t.sql) for t in made]


async def test_snapshot_is_one_read_only_transaction_two_round_trips_more(
    dsql: LocalDSQL, driver: Driver
) -> None:
    target = sessions(driver)
    await connect(driver)
    await run(driver, target, read_label, read_only=True)
    made = await trips(dsql, lambda: run(driver, target, read_label, read_only=True, snapshot=True))
    assert len(made) == 3, [(t.messages, t.sql) for t in made]
    begin = made[0].sql[0].upper()
    assert begin.startswith("BEGIN")
    assert "READ ONLY" in begin
    assert made[-1].sql[0].upper().startswith("COMMIT")


async def test_each_statement_is_its_own_snapshot_unless_snapshot_is_asked_for(
    dsql: LocalDSQL, driver: Driver
) -> None:
    # A blocking writer: a sync driver's unit runs on the loop's thread, without a loop of its own.
    writer = create_engine(dsql.url("psycopg"))
    labels = iter(["second", "third"])

    def relabel(label: str) -> None:
        with writer.begin() as conn:
            conn.execute(Reading.__table__.update().where(Reading.id == KEY).values(label=label))

    query = select(Reading.label).where(Reading.id == KEY)

    def read_twice(conn: Any) -> Any:
        if driver.name in ASYNC_DRIVERS:

            async def both() -> tuple[str, str]:
                before = await conn.scalar(query)
                relabel(next(labels))
                return before, await conn.scalar(query)

            return both()
        before = conn.scalar(query)
        relabel(next(labels))
        return before, conn.scalar(query)

    try:
        per_statement = await run(driver, driver.engine, read_twice, read_only=True)
        assert per_statement == ("first", "second")
        one_snapshot = await run(driver, driver.engine, read_twice, read_only=True, snapshot=True)
        assert one_snapshot == ("second", "second")
    finally:
        relabel("first")
        writer.dispose()


async def test_a_write_in_a_read_only_unit_is_refused_before_it_is_sent(
    dsql: LocalDSQL, driver: Driver
) -> None:
    target = sessions(driver)

    def insert(session: Any) -> Any:
        session.add(Reading(label="written"))
        return session.flush()

    def update(conn: Any) -> Any:
        return conn.execute(text("UPDATE read_path_readings SET label = 'written'"))

    await connect(driver)
    for snapshot in (False, True):
        log = _log(dsql)
        log.clear()
        with pytest.raises(ReadOnlyViolation, match="read-only"):
            await run(driver, target, insert, read_only=True, snapshot=snapshot)
        with pytest.raises(ReadOnlyViolation, match="UPDATE read_path_readings"):
            await run(driver, driver.engine, update, read_only=True, snapshot=snapshot)
        sent = [s for trip in log for s in trip.sql]
        assert not any("INSERT" in s or "UPDATE" in s for s in sent), sent
    assert (await run(driver, target, read_label, read_only=True)).label == "first"


async def test_the_connection_is_a_transaction_again_after_a_read(
    dsql: LocalDSQL, driver: Driver
) -> None:
    target = sessions(driver)
    await connect(driver)
    for snapshot in (False, True):
        await run(driver, target, read_label, read_only=True, snapshot=snapshot)
        made = await trips(dsql, lambda: run(driver, target, read_label))
        # A bare BEGIN again: the pool restored the driver's defaults (no READ WRITE, and
        # psycopg2 sends no SET to undo an isolation level at check-in).
        assert [t.sql[0].upper().rstrip(";") for t in (made[0], made[-1])] == [
            BEGIN[driver.name],
            "COMMIT",
        ]
        assert len(made) == 3


async def test_a_read_is_retried_on_a_lost_connection(dsql: LocalDSQL, driver: Driver) -> None:
    target = sessions(driver)
    await connect(driver)
    attempts: list[int] = []
    stats = RetryStats()

    def read_after_kill(session: Any) -> Any:
        attempts.append(1)
        if len(attempts) == 1:
            dsql.kill()  # every session: this one's connection is gone
        return session.get(Reading, KEY)

    found = await run(driver, target, read_after_kill, read_only=True, policy=POLICY, stats=stats)
    assert found.label == "first"
    assert len(attempts) == 2
    assert stats.retries_by_sqlstate == {"08006": 1}


async def test_transactional_takes_read_only(dsql: LocalDSQL, table: None) -> None:
    engine = create_async_engine(dsql.url(), pool_size=1, max_overflow=0)
    try:

        @transactional(async_sessionmaker(engine), read_only=True)
        async def label_of(session: Any, key: uuid.UUID) -> str:
            return (await session.get_one(Reading, key)).label

        assert await label_of(KEY) == "first"
        made = await trips(dsql, lambda: label_of(KEY))
        assert len(made) == 1
    finally:
        await engine.dispose()


def test_snapshot_without_read_only_is_refused(dsql: LocalDSQL) -> None:
    engine: Engine = Driver(dsql, "psycopg").engine  # type: ignore[assignment]
    try:
        with pytest.raises(ValueError, match="snapshot=True is an option of read_only=True"):
            run_transaction_sync(engine, lambda conn: None, snapshot=True)
    finally:
        engine.dispose()


# The pet clinic's GET endpoints, through both web integrations' read sessions.


async def _clinic_reads(dsql: LocalDSQL, get: Callable[[str], Any], post: Any) -> None:
    created = await post(
        "/owners",
        {
            "name": "Mary Major",
            "city": "Anytown",
            "pets": [{"name": "Rex", "birth_date": "2021-07-23"}],
        },
    )
    pet, owner = created["pets"][0]["id"], created["id"]
    for path, statements in ((f"/pets/{pet}", 1), (f"/owners/{owner}", 2), ("/specialties", 1)):
        await get(path)  # asyncpg prepares the statements on the pool's one connection
        made = await trips(dsql, lambda path=path: get(path))
        assert len(made) == statements, (path, [(t.messages, t.sql) for t in made])
        sent = [s.upper() for trip in made for s in trip.sql]
        assert all(s.lstrip().startswith("SELECT") for s in sent), sent


async def test_pet_clinic_fastapi_gets_cost_one_round_trip_per_statement(
    dsql: LocalDSQL,
) -> None:
    import httpx
    from async_pet_clinic.api import create_app

    from harness.clinic import empty_tables
    from sqlalchemy_dsql.integrations.fastapi import Database

    db = Database(dsql.url(), pool_size=1, max_overflow=0)
    app = create_app(db)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://c") as client,
    ):
        await empty_tables(db.engine)

        async def get(path: str) -> Any:
            response = await client.get(path)
            assert response.status_code == 200, response.text
            return response.json()

        async def post(path: str, body: Any) -> Any:
            response = await client.post(path, json=body)
            assert response.status_code == 201, response.text
            return response.json()

        await _clinic_reads(dsql, get, post)
        await empty_tables(db.engine)


async def test_pet_clinic_aiohttp_gets_cost_one_round_trip_per_statement(
    dsql: LocalDSQL,
) -> None:
    from aiohttp import test_utils
    from async_pet_clinic.web import create_app

    from harness.clinic import empty_tables
    from sqlalchemy_dsql.integrations.aiohttp import Database

    db = Database(dsql.url(), pool_size=1, max_overflow=0)
    async with test_utils.TestClient(test_utils.TestServer(create_app(db))) as client:
        await empty_tables(db.engine)

        async def get(path: str) -> Any:
            response = await client.get(path)
            assert response.status == 200, await response.text()
            return await response.json()

        async def post(path: str, body: Any) -> Any:
            response = await client.post(path, json=body)
            assert response.status == 201, await response.text()
            return await response.json()

        await _clinic_reads(dsql, get, post)
        await empty_tables(db.engine)


async def test_fastapi_snapshot_session_and_database_read(dsql: LocalDSQL, table: None) -> None:
    import httpx
    from fastapi import FastAPI

    from sqlalchemy_dsql.integrations.fastapi import Database

    db = Database(dsql.url(), pool_size=1, max_overflow=0)
    app = FastAPI(lifespan=db.lifespan)

    @app.get("/snapshot")
    async def in_one_snapshot(session: Any = db.snapshot_session) -> list[str]:
        first = await session.get(Reading, KEY)
        count = await session.scalar(select(text("count(*)")).select_from(Reading))
        return [first.label, str(count)]

    @app.get("/read")
    async def read() -> str:
        async def label(session: Any) -> str:
            return str((await session.get(Reading, KEY)).label)

        return await db.read(label)

    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://c") as client,
    ):
        for path in ("/snapshot", "/read"):  # asyncpg prepares the statements first
            assert (await client.get(path)).status_code == 200
        made = await trips(dsql, lambda: client.get("/snapshot"))
        # BEGIN READ ONLY, two statements, COMMIT: the statements and two round trips more.
        assert len(made) == 4, [t.sql for t in made]
        assert made[0].sql[0].upper().startswith("BEGIN")
        assert "READ ONLY" in made[0].sql[0].upper()
        assert made[-1].sql[0].upper().startswith("COMMIT")
        response = await client.get("/read")
        assert response.json() == "first"
        made = await trips(dsql, lambda: client.get("/read"))
        assert [s.split()[0].upper() for t in made for s in t.sql] == ["SELECT"]


async def test_aiohttp_read_session_for_with_a_snapshot(dsql: LocalDSQL, table: None) -> None:
    from aiohttp import test_utils, web

    from sqlalchemy_dsql.integrations.aiohttp import Database, read_session_for

    db = Database(dsql.url(), pool_size=1, max_overflow=0)

    async def handler(request: web.Request) -> web.Response:
        snapshot = request.query.get("snapshot") == "1"
        async with read_session_for(request, snapshot=snapshot) as session:
            found = await session.get(Reading, KEY)
        return web.json_response(found.label)

    app = web.Application()
    app.cleanup_ctx.append(db.cleanup_ctx)
    app.router.add_get("/label", handler)
    async with test_utils.TestClient(test_utils.TestServer(app)) as client:
        for query in ("", "?snapshot=1"):
            assert await (await client.get(f"/label{query}")).json() == "first"
        plain = await trips(dsql, lambda: client.get("/label"))
        snapshot = await trips(dsql, lambda: client.get("/label?snapshot=1"))
    assert len(plain) == 1, [t.sql for t in plain]
    assert len(snapshot) == 3, [t.sql for t in snapshot]
