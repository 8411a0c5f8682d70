"""The URL helper with SQLAlchemy's stock PostgreSQL dialects, and what the emulator catches.

These use SQLAlchemy's own ``postgresql+`` dialects on purpose: they show that the
emulator refuses what DSQL refuses even when the client library issues it
unasked (psycopg's hstore probe runs a savepoint at first connect).
"""

from __future__ import annotations

import asyncpg
import pytest
from sqlalchemy import create_engine, exc, text
from sqlalchemy.ext.asyncio import create_async_engine

from sqlalchemy_dsql.local import LocalDSQL

pytestmark = pytest.mark.integration


async def test_asyncpg_url_with_the_emulator_ca(dsql: LocalDSQL) -> None:
    engine = create_async_engine(dsql.url("asyncpg"), connect_args={"ssl": dsql.ssl_context()})
    try:
        async with engine.connect() as conn:
            assert (await conn.execute(text("SELECT current_user"))).scalar() == "admin"
    finally:
        await engine.dispose()


async def test_asyncpg_url_without_the_ca_fails_loudly(dsql: LocalDSQL) -> None:
    # ssl=verify-full without a CA: asyncpg looks for ~/.postgresql/root.crt and stops.
    engine = create_async_engine(dsql.url("asyncpg"))
    try:
        # SQLAlchemy 2.1 wraps asyncpg's configuration error in a DBAPIError; 2.0 does not.
        refusals = (exc.DBAPIError, OSError, asyncpg.exceptions.ClientConfigurationError)
        with pytest.raises(refusals, match=r"root cert|certificate verify"):
            async with engine.connect():
                pass
    finally:
        await engine.dispose()


def test_stock_psycopg_dialect_trips_over_its_savepoint_probe(dsql: LocalDSQL) -> None:
    engine = create_engine(dsql.url("psycopg"))
    try:
        with pytest.raises(exc.NotSupportedError, match="SAVEPOINT is not supported"):
            engine.connect()
    finally:
        engine.dispose()
    engine = create_engine(dsql.url("psycopg"), use_native_hstore=False)
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SELECT 2")).scalar() == 2
    finally:
        engine.dispose()
