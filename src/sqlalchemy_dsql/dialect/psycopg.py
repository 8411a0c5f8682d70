"""``auroradsql+psycopg`` and ``auroradsql+psycopg_async``: Aurora DSQL through psycopg 3.

``create_async_engine("auroradsql+psycopg://...")`` gives
:class:`AuroraDSQLDialect_psycopg_async`, never SQLAlchemy's stock async
PostgreSQL dialect. The hstore probe that psycopg's SQLAlchemy dialect runs at
first connect (inside a savepoint) is off: DSQL has neither extensions nor
savepoints.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy.dialects.postgresql.psycopg import (
    PGCompiler_psycopg,
    PGDialect_psycopg,
    PGDialectAsync_psycopg,
)
from sqlalchemy.engine import URL

from .base import AuroraDSQLDialect, DSQLCompilerMixin


class DSQLCompiler_psycopg(DSQLCompilerMixin, PGCompiler_psycopg):
    pass


def _libpq_version() -> int:
    from psycopg import pq

    return int(pq.version())


class AuroraDSQLDialect_psycopg(AuroraDSQLDialect, PGDialect_psycopg):
    driver = "psycopg"
    supports_statement_cache = True
    statement_compiler = DSQLCompiler_psycopg
    _has_hstore_probe = True

    def _libpq_version(self) -> int:
        return _libpq_version()

    def set_readonly(self, connection: Any, value: bool) -> None:
        # None, not False, when the pool restores a connection after a read-only
        # transaction: psycopg then leaves READ WRITE out of the next BEGIN.
        connection.read_only = True if value else None

    @classmethod
    def get_async_dialect_cls(cls, url: URL) -> type[AuroraDSQLDialect]:
        if "+" not in url.drivername:  # the bare name: asyncpg is the async default
            from .asyncpg import AuroraDSQLDialect_asyncpg

            return AuroraDSQLDialect_asyncpg
        return AuroraDSQLDialect_psycopg_async


class AuroraDSQLDialect_psycopg_async(AuroraDSQLDialect, PGDialectAsync_psycopg):
    driver = "psycopg_async"
    supports_statement_cache = True
    statement_compiler = DSQLCompiler_psycopg
    _has_hstore_probe = True

    def _libpq_version(self) -> int:
        return _libpq_version()

    def _async_driver_connect(self) -> Callable[..., Awaitable[Any]]:
        connect: Callable[..., Awaitable[Any]] = self.loaded_dbapi.psycopg.AsyncConnection.connect
        return connect

    def set_readonly(self, connection: Any, value: bool) -> None:
        # As the sync dialect: back to psycopg's default, not to an explicit READ WRITE.
        connection.set_read_only(True if value else None)

    @classmethod
    def get_async_dialect_cls(cls, url: URL) -> type[AuroraDSQLDialect]:
        return cls  # the inherited one would return SQLAlchemy's stock async dialect


dialect = AuroraDSQLDialect_psycopg
dialect_async = AuroraDSQLDialect_psycopg_async
