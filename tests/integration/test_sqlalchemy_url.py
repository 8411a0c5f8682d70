"""SQLAlchemy's stock PostgreSQL dialects on the emulator, and what the emulator catches.

These use SQLAlchemy's own ``postgresql+`` dialects on purpose: they show that the
emulator refuses what DSQL refuses even when the client library issues it
unasked (psycopg's hstore probe runs a savepoint at first connect). A stock
dialect signs no token, so each URL carries one, made here.
"""

from __future__ import annotations

import asyncpg
import pytest
from sqlalchemy import URL, create_engine, exc, text
from sqlalchemy.ext.asyncio import create_async_engine

from sqlalchemy_dsql.local import LocalDSQL

pytestmark = pytest.mark.integration


def _libpq_url(dsql: LocalDSQL) -> URL:
    return stock_url(dsql, "psycopg", sslmode="verify-full", sslrootcert=dsql.ca_file)


def stock_url(dsql: LocalDSQL, driver: str, **query: str) -> URL:
    """``postgresql+<driver>://admin:<token>@<address>:<port>/postgres``, with ``query``."""
    return URL.create(
        f"postgresql+{driver}",
        username="admin",
        password=dsql.token(),
        host=dsql.host,
        port=dsql.port,
        database="postgres",
        query=query,
    )


async def test_asyncpg_url_with_the_emulator_ca(dsql: LocalDSQL) -> None:
    engine = create_async_engine(
        stock_url(dsql, "asyncpg"), connect_args={"ssl": dsql.ssl_context()}
    )
    try:
        async with engine.connect() as conn:
            assert (await conn.execute(text("SELECT current_user"))).scalar() == "admin"
    finally:
        await engine.dispose()


async def test_asyncpg_url_without_the_ca_fails_loudly(dsql: LocalDSQL) -> None:
    # ssl=verify-full without a CA: asyncpg looks for ~/.postgresql/root.crt and stops.
    engine = create_async_engine(stock_url(dsql, "asyncpg", ssl="verify-full"))
    try:
        # SQLAlchemy 2.1 wraps asyncpg's configuration error in a DBAPIError; 2.0 does not.
        refusals = (exc.DBAPIError, OSError, asyncpg.exceptions.ClientConfigurationError)
        with pytest.raises(refusals, match=r"root cert|certificate verify"):
            async with engine.connect():
                pass
    finally:
        await engine.dispose()


def test_stock_psycopg_dialect_trips_over_its_savepoint_probe(dsql: LocalDSQL) -> None:
    engine = create_engine(_libpq_url(dsql))
    try:
        with pytest.raises(exc.NotSupportedError, match="SAVEPOINT is not supported"):
            engine.connect()
    finally:
        engine.dispose()
    engine = create_engine(_libpq_url(dsql), use_native_hstore=False)
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SELECT 2")).scalar() == 2
    finally:
        engine.dispose()
