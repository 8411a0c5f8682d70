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

Sizing. An ``auroradsql`` pool keeps ``pool_size`` connections (15 by
default, SQLAlchemy's total of 5 plus 10 overflow) and opens no overflow
(``max_overflow=0``): SQLAlchemy closes an overflow connection as it comes
back whenever the pool already holds ``pool_size``, so a load above
``pool_size`` opens and closes connections all the time, each with a token, a
TLS handshake and a share of DSQL's 100-connections-per-second quota. A pool
given overflow logs one warning when it closes :data:`CHURN_WARN_AFTER`
(and at least twice ``max_overflow``) overflow connections within
:data:`CHURN_WINDOW` seconds: the end of one burst closes ``max_overflow``
at once, which is not churn; closing them again soon after is. A checkout that
finds no connection free within ``pool_timeout`` raises
:class:`~sqlalchemy_dsql.errors.PoolTimeout`, which says how many waited.

The async pool serves waiting checkouts strictly first come, first served:
a returned connection goes straight to the longest-waiting checkout, so a
newcomer cannot take it from under a waiter (asyncio's queue, which
SQLAlchemy's own pool uses, lets it, and the waiter then queues again at the
back).

:class:`PoolCounters` (from :func:`pool_counters`) tells what the pool did.
"""

from __future__ import annotations

import asyncio
import collections
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
from sqlalchemy.util import await_only
from sqlalchemy.util import queue as _queue

from .errors import ConfigurationError, PoolTimeout

__all__ = [
    "CHURN_WARN_AFTER",
    "CHURN_WINDOW",
    "DEFAULT_MAX_OVERFLOW",
    "DEFAULT_POOL_SIZE",
    "PoolCounters",
    "pool_counters",
]

#: Connections an ``auroradsql`` pool keeps when ``pool_size`` is not given.
DEFAULT_POOL_SIZE = 15
#: Overflow connections (opened above ``pool_size``, closed on return) when not given.
DEFAULT_MAX_OVERFLOW = 0
#: A pool that closes this many (and 2 x max_overflow) overflow connections within
#: CHURN_WINDOW seconds warns once.
CHURN_WARN_AFTER = 10
CHURN_WINDOW = 60.0

_RETIRE_AT = "auroradsql_retire_at"
_log = logging.getLogger("sqlalchemy_dsql.pool")


@dataclass
class PoolCounters:
    """What an engine's pool did since the engine was made.

    ``checkout_waits`` and ``checkout_wait_seconds`` count checkouts that had
    to wait for a connection because every connection the pool may open
    (``pool_size + max_overflow``) was in use; ``checkout_timeouts`` those
    that gave up after ``pool_timeout`` (:class:`~sqlalchemy_dsql.errors.PoolTimeout`).
    ``overflow_closed`` counts overflow connections closed as they came back
    because the pool already held ``pool_size`` (each was opened for one
    checkout: churn). The default pool classes only.
    """

    connections_opened: int = 0
    tokens_minted: int = 0
    retired_for_age_at_checkout: int = 0
    retired_for_age_at_checkin: int = 0
    replaced_after_server_close: int = 0
    lost_in_use: int = 0
    checkout_waits: int = 0
    checkout_wait_seconds: float = 0.0
    checkout_timeouts: int = 0
    overflow_closed: int = 0

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


class _Churn:
    """Counts overflow connections closed on return; warns once when that happens often."""

    def __init__(self, pool_size: int, max_overflow: int) -> None:
        self.pool_size = pool_size
        self.max_overflow = max_overflow
        self.counters: PoolCounters | None = None
        # One burst's end closes max_overflow at once; twice that within the window is churn.
        self._threshold = max(CHURN_WARN_AFTER, 2 * max_overflow)
        self._recent: collections.deque[float] = collections.deque(maxlen=self._threshold)
        self._warned = False

    def closed_one(self) -> None:
        if self.counters is not None:
            self.counters.overflow_closed += 1
        now = time.monotonic()
        self._recent.append(now)
        if (
            not self._warned
            and len(self._recent) == self._threshold
            and now - self._recent[0] <= CHURN_WINDOW
        ):
            self._warned = True
            _log.warning(
                "this pool (pool_size=%d, max_overflow=%d) closed %d overflow connections in "
                "%.0f s as they came back, and opens new ones for the next checkouts: each "
                "costs an IAM token, a TLS handshake and a share of Aurora DSQL's "
                "100-connections-per-second quota. Make pool_size the peak number of "
                "connections in use at once (e.g. pool_size=%d, max_overflow=0), or run fewer "
                "tasks at once; see 'Sizing a pool' in the engine guide",
                self.pool_size,
                self.max_overflow,
                self._threshold,
                now - self._recent[0],
                self.pool_size + max(self.max_overflow, 0),
            )


class _WaitTimingQueue(_queue.Queue[Any]):
    """SQLAlchemy's thread queue, timing checkouts that wait and counting churn."""

    counters: PoolCounters | None = None
    churn: _Churn | None = None
    waiting = 0

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        if not block:
            return super().get(False)
        try:
            return super().get(False)  # free already: no wait to count
        except _queue.Empty:
            pass
        self.waiting += 1
        started = time.perf_counter()
        try:
            return super().get(True, timeout)
        finally:
            self.waiting -= 1
            if self.counters is not None:
                self.counters.checkout_waits += 1
                self.counters.checkout_wait_seconds += time.perf_counter() - started

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        try:
            super().put(item, block, timeout)
        except _queue.Full:
            if self.churn is not None:
                self.churn.closed_one()
            raise


class _FairAsyncQueue(_queue.QueueCommon[Any]):
    """The async pool's idle connections and waiting checkouts, first come, first served.

    A connection put back while checkouts wait is handed to the longest-waiting
    one directly and never sits in the queue, so a checkout that arrives later
    cannot take it first. Waiters are futures (no task each) that a timer
    fails after ``timeout``; a waiter that gives up stays in the deque, marked
    done, and is skipped, so giving up costs O(1).
    """

    counters: PoolCounters | None = None
    churn: _Churn | None = None

    def __init__(self, maxsize: int = 0, use_lifo: bool = False) -> None:
        self.maxsize = maxsize
        self.use_lifo = use_lifo
        self._idle: collections.deque[Any] = collections.deque()
        self._waiters: collections.deque[asyncio.Future[Any]] = collections.deque()
        self.waiting = 0

    def empty(self) -> bool:
        return not self._idle

    def full(self) -> bool:
        return 0 < self.maxsize <= len(self._idle)

    def qsize(self) -> int:
        return len(self._idle)

    def put_nowait(self, item: Any) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(item)
                return
        if self.full():
            if self.churn is not None:
                self.churn.closed_one()
            raise _queue.Full()
        self._idle.append(item)

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        # The pool puts without blocking only; with maxsize >= the connections
        # in existence, a put never has to wait for room.
        self.put_nowait(item)

    def get_nowait(self) -> Any:
        if not self._idle:
            raise _queue.Empty()
        return self._idle.pop() if self.use_lifo else self._idle.popleft()

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        if self._idle or not block:
            return self.get_nowait()
        started = time.perf_counter()
        self.waiting += 1
        try:
            return await_only(self._wait(timeout))
        finally:
            self.waiting -= 1
            if self.counters is not None:
                self.counters.checkout_waits += 1
                self.counters.checkout_wait_seconds += time.perf_counter() - started

    async def _wait(self, timeout: float | None) -> Any:
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[Any] = loop.create_future()
        self._waiters.append(waiter)
        timer = None if timeout is None else loop.call_later(timeout, _expire, waiter)
        try:
            return await waiter
        except BaseException:
            # Cancelled just after a connection was handed over: pass it on, not lose it.
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self.put_nowait(waiter.result())
            else:
                waiter.cancel()
            raise
        finally:
            if timer is not None:
                timer.cancel()


def _expire(waiter: asyncio.Future[Any]) -> None:
    if not waiter.done():
        waiter.set_exception(_queue.Empty())


def _carry(old: QueuePool, new: QueuePool) -> QueuePool:
    # engine.dispose() swaps in a new pool; the engine's counters go on counting.
    new._pool.counters = old._pool.counters  # type: ignore[attr-defined]
    new._pool.churn = old._pool.churn  # type: ignore[attr-defined]
    return new


def _timed_out(pool: QueuePool, error: exc.TimeoutError) -> exc.TimeoutError:
    if isinstance(error, PoolTimeout):  # _do_get calls itself: wrapped already
        return error
    queue = pool._pool
    counters: PoolCounters | None = getattr(queue, "counters", None)
    if counters is not None:
        counters.checkout_timeouts += 1
    waiting: int = getattr(queue, "waiting", 0) + 1  # this checkout has stopped waiting
    size, overflow = pool.size(), max(pool._max_overflow, 0)
    return PoolTimeout(
        f"no pooled connection became free within pool_timeout={pool.timeout():g} s: all "
        f"{size + overflow} connections this pool may open (pool_size={size}, "
        f"max_overflow={overflow}) were in use and {waiting} checkouts were waiting, this one "
        f"included. Raise pool_size (Aurora DSQL takes thousands of connections per cluster), "
        f"run fewer tasks at once (an asyncio.Semaphore, or a smaller batch concurrency), "
        f"shorten what each holds a connection for, or raise pool_timeout if waiting longer "
        f"is acceptable; see 'Sizing a pool' in the engine guide",
        pool_size=size,
        max_overflow=overflow,
        timeout=pool.timeout(),
        waiting=waiting,
    )


class DSQLQueuePool(QueuePool):
    """SQLAlchemy's ``QueuePool`` with DSQL's defaults, timed waits and a clear timeout error.

    ``pool_size`` defaults to :data:`DEFAULT_POOL_SIZE` and ``max_overflow``
    to :data:`DEFAULT_MAX_OVERFLOW` (see the module documentation).
    """

    _queue_class: type[_queue.QueueCommon[Any]] = _WaitTimingQueue

    def __init__(
        self,
        creator: Any,
        pool_size: int = DEFAULT_POOL_SIZE,
        max_overflow: int = DEFAULT_MAX_OVERFLOW,
        timeout: float = 30.0,
        **kw: Any,
    ) -> None:
        super().__init__(
            creator, pool_size=pool_size, max_overflow=max_overflow, timeout=timeout, **kw
        )
        self._pool.churn = _Churn(pool_size, max_overflow)  # type: ignore[attr-defined]

    def _do_get(self) -> Any:
        try:
            return super()._do_get()
        except exc.TimeoutError as error:
            raise _timed_out(self, error) from None

    def recreate(self) -> QueuePool:
        return _carry(self, super().recreate())


class AsyncDSQLQueuePool(DSQLQueuePool, AsyncAdaptedQueuePool):
    """The async ``DSQLQueuePool``: DSQL's defaults, timed waits, first-come-first-served.

    Everything but the queue comes from :class:`DSQLQueuePool`; the asyncio
    adaptation from SQLAlchemy's ``AsyncAdaptedQueuePool``, next in the MRO.
    """

    _queue_class = _FairAsyncQueue


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
    if isinstance(waits, _WaitTimingQueue | _FairAsyncQueue):
        waits.counters = counters
        if waits.churn is not None:
            waits.churn.counters = counters

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
