"""create_async_dsql_engine through the emulator: tokens, TLS, retirement, replacement."""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import AsyncIterator
from typing import Any

import aioboto3
import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from sqlalchemy_dsql.engine import create_async_dsql_engine, engine_counters
from sqlalchemy_dsql.errors import ConfigurationError
from sqlalchemy_dsql.local import LocalDSQL

pytestmark = pytest.mark.integration


def _session(dsql: LocalDSQL) -> Any:
    return aioboto3.Session(
        aws_access_key_id=dsql.credentials.access_key,
        aws_secret_access_key=dsql.credentials.secret_key,
    )


def _engine(dsql: LocalDSQL, **kwargs: Any) -> AsyncEngine:
    options: dict[str, Any] = {
        "session": _session(dsql),
        "hostaddr": dsql.host,
        "port": dsql.port,
        "sslrootcert": dsql.ca_file,
    }
    options.update(kwargs)
    return create_async_dsql_engine(dsql.endpoint, **options)


@pytest.fixture
async def engine(dsql: LocalDSQL) -> AsyncIterator[AsyncEngine]:
    made = _engine(dsql)
    yield made
    await made.dispose()


async def test_connects_as_admin_over_verified_tls(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        assert (await conn.execute(text("SELECT current_user"))).scalar_one() == "admin"
    assert engine.dialect.name == "auroradsql"


async def test_custom_role_uses_dbconnect_and_its_schema(dsql: LocalDSQL) -> None:
    admin = await asyncpg.connect(**dsql.connect_kwargs())
    try:
        if not await admin.fetchval("SELECT 1 FROM pg_roles WHERE rolname = 'app_engine'"):
            await admin.execute("CREATE ROLE app_engine WITH LOGIN")
        await admin.execute("CREATE SCHEMA IF NOT EXISTS app_engine_schema")
        await admin.execute("GRANT USAGE, CREATE ON SCHEMA app_engine_schema TO app_engine")
    finally:
        await admin.close()
    engine = _engine(dsql, user="app_engine", schema="app_engine_schema")
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
    counters = engine_counters(engine)
    assert counters.connections_opened >= 4
    assert counters.tokens_minted == counters.connections_opened


async def test_connections_are_retired_at_checkout(dsql: LocalDSQL) -> None:
    engine = _engine(dsql, max_connection_age=0.5, connection_age_jitter=0)
    try:
        async with engine.connect() as conn:
            first = (await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one()
        await asyncio.sleep(0.7)
        async with engine.connect() as conn:
            second = (await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one()
        assert first != second
        assert engine_counters(engine).retired_for_age == 1
    finally:
        await engine.dispose()


async def test_killed_connections_are_replaced_on_checkout(dsql: LocalDSQL) -> None:
    engine = _engine(dsql)
    try:
        async with engine.connect() as conn:
            pid = conn.sync_connection.connection.driver_connection.get_server_pid()  # type: ignore[union-attr]
        dsql.kill(pid)
        await asyncio.sleep(0.1)
        async with engine.connect() as conn:
            assert (await conn.execute(text("SELECT 1"))).scalar_one() == 1
        assert engine_counters(engine).replaced_after_close == 1
    finally:
        await engine.dispose()


async def test_unknown_ca_fails_verification(dsql: LocalDSQL) -> None:
    engine = _engine(dsql, sslrootcert="system")
    try:
        with pytest.raises(ssl.SSLCertVerificationError):
            async with engine.connect():
                pass
    finally:
        await engine.dispose()


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"sslmode": "disable"}, "sslmode='disable' is not supported"),
        ({"sslrootcert": "/nonexistent/ca.pem"}, "cannot load the CA file"),
        ({"max_connection_age": 0}, "max_connection_age must be positive"),
        ({"connection_age_jitter": 10_000}, "connection_age_jitter"),
    ],
)
def test_bad_configuration(dsql: LocalDSQL, kwargs: dict[str, Any], reason: str) -> None:
    with pytest.raises(ConfigurationError, match=reason):
        _engine(dsql, **kwargs)


def test_no_region_for_a_foreign_host() -> None:
    with pytest.raises(ConfigurationError, match="pass region="):
        create_async_dsql_engine("db.example.com")


async def test_tokens_and_keys_stay_out_of_logs(
    dsql: LocalDSQL, caplog: pytest.LogCaptureFixture
) -> None:
    engine = _engine(dsql, echo=True)
    try:
        with caplog.at_level(logging.DEBUG):
            async with engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
            text_seen = caplog.text + repr(engine) + str(engine.url)
    finally:
        await engine.dispose()
    assert "SELECT 1" in caplog.text  # echo was on
    assert "X-Amz-Signature" not in text_seen
    assert dsql.credentials.secret_key not in text_seen
