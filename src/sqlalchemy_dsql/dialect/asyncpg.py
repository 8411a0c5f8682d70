"""``auroradsql+asyncpg``: Aurora DSQL through asyncpg, for ``create_async_engine``.

The primary dialect of this package. Transactions start with a plain
``BEGIN`` (DSQL's only isolation level needs no clause), including after the
pool resets a connection: SQLAlchemy's stock asyncpg dialect begins those with
``BEGIN ISOLATION LEVEL READ COMMITTED``, which DSQL rejects.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import util
from sqlalchemy.dialects.postgresql.asyncpg import PGCompiler_asyncpg, PGDialect_asyncpg

from ..connector import Connector
from ..settings import DriverFamily
from .base import AuroraDSQLDialect, DSQLCompilerMixin

# asyncpg options a URL may carry, and their types (a URL's values are strings).
_OPTION_TYPES: dict[str, Callable[[str], Any]] = {
    "command_timeout": float,
    "statement_cache_size": int,
    "max_cached_statement_lifetime": float,
    "max_cacheable_statement_size": int,
    "prepared_statement_cache_size": int,
}


class DSQLCompiler_asyncpg(DSQLCompilerMixin, PGCompiler_asyncpg):
    pass


class AuroraDSQLDialect_asyncpg(AuroraDSQLDialect, PGDialect_asyncpg):
    driver = "asyncpg"
    supports_statement_cache = True
    statement_compiler = DSQLCompiler_asyncpg
    _driver_family = DriverFamily.ASYNCPG

    @util.memoized_property
    def _isolation_lookup(self) -> dict[str, str | None]:
        # None makes SQLAlchemy's asyncpg adapter open transactions with a bare BEGIN.
        return {"AUTOCOMMIT": "autocommit", "REPEATABLE READ": None}

    def _driver_arguments(self, connector: Connector) -> dict[str, Any]:
        return connector.asyncpg_arguments()

    def _driver_options(self, options: dict[str, str]) -> dict[str, Any]:
        return {name: _OPTION_TYPES[name](value) for name, value in options.items()}

    def _async_driver_connect(self) -> Callable[..., Awaitable[Any]]:
        connect: Callable[..., Awaitable[Any]] = self.loaded_dbapi.asyncpg.connect
        return connect


dialect = AuroraDSQLDialect_asyncpg
