"""Run the same synchronous check through every auroradsql driver, sync or async."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, create_engine
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from sqlalchemy_dsql.local import LocalDSQL

T = TypeVar("T")
DRIVERS = ["asyncpg", "psycopg_async", "psycopg", "psycopg2"]
ASYNC_DRIVERS = {"asyncpg", "psycopg_async"}


class Driver:
    """An engine on one driver, and a way to run sync checks on its connections."""

    def __init__(self, dsql: LocalDSQL, name: str, **engine_kwargs: Any) -> None:
        self.name = name
        # The test key pair in the environment signs each connection's token.
        url = dsql.url(name)
        if name in ASYNC_DRIVERS:
            self.engine: Engine | AsyncEngine = create_async_engine(url, **engine_kwargs)
        else:
            self.engine = create_engine(url, **engine_kwargs)

    async def run(self, check: Callable[[Connection], T], **execution_options: Any) -> T:
        """Call ``check`` with a connection (inside the greenlet for async drivers)."""
        if isinstance(self.engine, AsyncEngine):
            async with self.engine.connect() as conn:
                if execution_options:
                    await conn.execution_options(**execution_options)
                return await conn.run_sync(check)
        with self.engine.connect() as sync_conn:
            if execution_options:
                sync_conn.execution_options(**execution_options)
            return check(sync_conn)

    async def dispose(self) -> None:
        if isinstance(self.engine, AsyncEngine):
            await self.engine.dispose()
        else:
            self.engine.dispose()
