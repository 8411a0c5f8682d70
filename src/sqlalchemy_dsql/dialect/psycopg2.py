"""``auroradsql+psycopg2``: Aurora DSQL through psycopg2, for ``create_engine``.

psycopg2 sends a bare ``BEGIN`` on DSQL (its only isolation level needs no
clause), also after a connection returns from ``AUTOCOMMIT`` or a read-only
transaction; the hstore
lookup at first connect is off, as DSQL has no extensions.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.dialects.postgresql.psycopg2 import PGDialect_psycopg2
from sqlalchemy.engine.interfaces import IsolationLevel

from .base import AuroraDSQLDialect


class AuroraDSQLDialect_psycopg2(AuroraDSQLDialect, PGDialect_psycopg2):
    driver = "psycopg2"
    supports_statement_cache = True
    _has_hstore_probe = True

    def _libpq_version(self) -> int:
        import psycopg2.extensions

        return int(psycopg2.extensions.libpq_version())

    def set_isolation_level(self, dbapi_connection: Any, level: IsolationLevel) -> None:
        # Only the autocommit switch: psycopg2's set_isolation_level(REPEATABLE_READ) makes
        # every later BEGIN spell the level out and, each time the connection then leaves
        # autocommit (the pool restoring it after a read), sends a round trip of
        # SET default_transaction_isolation TO DEFAULT for a setting it never made.
        dbapi_connection.autocommit = level == "AUTOCOMMIT"

    def set_readonly(self, connection: Any, value: bool) -> None:
        # None, not False, when the pool restores a connection after a read-only
        # transaction: the next BEGIN is then a bare BEGIN again, not BEGIN READ WRITE.
        connection.readonly = True if value else None


dialect = AuroraDSQLDialect_psycopg2
