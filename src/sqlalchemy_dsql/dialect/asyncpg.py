"""``auroradsql+asyncpg``: Aurora DSQL through asyncpg, for ``create_async_engine``.

The primary dialect of this package. Transactions start with a plain
``BEGIN`` (DSQL's only isolation level needs no clause), including after the
pool resets a connection: SQLAlchemy's stock asyncpg dialect begins those with
``BEGIN ISOLATION LEVEL READ COMMITTED``, which DSQL rejects.
"""

from __future__ import annotations

from sqlalchemy import util
from sqlalchemy.dialects.postgresql.asyncpg import PGCompiler_asyncpg, PGDialect_asyncpg

from .base import AuroraDSQLDialect, DSQLCompilerMixin


class DSQLCompiler_asyncpg(DSQLCompilerMixin, PGCompiler_asyncpg):
    pass


class AuroraDSQLDialect_asyncpg(AuroraDSQLDialect, PGDialect_asyncpg):
    driver = "asyncpg"
    supports_statement_cache = True
    statement_compiler = DSQLCompiler_asyncpg

    @util.memoized_property
    def _isolation_lookup(self) -> dict[str, str | None]:
        # None makes SQLAlchemy's asyncpg adapter open transactions with a bare BEGIN.
        return {"AUTOCOMMIT": "autocommit", "REPEATABLE READ": None}


dialect = AuroraDSQLDialect_asyncpg
