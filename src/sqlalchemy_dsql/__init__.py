"""sqlalchemy-dsql: the async-first SQLAlchemy toolkit for Amazon Aurora DSQL.

- :func:`create_async_dsql_engine` / :func:`create_dsql_engine`: engines that
  sign a fresh IAM token for every connection and retire connections before
  DSQL's 60-minute limit (:mod:`sqlalchemy_dsql.engine`).
- :func:`run_transaction` (and :func:`run_transaction_sync`, :func:`transactional`):
  run a transaction again on DSQL's optimistic-concurrency conflicts
  (:mod:`sqlalchemy_dsql.retry`); ``sqlalchemy_dsql.batch``: inserts, upserts
  and deletes split into concurrent transactions under DSQL's row limit.
- The ``auroradsql`` dialect for asyncpg, psycopg and psycopg2
  (:mod:`sqlalchemy_dsql.dialect`) and DSQL-safe schema creation
  (:mod:`sqlalchemy_dsql.schema`).
- ``sqlalchemy_dsql.local``: a local Aurora DSQL emulator on a real
  PostgreSQL 16 (``dsql-local``).
"""

from __future__ import annotations

from .engine import create_async_dsql_engine, create_dsql_engine
from .pool import PoolCounters, pool_counters
from .retry import RetryPolicy, run_transaction, run_transaction_sync, transactional

__version__ = "0.1.0.dev0"
__all__ = [
    "PoolCounters",
    "RetryPolicy",
    "__version__",
    "create_async_dsql_engine",
    "create_dsql_engine",
    "pool_counters",
    "run_transaction",
    "run_transaction_sync",
    "transactional",
]
