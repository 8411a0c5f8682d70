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
with the attempt count, the last error and its :class:`RetryReason`
(``CONFLICT`` or ``CONNECTION_LOST``). Each retry calls ``on_retry`` with a
:class:`RetryEvent`, adds to :class:`RetryStats`, and logs at DEBUG on
``sqlalchemy_dsql.retry``.

Reads: ``read_only=True`` runs ``fn`` without a transaction, the round-trip
minimum: no ``BEGIN``, no ``COMMIT``, one round trip per statement (the
connection is in ``AUTOCOMMIT`` for the unit and restored when it returns to
the pool). **Each statement is then its own snapshot**: two SELECTs may see
different committed states. A write in such a unit raises
:class:`~sqlalchemy_dsql.errors.ReadOnlyViolation` before it is sent. Where
the reads must agree with each other, add ``snapshot=True``: one
``BEGIN READ ONLY`` ... ``COMMIT`` transaction, two round trips more than
its statements. A read is idempotent, so a read-only unit is retried on a
lost connection wherever it was lost (also during its ``COMMIT``), as well
as on the conflicts above (a schema change, ``OC001``, can fail a read).
docs/reads.md has the cost of each driver.

Work that is not one function over a fresh transaction (a step of a schema
change, a batch on a connection already open) uses the same loop directly:
:class:`Attempts`, ``for attempt in Attempts(policy): with attempt: ...``.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import logging
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterator
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar, overload

from sqlalchemy import Connection, Engine, exc
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session, sessionmaker

from .errors import ConfigurationError, ConnectionLost, RetriesExhausted, RetryReason

__all__ = [
    "Attempt",
    "AttemptState",
    "Attempts",
    "RetryEvent",
    "RetryPolicy",
    "RetryReason",
    "RetryStats",
    "conflict_sqlstate",
    "read_only_options",
    "run_transaction",
    "run_transaction_sync",
    "totals",
    "transactional",
]

T = TypeVar("T")
_log = logging.getLogger("sqlalchemy_dsql.retry")
_CONFLICT_CODES = ("OC000", "OC001")
_CONNECTION_FAILURE = "08006"


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
    """One retry about to happen: after ``attempt`` failed, sleeping ``delay`` seconds.

    ``sqlstate`` is the conflict's code, or ``08006`` (connection failure) when
    ``reason`` is :attr:`RetryReason.CONNECTION_LOST`.
    """

    attempt: int
    delay: float
    sqlstate: str
    error: BaseException
    reason: RetryReason


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


class AttemptState(enum.Enum):
    """Where one :class:`Attempt` is."""

    RUNNING = "running"
    """Handed out and not finished: its ``with`` block has not ended yet."""

    SUCCEEDED = "succeeded"
    """Its ``with`` block ended without an exception; no attempt follows."""

    RETRYING = "retrying"
    """It failed with a retryable error; the next attempt follows after ``delay`` seconds."""

    FAILED = "failed"
    """It failed with an error that is not retried, or the retries ran out; the error propagates."""


class Attempt:
    """One run of the work, used as ``with attempt:`` around it; made by :class:`Attempts`.

    Leaving the block without an exception ends the loop. A retryable error
    is swallowed (the loop sleeps and runs the work again), any other error
    propagates, and the last retryable error before the policy gives up
    propagates as :class:`~sqlalchemy_dsql.errors.RetriesExhausted`.
    """

    __slots__ = ("_attempts", "delay", "error", "number", "reason", "state")

    def __init__(self, attempts: Attempts, number: int) -> None:
        self._attempts = attempts
        self.number = number
        """1 for the first attempt."""
        self.state = AttemptState.RUNNING
        self.error: BaseException | None = None
        """What ended it, unless it succeeded."""
        self.reason: RetryReason | None = None
        """Why it is retried (``RETRYING``) or why the retries ran out."""
        self.delay: float | None = None
        """The sleep before the next attempt, when ``RETRYING``."""

    def __enter__(self) -> Attempt:
        return self

    def __exit__(
        self, error_type: type[BaseException] | None, error: BaseException | None, tb: object
    ) -> bool:
        if error is None:
            self.state = AttemptState.SUCCEEDED
            return False
        self.error = error
        # Cancellation, KeyboardInterrupt and the like are never retried.
        if not isinstance(error, Exception):
            self.state = AttemptState.FAILED
            return False
        self._attempts._failed(self, error)
        return self.state is AttemptState.RETRYING

    def __repr__(self) -> str:
        return f"<Attempt {self.number} {self.state.value}>"


class Attempts:
    """The retry loop of :func:`run_transaction`, for work it cannot wrap.

    Iterate it (``for`` in synchronous code, ``async for`` under asyncio) and
    run the whole transaction inside ``with attempt:``; roll back inside the
    block, before it ends with the error::

        for attempt in Attempts(RetryPolicy(max_attempts=5), name="nightly import"):
            with attempt:
                with engine.begin() as conn:
                    import_rows(conn)

        async for attempt in Attempts(policy, on_retry=log_retry):
            with attempt:
                async with engine.begin() as conn:
                    return await book(conn)

    A retryable error (see the module documentation) ends the block quietly;
    the loop then sleeps (``time.sleep`` in ``for``, ``asyncio.sleep`` in
    ``async for``) for ``policy``'s backoff and hands out the next attempt.
    Any other error leaves the block and the loop unchanged. When the policy
    gives up (``max_attempts``, or the next sleep would pass the deadline)
    the block raises :class:`~sqlalchemy_dsql.errors.RetriesExhausted` from
    the last error. The loop ends after the first attempt that succeeds.

    ``retry_on`` narrows what is retried: ``{RetryReason.CONFLICT}`` leaves a
    lost connection to propagate, for work that cannot get a new connection.
    Each retry calls ``on_retry``, counts in ``stats`` (and
    :data:`totals`) and is logged at DEBUG; ``name`` names the work in the log
    and in ``RetriesExhausted``. An ``Attempts`` runs one piece of work once:
    make a new one for the next.
    """

    def __init__(
        self,
        policy: RetryPolicy | None = None,
        *,
        name: str = "transaction",
        on_retry: Callable[[RetryEvent], object] | None = None,
        stats: RetryStats | None = None,
        retry_on: Collection[RetryReason] = frozenset(RetryReason),
    ) -> None:
        self.policy = policy or RetryPolicy()
        self.name = name
        self.on_retry = on_retry
        self.retry_on = frozenset(retry_on)
        self._stats = [s for s in (totals, stats) if s is not None]
        self._started = 0.0
        self.current: Attempt | None = None
        """The attempt handed out last; ``None`` before the first."""

    def __iter__(self) -> Iterator[Attempt]:
        return self

    def __next__(self) -> Attempt:
        delay = self._next_delay()
        if delay is None:
            raise StopIteration
        time.sleep(delay)
        return self._begin()

    def __aiter__(self) -> AsyncIterator[Attempt]:
        return self

    async def __anext__(self) -> Attempt:
        delay = self._next_delay()
        if delay is None:
            raise StopAsyncIteration
        await asyncio.sleep(delay)
        return self._begin()

    def _next_delay(self) -> float | None:
        """The sleep before the next attempt, or ``None``: the loop is over."""
        current = self.current
        if current is None:
            self._started = time.monotonic()
            for s in self._stats:
                s.transactions += 1
            return 0.0
        if current.state is AttemptState.RETRYING:
            assert current.delay is not None
            return current.delay
        if current.state is AttemptState.RUNNING:
            raise RuntimeError(
                f"{self.name}: attempt {current.number} was not run inside `with attempt:`; "
                "wrap the work in it so that its errors are seen"
            )
        return None

    def _begin(self) -> Attempt:
        self.current = Attempt(self, 1 if self.current is None else self.current.number + 1)
        for s in self._stats:
            s.attempts += 1
        return self.current

    def _retryable(self, error: BaseException) -> tuple[RetryReason, str] | None:
        """Why ``error`` may be retried and the SQLSTATE it counts under; ``None``: it may not."""
        sqlstate = conflict_sqlstate(error)
        if sqlstate is not None:
            found = (RetryReason.CONFLICT, sqlstate)
        elif _lost_before_commit(error) or (
            self.policy.idempotent and _commit_outcome_unknown(error)
        ):
            # Counted as SQLSTATE 08006, connection failure, in RetryStats and RetryEvent.
            found = (RetryReason.CONNECTION_LOST, _CONNECTION_FAILURE)
        else:
            return None
        return found if found[0] in self.retry_on else None

    def _failed(self, attempt: Attempt, error: Exception) -> None:
        """Decide what follows ``attempt``'s ``error``: a retry, the error, or RetriesExhausted."""
        retryable = self._retryable(error)
        if retryable is None:
            attempt.state = AttemptState.FAILED
            return
        reason, sqlstate = retryable
        attempt.reason = reason
        delay = self.policy.delay(attempt.number)
        elapsed = time.monotonic() - self._started
        out_of_time = self.policy.deadline is not None and elapsed + delay > self.policy.deadline
        if attempt.number >= self.policy.max_attempts or out_of_time:
            attempt.state = AttemptState.FAILED
            for s in self._stats:
                s.gave_up += 1
            when = (
                f"at the {self.policy.deadline} s deadline, after {attempt.number} attempts"
                if out_of_time
                else f"after {attempt.number} attempts"
            )
            if reason is RetryReason.CONFLICT:
                last = f"the last conflict was SQLSTATE {sqlstate}"
            else:
                last = "the connection kept being lost; the last error was"
            raise RetriesExhausted(
                f"{self.name} gave up {when} in {elapsed:.3f} s; {last}: {_first_line(error)}",
                reason=reason,
                attempts=attempt.number,
                last_error=error,
                sqlstate=sqlstate if reason is RetryReason.CONFLICT else _any_sqlstate(error),
            ) from error
        attempt.state = AttemptState.RETRYING
        attempt.delay = delay
        for s in self._stats:
            s.retries += 1
            s.retries_by_sqlstate[sqlstate] += 1
        _log.debug(
            "%s: attempt %d failed with SQLSTATE %s, retrying in %.4f s",
            self.name,
            attempt.number,
            sqlstate,
            delay,
        )
        if self.on_retry is not None:
            self.on_retry(RetryEvent(attempt.number, delay, sqlstate, error, reason))


def _any_sqlstate(error: BaseException) -> str | None:
    """The first SQLSTATE anywhere in ``error``'s chain, if any error there has one."""
    for linked in _chain(error):
        state = _sqlstate(linked)
        if state is not None:
            return state
    return None


def _first_line(error: BaseException) -> str:
    text = str(getattr(error, "orig", None) or error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _read_options(read_only: bool, snapshot: bool) -> dict[str, Any]:
    """The execution options of a unit's connection: none for a read-write transaction."""
    if snapshot and not read_only:
        raise ConfigurationError(
            "snapshot=True is an option of read_only=True units (one read-only transaction "
            "over all their reads); a read-write transaction is one snapshot already"
        )
    if not read_only:
        return {}
    if snapshot:
        # BEGIN READ ONLY ... COMMIT; the dialect's guard says more than the server's 25006.
        return {"postgresql_readonly": True, "auroradsql_read_only": True}
    # No BEGIN and no COMMIT: the pool restores the isolation level at check-in.
    return {"isolation_level": "AUTOCOMMIT", "auroradsql_read_only": True}


def read_only_options(*, snapshot: bool = False) -> dict[str, Any]:
    """The execution options of ``read_only=True`` units, for connections and engines of your own.

    ``engine.execution_options(**read_only_options())`` is an engine whose
    connections run each statement as its own snapshot, one round trip each,
    and refuse writes; with ``snapshot=True``, transactions on it are
    ``BEGIN READ ONLY``.
    """
    return _read_options(True, snapshot)


def _read_policy(policy: RetryPolicy | None, read_only: bool) -> RetryPolicy | None:
    # A read changes nothing, so running it again after the connection was lost at any
    # point (even during a read-only COMMIT) is safe.
    if not read_only:
        return policy
    return replace(policy or RetryPolicy(), idempotent=True)


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
    read_only: bool = ...,
    snapshot: bool = ...,
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
    read_only: bool = ...,
    snapshot: bool = ...,
) -> T: ...


async def run_transaction(
    target: AsyncEngine | async_sessionmaker[Any],
    fn: Callable[[Any], Awaitable[T]],
    /,
    *,
    policy: RetryPolicy | None = None,
    on_retry: Callable[[RetryEvent], object] | None = None,
    stats: RetryStats | None = None,
    read_only: bool = False,
    snapshot: bool = False,
) -> T:
    """Run ``fn`` in a transaction on ``target``, again on each retryable conflict.

    Returns what ``fn`` returned in the attempt that committed. With
    ``read_only=True`` ``fn`` runs without a transaction, each statement its
    own snapshot, one round trip each; add ``snapshot=True`` for one
    read-only transaction over all of them (see the module documentation).
    """
    if not isinstance(target, AsyncEngine | async_sessionmaker):
        raise ConfigurationError(
            f"run_transaction() needs an AsyncEngine or an async_sessionmaker, got "
            f"{type(target).__name__}; use run_transaction_sync() for Engine / sessionmaker"
        )
    options = _read_options(read_only, snapshot)
    policy = _read_policy(policy, read_only)
    async for attempt in Attempts(policy, name=_name(fn), on_retry=on_retry, stats=stats):
        with attempt:
            if isinstance(target, AsyncEngine):
                async with target.connect() as conn:
                    if options:
                        await conn.execution_options(**options)
                    async with conn.begin():
                        return await fn(conn)
            async with target() as session, session.begin():
                if options:
                    # Applied to the session's connection before SQLAlchemy begins on it.
                    await session.connection(execution_options=options)
                return await fn(session)
    raise AssertionError("unreachable: the last attempt returned or raised")


@overload
def run_transaction_sync(
    target: Engine,
    fn: Callable[[Connection], T],
    /,
    *,
    policy: RetryPolicy | None = ...,
    on_retry: Callable[[RetryEvent], object] | None = ...,
    stats: RetryStats | None = ...,
    read_only: bool = ...,
    snapshot: bool = ...,
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
    read_only: bool = ...,
    snapshot: bool = ...,
) -> T: ...


def run_transaction_sync(
    target: Engine | sessionmaker[Any],
    fn: Callable[[Any], T],
    /,
    *,
    policy: RetryPolicy | None = None,
    on_retry: Callable[[RetryEvent], object] | None = None,
    stats: RetryStats | None = None,
    read_only: bool = False,
    snapshot: bool = False,
) -> T:
    """The synchronous twin of :func:`run_transaction`, for ``Engine`` and ``sessionmaker``."""
    if not isinstance(target, Engine | sessionmaker):
        raise ConfigurationError(
            f"run_transaction_sync() needs an Engine or a sessionmaker, got "
            f"{type(target).__name__}; use run_transaction() for asyncio"
        )
    options = _read_options(read_only, snapshot)
    policy = _read_policy(policy, read_only)
    for attempt in Attempts(policy, name=_name(fn), on_retry=on_retry, stats=stats):
        with attempt:
            if isinstance(target, Engine):
                with target.connect() as conn:
                    if options:
                        conn.execution_options(**options)
                    with conn.begin():
                        return fn(conn)
            with target() as session, session.begin():
                if options:
                    session.connection(execution_options=options)
                return fn(session)
    raise AssertionError("unreachable: the last attempt returned or raised")


def transactional(
    target: AsyncEngine | async_sessionmaker[Any],
    *,
    policy: RetryPolicy | None = None,
    on_retry: Callable[[RetryEvent], object] | None = None,
    stats: RetryStats | None = None,
    read_only: bool = False,
    snapshot: bool = False,
) -> Callable[[Callable[..., Awaitable[T]]], Callable[..., Awaitable[T]]]:
    """Decorate ``async def f(conn_or_session, *args, **kwargs)`` to run in :func:`run_transaction`.

    The decorated function is called without its first argument::

        @transactional(session_factory)
        async def rename(session: AsyncSession, pet_id: UUID, name: str) -> None: ...

        await rename(pet_id, "Rex")

    ``read_only`` and ``snapshot`` are :func:`run_transaction`'s:
    ``@transactional(session_factory, read_only=True)`` for a read.
    """
    _read_options(read_only, snapshot)  # refuse snapshot without read_only at decoration

    def decorate(fn: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
        @functools.wraps(fn)
        async def wrapper(*args: Any, **kwargs: Any) -> T:
            async def body(conn_or_session: Any) -> T:
                return await fn(conn_or_session, *args, **kwargs)

            body.__qualname__ = fn.__qualname__
            return await run_transaction(
                target,
                body,
                policy=policy,
                on_retry=on_retry,
                stats=stats,
                read_only=read_only,
                snapshot=snapshot,
            )

        return wrapper

    return decorate
