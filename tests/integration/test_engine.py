"""auroradsql+asyncpg engines through the emulator: tokens, TLS, retirement, replacement, loss.

The engines come from the emulator's URL (``create_async_dsql_engine`` builds the
same URL and dialect arguments); the factory's own ``server_settings`` is tested here too.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from harness.engine import async_engine
from sqlalchemy_dsql import create_async_dsql_engine, pool_counters
from sqlalchemy_dsql.errors import ConfigurationError, ConnectionLost
from sqlalchemy_dsql.local import LocalDSQL

pytestmark = pytest.mark.integration


@pytest.fixture
async def engine(dsql: LocalDSQL) -> AsyncIterator[AsyncEngine]:
    made = async_engine(dsql)
    yield made
    await made.dispose()


def _session_id(conn: AsyncConnection) -> int:
    # The emulator hands out its session id as the backend pid (what kill() takes).
    raw = conn.sync_connection.connection.driver_connection  # type: ignore[union-attr]
    return int(raw.get_server_pid())


async def test_connects_as_admin_over_verified_tls(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        assert (await conn.execute(text("SELECT current_user"))).scalar_one() == "admin"
    assert engine.dialect.name == "auroradsql"
    assert engine.dialect.driver == "asyncpg"


async def test_custom_role_uses_dbconnect_and_its_schema(dsql: LocalDSQL) -> None:
    admin = await asyncpg.connect(**dsql.connect_kwargs())
    try:
        if not await admin.fetchval("SELECT 1 FROM pg_roles WHERE rolname = 'app_engine'"):
            await admin.execute("CREATE ROLE app_engine WITH LOGIN")
        await admin.execute("CREATE SCHEMA IF NOT EXISTS app_engine_schema")
        await admin.execute("GRANT USAGE, CREATE ON SCHEMA app_engine_schema TO app_engine")
    finally:
        await admin.close()
    engine = async_engine(dsql, user="app_engine", schema="app_engine_schema")
    try:
        async with engine.connect() as conn:
            row = (await conn.execute(text("SELECT session_user, current_schema()"))).one()
            assert tuple(row) == ("app_engine", "app_engine_schema")
    finally:
        await engine.dispose()


async def test_each_new_connection_gets_its_own_token(engine: AsyncEngine) -> None:
    async def hold() -> None:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT pg_sleep(0.05)"))

    await asyncio.gather(*(hold() for _ in range(4)))
    counters = pool_counters(engine)
    assert counters.connections_opened == 4
    assert counters.tokens_minted == 4


async def test_pool_options_pass_through(dsql: LocalDSQL) -> None:
    engine = async_engine(dsql, pool_size=2, max_overflow=0, pool_timeout=5)
    try:

        async def hold() -> None:
            async with engine.connect() as conn:
                await conn.execute(text("SELECT pg_sleep(0.1)"))

        await asyncio.gather(*(hold() for _ in range(4)))
        counters = pool_counters(engine)
        assert counters.connections_opened == 2
        assert counters.checkout_waits == 2
        assert counters.checkout_wait_seconds >= 0.15
    finally:
        await engine.dispose()


async def test_connections_are_retired_at_checkout(dsql: LocalDSQL) -> None:
    engine = async_engine(dsql, max_connection_age=0.5, connection_age_jitter=0)
    try:
        async with engine.connect() as conn:
            first = _session_id(conn)
        # Past its age while idle in the pool: the next checkout opens a new one.
        await asyncio.sleep(0.7)
        async with engine.connect() as conn:
            second = _session_id(conn)
        assert first != second
        assert pool_counters(engine).retired_for_age_at_checkout == 1
    finally:
        await engine.dispose()


async def test_retirement_waits_for_the_transaction_and_happens_at_checkin(
    dsql: LocalDSQL,
) -> None:
    engine = async_engine(dsql, max_connection_age=0.5, connection_age_jitter=0)
    try:
        async with engine.begin() as conn:
            first = _session_id(conn)
            await asyncio.sleep(0.7)  # past the age, mid-transaction: nothing happens
            assert _session_id(conn) == first
        counters = pool_counters(engine)
        assert counters.retired_for_age_at_checkin == 1
        assert first not in dsql.session_ids()  # closed as it came back, not left idle
        async with engine.connect() as conn:
            assert _session_id(conn) != first
        assert counters.retired_for_age_at_checkout == 0
    finally:
        await engine.dispose()


async def test_jitter_spreads_retirement_times(dsql: LocalDSQL) -> None:
    engine = async_engine(dsql, max_connection_age=100, connection_age_jitter=50)
    try:
        conns = [await engine.connect() for _ in range(5)]
        retire_at = {
            c.sync_connection._dbapi_connection._connection_record.info["auroradsql_retire_at"]  # type: ignore[union-attr]
            for c in conns
        }
        for conn in conns:
            await conn.close()
        assert len(retire_at) == 5
        assert max(retire_at) - min(retire_at) > 1.0
    finally:
        await engine.dispose()


async def test_killed_idle_connections_are_replaced_on_checkout(
    engine: AsyncEngine, dsql: LocalDSQL
) -> None:
    async with engine.connect() as conn:
        session_id = _session_id(conn)
    dsql.kill(session_id)
    await asyncio.sleep(0.1)
    async with engine.connect() as conn:
        assert (await conn.execute(text("SELECT 1"))).scalar_one() == 1
        assert _session_id(conn) != session_id
    assert pool_counters(engine).replaced_after_server_close == 1


async def test_connection_lost_mid_transaction_says_so(
    engine: AsyncEngine, dsql: LocalDSQL
) -> None:
    async def killed_midway() -> None:
        async with engine.begin() as conn:
            await conn.execute(text("SELECT 1"))
            dsql.kill(_session_id(conn))
            await asyncio.sleep(0.1)
            await conn.execute(text("SELECT 2"))

    with pytest.raises(ConnectionLost) as caught:
        await killed_midway()
    error = caught.value
    assert "lost the connection to" in str(error)
    assert "rolled back by the server" in str(error)
    assert error.during_commit is False
    assert error.connection_invalidated
    assert pool_counters(engine).lost_in_use == 1
    async with engine.connect() as conn:  # the pool recovers by itself
        assert (await conn.execute(text("SELECT 1"))).scalar_one() == 1


async def test_connection_lost_during_commit_has_an_unknown_outcome(
    engine: AsyncEngine, dsql: LocalDSQL
) -> None:
    victim: list[int] = []

    def kill_before_commit(conn: Any) -> None:
        dsql.kill(victim[0])

    async def killed_at_commit() -> None:
        async with engine.begin() as conn:
            await conn.execute(text("SELECT 1"))
            victim.append(_session_id(conn))
            event.listen(engine.sync_engine, "commit", kill_before_commit)

    with pytest.raises(ConnectionLost) as caught:
        await killed_at_commit()
    event.remove(engine.sync_engine, "commit", kill_before_commit)
    error = caught.value
    assert error.during_commit is True
    assert "while COMMIT was in flight" in str(error)
    assert "unknown" in str(error)


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"sslmode": "disable"}, "allow_insecure_tls=True"),
        ({"sslmode": "require"}, "allow_insecure_tls=True"),
        ({"sslmode": "verify-ca"}, "allow_insecure_tls=True"),
        ({"sslmode": "prefer"}, "sslmode='prefer' is not supported"),
        ({"sslrootcert": "/nonexistent/ca.pem"}, "cannot load the CA file"),
        ({"max_connection_age": 0}, "max_connection_age must be positive"),
        ({"connection_age_jitter": 10_000}, "connection_age_jitter"),
        ({"token_lifetime": 10**7}, "token lifetime must be between"),
    ],
)
def test_refused_settings(dsql: LocalDSQL, kwargs: dict[str, Any], reason: str) -> None:
    with pytest.raises(ConfigurationError, match=reason):
        async_engine(dsql, **kwargs)


async def test_unverified_tls_needs_the_explicit_opt_out(dsql: LocalDSQL) -> None:
    # No CA file: only an unverified connection can succeed, and only when asked for.
    engine = async_engine(dsql, sslmode="require", sslrootcert=None, allow_insecure_tls=True)
    try:
        async with engine.connect() as conn:
            assert (await conn.execute(text("SELECT 1"))).scalar_one() == 1
    finally:
        await engine.dispose()


async def test_direct_tls(dsql: LocalDSQL) -> None:
    engine = async_engine(dsql, direct_tls=True)
    try:
        async with engine.connect() as conn:
            assert (await conn.execute(text("SELECT 1"))).scalar_one() == 1
    finally:
        await engine.dispose()


async def test_application_name_and_server_settings(dsql: LocalDSQL) -> None:
    # server_settings is the factory's own option (asyncpg's), merged with application_name.
    engine = create_async_dsql_engine(
        dsql.endpoint,
        hostaddr=dsql.host,
        port=dsql.port,
        sslrootcert=dsql.ca_file,
        application_name="clinic",
        server_settings={"TimeZone": "UTC"},
    )
    try:
        async with engine.connect() as conn:
            name = (await conn.execute(text("SHOW application_name"))).scalar_one()
            zone = (await conn.execute(text("SHOW TimeZone"))).scalar_one()
        assert (name, zone) == ("clinic", "UTC")
    finally:
        await engine.dispose()


async def test_the_factory_makes_async_psycopg_engines_too(dsql: LocalDSQL) -> None:
    # The factory over the same path, on psycopg's async mode; schema sets search_path,
    # which psycopg runs in a transaction that the connector commits.
    engine = create_async_dsql_engine(
        dsql.endpoint,
        driver="psycopg",
        hostaddr=dsql.host,
        port=dsql.port,
        sslrootcert=dsql.ca_file,
        schema="public",
    )
    try:
        assert engine.dialect.driver == "psycopg_async"
        async with engine.connect() as conn:
            row = (await conn.execute(text("SELECT current_user, current_schema()"))).one()
            assert tuple(row) == ("admin", "public")
        assert pool_counters(engine).tokens_minted == 1
    finally:
        await engine.dispose()


def test_the_factory_refuses_an_unknown_async_driver() -> None:
    with pytest.raises(ConfigurationError, match="Unsupported driver: 'psycopg2'"):
        create_async_dsql_engine(
            "abcdefghijklmnopqrstuvwxyz.dsql.us-east-1.on.aws", driver="psycopg2"
        )
