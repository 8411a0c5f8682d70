"""Connection lifetime for Aurora DSQL pools, and the counters that show it.

DSQL closes every session after 60 minutes, without an error code. The pool
of every ``auroradsql`` engine gives each new physical
connection a retirement time, ``max_connection_age`` (55 minutes by default)
minus a random jitter of up to ``connection_age_jitter`` (10 % of the age, at
most 5 minutes, by default), so that connections opened together are not
replaced together against DSQL's 100-new-connections-per-second quota.

A connection is retired when it comes back to the pool past that time
(closed there, so an idle pool holds no stale connections), or when it is
checked out past it; a connection in use is never touched, so a transaction
is never cut short by retirement.

At checkout the pool also drops a connection the server has already closed
(killed, network failure, DSQL's hour): asyncpg notices a closed socket by
itself; for psycopg and psycopg2 the pool asks the operating system whether
the idle socket has anything to read, which an idle PostgreSQL connection
never has unless the server said goodbye. Both checks are local and cost no
round trip, and the caller gets a fresh connection before running anything.
``pool_pre_ping=True`` catches more (a peer that vanished without closing the
socket) at the price of a ``BEGIN; ROLLBACK;`` round trip on every checkout;
see the engine guide.

:class:`PoolCounters` (from :func:`pool_counters`) tells what the pool did.
"""

from __future__ import annotations

import logging
import random
import select
import time
import weakref
from dataclasses import dataclass, fields
from typing import Any

from sqlalchemy import Engine, event, exc
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import AsyncAdaptedQueuePool, QueuePool
from sqlalchemy.util import queue as _queue

from .errors import ConfigurationError

__all__ = [
    "PoolCounters",
    "pool_counters",
]

_RETIRE_AT = "auroradsql_retire_at"
_log = logging.getLogger("sqlalchemy_dsql.pool")


@dataclass
class PoolCounters:
    """What an engine's pool did since the engine was made.

    ``checkout_waits`` and ``checkout_wait_seconds`` count checkouts that had
    to wait for a connection because the pool was at ``pool_size +
    max_overflow`` (the default pool class only).
    """

    connections_opened: int = 0
    tokens_minted: int = 0
    retired_for_age_at_checkout: int = 0
    retired_for_age_at_checkin: int = 0
    replaced_after_server_close: int = 0
    lost_in_use: int = 0
    checkout_waits: int = 0
    checkout_wait_seconds: float = 0.0

    @property
    def retired_for_age(self) -> int:
        return self.retired_for_age_at_checkout + self.retired_for_age_at_checkin

    def as_dict(self) -> dict[str, float]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


_counters: weakref.WeakKeyDictionary[Engine, PoolCounters] = weakref.WeakKeyDictionary()


def pool_counters(engine: AsyncEngine | Engine) -> PoolCounters:
    """The counters of an engine made by this package."""
    sync_engine = engine.sync_engine if isinstance(engine, AsyncEngine) else engine
    try:
        return _counters[sync_engine]
    except KeyError:
        raise ConfigurationError(
            "this engine is not on an auroradsql dialect (auroradsql+asyncpg://..., or "
            "create_async_dsql_engine() / create_dsql_engine()); it has no DSQL pool counters"
        ) from None


def has_lifetime(engine: Engine) -> bool:
    """Whether :func:`manage_lifetime` has equipped ``engine`` already."""
    return engine in _counters


def _timed_get(get: Any, counters: PoolCounters | None, block: bool, timeout: float | None) -> Any:
    """``get(block, timeout)``; a blocking get is a checkout waiting for a connection."""
    if not block or counters is None:
        return get(block, timeout)
    started = time.perf_counter()
    try:
        return get(block, timeout)
    finally:
        counters.checkout_waits += 1
        counters.checkout_wait_seconds += time.perf_counter() - started


class _WaitTimingQueue(_queue.Queue[Any]):
    counters: PoolCounters | None = None

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        return _timed_get(super().get, self.counters, block, timeout)


class _AsyncWaitTimingQueue(_queue.AsyncAdaptedQueue[Any]):
    counters: PoolCounters | None = None

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        return _timed_get(super().get, self.counters, block, timeout)


def _carry_counters(old: QueuePool, new: QueuePool) -> QueuePool:
    # engine.dispose() swaps in a new pool; the engine's counters go on counting.
    new._pool.counters = old._pool.counters  # type: ignore[attr-defined]
    return new


class DSQLQueuePool(QueuePool):
    """SQLAlchemy's ``QueuePool`` that also times checkouts waiting for a connection."""

    _queue_class = _WaitTimingQueue

    def recreate(self) -> QueuePool:
        return _carry_counters(self, super().recreate())


class AsyncDSQLQueuePool(AsyncAdaptedQueuePool):
    """SQLAlchemy's ``AsyncAdaptedQueuePool`` that also times checkouts waiting for a connection."""

    _queue_class = _AsyncWaitTimingQueue

    def recreate(self) -> QueuePool:
        return _carry_counters(self, super().recreate())


def _server_closed(driver_connection: Any) -> bool:
    is_closed = getattr(driver_connection, "is_closed", None)
    if callable(is_closed):  # asyncpg watches its socket all the time
        return bool(is_closed())
    if driver_connection.closed:
        return True
    # libpq reads only when asked: an idle connection with bytes waiting has
    # been sent a goodbye (FATAL before a close) or the close itself.
    try:
        readable, _, _ = select.select([driver_connection.fileno()], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


def manage_lifetime(
    engine: Engine, counters: PoolCounters, max_connection_age: float, jitter: float
) -> None:
    """Give the engine's pool retirement times, local liveness checks and ``counters``.

    The pool events and the counters stay with the engine across ``dispose()``.
    """
    _counters[engine] = counters
    pool = engine.pool
    waits = getattr(pool, "_pool", None)
    if isinstance(waits, _WaitTimingQueue | _AsyncWaitTimingQueue):
        waits.counters = counters

    @event.listens_for(pool, "connect")
    def _set_retirement(dbapi_connection: Any, record: Any) -> None:
        record.info[_RETIRE_AT] = time.monotonic() + max_connection_age - random.uniform(0, jitter)

    @event.listens_for(pool, "checkout")
    def _retire_or_replace(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        # Async drivers come wrapped in an adapter; sync ones are the driver's own.
        if _server_closed(getattr(dbapi_connection, "driver_connection", dbapi_connection)):
            counters.replaced_after_server_close += 1
            _log.debug("replacing a pooled connection the server has closed")
            raise exc.DisconnectionError("the server closed this connection; opening another")
        if time.monotonic() >= record.info.get(_RETIRE_AT, float("inf")):
            counters.retired_for_age_at_checkout += 1
            _log.debug("retiring a connection past its maximum age at checkout")
            raise exc.DisconnectionError("connection past its maximum age; opening another")

    @event.listens_for(pool, "checkin")
    def _retire_on_return(dbapi_connection: Any, record: Any) -> None:
        if dbapi_connection is None:  # already invalidated
            return
        if time.monotonic() >= record.info.get(_RETIRE_AT, float("inf")):
            counters.retired_for_age_at_checkin += 1
            _log.debug("retiring a connection past its maximum age as it comes back")
            record.invalidate(soft=False)
