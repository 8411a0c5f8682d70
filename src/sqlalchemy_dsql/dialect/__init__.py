"""The ``auroradsql`` SQLAlchemy dialect: one shared base, one thin module per driver.

=========================  ==========================================  ==========
URL                        dialect class                               use with
=========================  ==========================================  ==========
``auroradsql+asyncpg``     ``asyncpg.AuroraDSQLDialect_asyncpg``        ``create_async_engine``
``auroradsql+psycopg``     ``psycopg.AuroraDSQLDialect_psycopg``        ``create_engine``, and
                                                                       ``create_async_engine``
                                                                       (gives the async one)
``auroradsql+psycopg_async`` ``psycopg.AuroraDSQLDialect_psycopg_async`` ``create_async_engine``
``auroradsql+psycopg2``    ``psycopg2.AuroraDSQLDialect_psycopg2``      ``create_engine``
``auroradsql``             psycopg (sync) / asyncpg (async)            either
=========================  ==========================================  ==========

The names are registered as ``sqlalchemy.dialects`` entry points when the
package is installed. ``base.py`` documents the DSQL behaviour they share.
"""

from __future__ import annotations

from .base import ISOLATION_LEVELS, AuroraDSQLDialect

__all__ = ["ISOLATION_LEVELS", "AuroraDSQLDialect"]
