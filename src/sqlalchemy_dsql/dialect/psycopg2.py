"""``auroradsql+psycopg2``: Aurora DSQL through psycopg2, for ``create_engine``.

psycopg2 sends a bare ``BEGIN`` for REPEATABLE READ sessions on DSQL; the
hstore lookup at first connect is off, as DSQL has no extensions.
"""

from __future__ import annotations

from sqlalchemy.dialects.postgresql.psycopg2 import PGDialect_psycopg2

from .base import AuroraDSQLDialect


class AuroraDSQLDialect_psycopg2(AuroraDSQLDialect, PGDialect_psycopg2):
    driver = "psycopg2"
    supports_statement_cache = True
    _has_hstore_probe = True

    def _libpq_version(self) -> int:
        import psycopg2.extensions

        return int(psycopg2.extensions.libpq_version())


dialect = AuroraDSQLDialect_psycopg2
