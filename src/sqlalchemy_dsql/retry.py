"""Run a transaction again when Aurora DSQL's optimistic concurrency says so.

DSQL never blocks: two transactions that write the same row both run, and
the later COMMIT fails with SQLSTATE ``40001`` and ``(OC000)`` in the
message; DDL and finishing index builds fail other open transactions with
``(OC001)``. The fix is always the same: roll back, and run the whole
transaction again, re-reading what it read. :func:`run_transaction` does that
for asyncio, :func:`run_transaction_sync` for synchronous code, and
:func:`transactional` turns a service function into one that does.

::

    from sqlalchemy_dsql import run_transaction

    async def book_visit(session: AsyncSession) -> Visit:
        pet = await session.get(Pet, pet_id)
        ...
        return visit

    visit = await run_transaction(session_factory, book_visit)

``target`` is an ``AsyncEngine`` (``fn`` gets an ``AsyncConnection`` inside
``begin()``) or an ``async_sessionmaker`` (``fn`` gets an ``AsyncSession``
inside ``begin()``); the sync twin takes an ``Engine`` or a ``sessionmaker``.

What is retried: SQLSTATE ``40001``, ``OC000`` and ``OC001`` (as SQLSTATE or
in the message), wherever they are: on the exception, its ``orig``, its
``driver_exception`` or anywhere in its ``__cause__`` / ``__context__``
chain, so application code that wraps a conflict does not hide it. Nothing
else is: not the limit errors (``54000``), not ``0A000``, not authentication.
A connection lost while COMMIT was in flight leaves the outcome unknown; it
is retried only with ``RetryPolicy(idempotent=True)``. A connection lost
earlier in the transaction (nothing was committed) is retried.

Between attempts the helper sleeps (``asyncio.sleep``, never blocking) for an
exponentially growing, capped delay with full jitter, and gives up after
``max_attempts`` or when the next sleep would pass ``deadline`` seconds since
the first attempt, raising :class:`~sqlalchemy_dsql.errors.RetriesExhausted`
with the attempt count and the last conflict. Each retry calls ``on_retry``
with a :class:`RetryEvent`, adds to :class:`RetryStats`, and logs at DEBUG on
``sqlalchemy_dsql.retry``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar, overload

from sqlalchemy import Connection, Engine, exc
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session, sessionmaker

from .errors import ConfigurationError, ConnectionLost, RetriesExhausted

__all__ = [
    "RetryEvent",
    "RetryPolicy",
    "RetryStats",
    "conflict_sqlstate",
    "run_transaction",
    "run_transaction_sync",
    "totals",
    "transactional",
]

T = TypeVar("T")
_log = logging.getLogger("sqlalchemy_dsql.retry")
_CONFLICT_CODES = ("OC000", "OC001")
_RETRYABLE_SQLSTATES = frozenset({"40001", *_CONFLICT_CODES})


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how patiently to retry.

    The delay before retry ``n`` (1-based) is drawn uniformly from
    ``[0, min(max_delay, base_delay * 2 ** (n - 1))]`` ("full jitter").

    The defaults come from ``benchmarks/retry_batch.py`` (results in
    ``benchmarks/results/retry_batch.md``): 50 tasks contending for one row
    or for ten, with 2 ms per round trip. A 10 ms base and a 500 ms cap
    committed as much as any backoff tried on both (a 1 ms / 100 ms backoff
    about 25 % less on the hot row), with fewer retries than all but a 20 ms /
    1 s one. The worst transaction on the hot row needed 40 attempts, so
    ``max_attempts`` is 50; the 30 s ``deadline`` bounds the time spent.
    """

    max_attempts: int = 50
    base_delay: float = 0.01
    max_delay: float = 0.5
    deadline: float | None = 30.0
    idempotent: bool = False

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ConfigurationError(f"max_attempts must be at least 1, got {self.max_attempts}")
        if self.base_delay < 0 or self.max_delay < self.base_delay:
            raise ConfigurationError(
                f"need 0 <= base_delay <= max_delay, got base_delay={self.base_delay}, "
                f"max_delay={self.max_delay}"
            )
        if self.deadline is not None and self.deadline <= 0:
            raise ConfigurationError(f"deadline must be positive seconds, got {self.deadline}")

    def delay(self, retry: int) -> float:
        """The sleep before retry number ``retry`` (1 for the first retry)."""
        ceiling = min(self.max_delay, self.base_delay * 2 ** (retry - 1))
        return random.uniform(0, ceiling)


@dataclass(frozen=True, slots=True)
class RetryEvent:
    """One retry about to happen: after ``attempt`` failed, sleeping ``delay`` seconds."""

    attempt: int
    delay: float
    sqlstate: str
    error: BaseException


@dataclass
class RetryStats:
    """What the retry helper did: transactions, attempts, retries by SQLSTATE, give-ups."""

    transactions: int = 0
    attempts: int = 0
    retries: int = 0
    gave_up: int = 0
    retries_by_sqlstate: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        return {
            "transactions": self.transactions,
            "attempts": self.attempts,
            "retries": self.retries,
            "gave_up": self.gave_up,
            "retries_by_sqlstate": dict(self.retries_by_sqlstate),
        }


totals = RetryStats()
"""Every retry of this process, whatever ``stats`` the caller passed."""


def _chain(error: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    pending = [error]
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        for linked in (
            getattr(current, "orig", None),
            getattr(current, "driver_exception", None),
            current.__cause__,
            current.__context__,
        ):
            if isinstance(linked, BaseException):
                pending.append(linked)


def _sqlstate(error: BaseException) -> str | None:
    for name in ("sqlstate", "pgcode"):  # asyncpg and psycopg, psycopg2
        value = getattr(error, name, None)
        if isinstance(value, str):
            return value
    return None


def conflict_sqlstate(error: BaseException) -> str | None:
    """``OC000``, ``OC001`` or ``40001`` if ``error`` is, or wraps, a retryable conflict."""
    found: str | None = None
    for linked in _chain(error):
        text = str(linked)
        for code in _CONFLICT_CODES:
            if f"({code})" in text:
                return code
        state = _sqlstate(linked)
        if state in _CONFLICT_CODES:
            return state
        if state == "40001":
            found = state
    return found


def _commit_outcome_unknown(error: BaseException) -> bool:
    for linked in _chain(error):
        if isinstance(linked, ConnectionLost):
            return linked.during_commit
    # An engine not made by this package cannot tell when the connection died.
    return any(
        isinstance(linked, exc.DBAPIError) and linked.connection_invalidated
        for linked in _chain(error)
    )


def _lost_before_commit(error: BaseException) -> bool:
    return any(
        isinstance(linked, ConnectionLost) and not linked.during_commit for linked in _chain(error)
    )


class _Attempts:
    """The bookkeeping shared by the async and sync loops."""

    def __init__(
        self,
        policy: RetryPolicy,
        on_retry: Callable[[RetryEvent], object] | None,
        stats: RetryStats | None,
        name: str,
    ) -> None:
        self.policy = policy
        self.on_retry = on_retry
        self.stats = [s for s in (totals, stats) if s is not None]
        self.name = name
        self.started = time.monotonic()
        self.attempt = 0
        for s in self.stats:
            s.transactions += 1

    def begin(self) -> None:
        self.attempt += 1
        for s in self.stats:
            s.attempts += 1

    def next_delay(self, error: BaseException) -> float:
        """The sleep before the next attempt, or raise: ``error`` is not retried."""
        sqlstate = conflict_sqlstate(error)
        if sqlstate is None and _lost_before_commit(error):
            sqlstate = "08006"  # connection failure: nothing was committed
        elif sqlstate is None and _commit_outcome_unknown(error):
            if not self.policy.idempotent:
                raise error
            sqlstate = "08006"
        if sqlstate is None:
            raise error
        delay = self.policy.delay(self.attempt)
        elapsed = time.monotonic() - self.started
        out_of_time = self.policy.deadline is not None and (elapsed + delay > self.policy.deadline)
        if self.attempt >= self.policy.max_attempts or out_of_time:
            for s in self.stats:
                s.gave_up += 1
            reason = (
                f"after {self.attempt} attempts"
                if not out_of_time
                else f"at the {self.policy.deadline} s deadline, after {self.attempt} attempts"
            )
            raise RetriesExhausted(
                f"{self.name} gave up {reason} in {elapsed:.3f} s; the last conflict was "
                f"SQLSTATE {sqlstate}: {_first_line(error)}",
                attempts=self.attempt,
                last_error=error,
                sqlstate=sqlstate,
            ) from error
        for s in self.stats:
            s.retries += 1
            s.retries_by_sqlstate[sqlstate] += 1
        _log.debug(
            "%s: attempt %d failed with SQLSTATE %s, retrying in %.4f s",
            self.name,
            self.attempt,
            sqlstate,
            delay,
        )
        if self.on_retry is not None:
            self.on_retry(RetryEvent(self.attempt, delay, sqlstate, error))
        return delay


def _first_line(error: BaseException) -> str:
    text = str(getattr(error, "orig", None) or error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _name(fn: Callable[..., Any]) -> str:
    return f"run_transaction({getattr(fn, '__qualname__', repr(fn))})"


@overload
async def run_transaction(
    target: AsyncEngine,
    fn: Callable[[AsyncConnection], Awaitable[T]],
    /,
    *,
    policy: RetryPolicy | None = ...,
    on_retry: Callable[[RetryEvent], object] | None = ...,
    stats: RetryStats | None = ...,
) -> T: ...


@overload
async def run_transaction(
    target: async_sessionmaker[Any],
    fn: Callable[[AsyncSession], Awaitable[T]],
    /,
    *,
    policy: RetryPolicy | None = ...,
    on_retry: Callable[[RetryEvent], object] | None = ...,
    stats: RetryStats | None = ...,
) -> T: ...


async def run_transaction(
    target: AsyncEngine | async_sessionmaker[Any],
    fn: Callable[[Any], Awaitable[T]],
    /,
    *,
    policy: RetryPolicy | None = None,
    on_retry: Callable[[RetryEvent], object] | None = None,
    stats: RetryStats | None = None,
) -> T:
    """Run ``fn`` in a transaction on ``target``, again on each retryable conflict.

    Returns what ``fn`` returned in the attempt that committed.
    """
    if not isinstance(target, AsyncEngine | async_sessionmaker):
        raise ConfigurationError(
            f"run_transaction() needs an AsyncEngine or an async_sessionmaker, got "
            f"{type(target).__name__}; use run_transaction_sync() for Engine / sessionmaker"
        )
    attempts = _Attempts(policy or RetryPolicy(), on_retry, stats, _name(fn))
    while True:
        attempts.begin()
        try:
            if isinstance(target, AsyncEngine):
                async with target.begin() as conn:
                    return await fn(conn)
            async with target() as session, session.begin():
                return await fn(session)
        except Exception as error:
            await asyncio.sleep(attempts.next_delay(error))


@overload
def run_transaction_sync(
    target: Engine,
    fn: Callable[[Connection], T],
    /,
    *,
    policy: RetryPolicy | None = ...,
    on_retry: Callable[[RetryEvent], object] | None = ...,
    stats: RetryStats | None = ...,
) -> T: ...


@overload
def run_transaction_sync(
    target: sessionmaker[Any],
    fn: Callable[[Session], T],
    /,
    *,
    policy: RetryPolicy | None = ...,
    on_retry: Callable[[RetryEvent], object] | None = ...,
    stats: RetryStats | None = ...,
) -> T: ...


def run_transaction_sync(
    target: Engine | sessionmaker[Any],
    fn: Callable[[Any], T],
    /,
    *,
    policy: RetryPolicy | None = None,
    on_retry: Callable[[RetryEvent], object] | None = None,
    stats: RetryStats | None = None,
) -> T:
    """The synchronous twin of :func:`run_transaction`, for ``Engine`` and ``sessionmaker``."""
    if not isinstance(target, Engine | sessionmaker):
        raise ConfigurationError(
            f"run_transaction_sync() needs an Engine or a sessionmaker, got "
            f"{type(target).__name__}; use run_transaction() for asyncio"
        )
    attempts = _Attempts(policy or RetryPolicy(), on_retry, stats, _name(fn))
    while True:
        attempts.begin()
        try:
            if isinstance(target, Engine):
                with target.begin() as conn:
                    return fn(conn)
            with target() as session, session.begin():
                return fn(session)
        except Exception as error:
            time.sleep(attempts.next_delay(error))


def transactional(
    target: AsyncEngine | async_sessionmaker[Any],
    *,
    policy: RetryPolicy | None = None,
    on_retry: Callable[[RetryEvent], object] | None = None,
    stats: RetryStats | None = None,
) -> Callable[[Callable[..., Awaitable[T]]], Callable[..., Awaitable[T]]]:
    """Decorate ``async def f(conn_or_session, *args, **kwargs)`` to run in :func:`run_transaction`.

    The decorated function is called without its first argument::

        @transactional(session_factory)
        async def rename(session: AsyncSession, pet_id: UUID, name: str) -> None: ...

        await rename(pet_id, "Rex")
    """

    def decorate(fn: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
        @functools.wraps(fn)
        async def wrapper(*args: Any, **kwargs: Any) -> T:
            async def body(conn_or_session: Any) -> T:
                return await fn(conn_or_session, *args, **kwargs)

            body.__qualname__ = fn.__qualname__
            return await run_transaction(
                target, body, policy=policy, on_retry=on_retry, stats=stats
            )

        return wrapper

    return decorate
