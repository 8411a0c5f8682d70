"""What both web integrations share: the engine's life, a request's transaction, its reads."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, Concatenate, ParamSpec, TypeVar

from sqlalchemy import URL
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from ..engine import create_async_dsql_engine
from ..errors import ConfigurationError, RetriesExhausted, RetryReason
from ..retry import (
    RetryEvent,
    RetryPolicy,
    RetryStats,
    conflict_sqlstate,
    read_only_options,
    run_transaction,
)

P = ParamSpec("P")
T = TypeVar("T")
_NOT_STARTED = "the Database has no engine: the application has not started, or has stopped"


class Database:
    """An engine made when the application starts and disposed when it stops.

    Give a URL (``auroradsql+asyncpg://admin@<endpoint>/postgres``, a settings
    DSN) and keyword arguments of ``create_async_engine``; or the cluster
    endpoint and keyword arguments of
    :func:`~sqlalchemy_dsql.create_async_dsql_engine`; or ``engine_factory``,
    a callable that returns an ``AsyncEngine``. Either way nothing connects
    until the application starts. ``policy``, ``on_retry`` and ``stats`` are
    what :meth:`run` passes to :func:`~sqlalchemy_dsql.run_transaction`.
    Sessions are made with ``expire_on_commit=False``: responses are built
    from the objects after their transaction has committed.

    Reads (:meth:`reading`, :meth:`read`) run without a transaction: no
    ``BEGIN`` and no ``COMMIT``, one round trip per statement, **each
    statement its own snapshot**; they refuse writes
    (:class:`~sqlalchemy_dsql.errors.ReadOnlyViolation`). ``reading(snapshot=True)``
    puts them in one ``BEGIN READ ONLY`` transaction, at two round trips more.
    """

    def __init__(
        self,
        url_or_host: str | URL | None = None,
        /,
        *,
        engine_factory: Callable[[], AsyncEngine] | None = None,
        policy: RetryPolicy | None = None,
        on_retry: Callable[[RetryEvent], object] | None = None,
        stats: RetryStats | None = None,
        **engine_kwargs: Any,
    ) -> None:
        if engine_factory is None:
            if url_or_host is None:
                raise ConfigurationError(
                    "Database() needs a URL (auroradsql+asyncpg://admin@<endpoint>/postgres), "
                    "the cluster endpoint, or engine_factory"
                )
            if isinstance(url_or_host, URL) or "://" in url_or_host:
                engine_factory = functools.partial(
                    create_async_engine, url_or_host, **engine_kwargs
                )
            else:
                engine_factory = functools.partial(
                    create_async_dsql_engine, url_or_host, **engine_kwargs
                )
        elif url_or_host is not None or engine_kwargs:
            raise ConfigurationError(
                "Database(engine_factory=...) takes no URL, endpoint or engine arguments: "
                "engine_factory makes the engine itself"
            )
        self.policy = policy or RetryPolicy()
        self.on_retry = on_retry
        self.stats = stats
        self._engine_factory = engine_factory
        self._engine: AsyncEngine | None = None
        self._sessions: async_sessionmaker[AsyncSession] | None = None
        self._read_sessions: dict[bool, async_sessionmaker[AsyncSession]] = {}

    @property
    def engine(self) -> AsyncEngine:
        """The running application's engine."""
        if self._engine is None:
            raise RuntimeError(_NOT_STARTED)
        return self._engine

    @property
    def sessions(self) -> async_sessionmaker[AsyncSession]:
        """The session factory on :attr:`engine`."""
        if self._sessions is None:
            raise RuntimeError(_NOT_STARTED)
        return self._sessions

    @asynccontextmanager
    async def connected(self) -> AsyncIterator[AsyncEngine]:
        """Make the engine, and dispose of it (closing its connections) on the way out."""
        if self._engine is not None:
            raise RuntimeError("the Database is already started")
        engine = self._engine_factory()
        self._engine = engine
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        # Engines with the read options, so that every connection such a session takes
        # (also after a commit inside it) is set up for reading; keyed by snapshot.
        self._read_sessions = {
            snapshot: async_sessionmaker(
                engine.execution_options(**read_only_options(snapshot=snapshot)),
                expire_on_commit=False,
            )
            for snapshot in (False, True)
        }
        try:
            yield engine
        finally:
            self._engine = self._sessions = None
            self._read_sessions = {}
            await engine.dispose()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A session in a transaction: committed when the block ends, rolled back if it raises.

        Nothing is retried. A conflict, at COMMIT or before, raises
        :class:`~sqlalchemy_dsql.errors.RetriesExhausted` with ``attempts=1``
        (answered with 409 like any other conflict that was not resolved).
        """
        async with self._unit(
            self.sessions, "Database.transaction()", "Database.run() or a transactional handler"
        ) as session:
            yield session

    @asynccontextmanager
    async def reading(self, *, snapshot: bool = False) -> AsyncIterator[AsyncSession]:
        """A session for reads: each statement its own snapshot, one round trip, not retried.

        ``snapshot=True``: one read-only transaction over the block's
        statements (``BEGIN READ ONLY`` ... ``COMMIT``, two round trips more).
        A write raises :class:`~sqlalchemy_dsql.errors.ReadOnlyViolation`
        before it is sent; a conflict (a schema change, ``OC001``) raises
        :class:`~sqlalchemy_dsql.errors.RetriesExhausted` as in
        :meth:`transaction`.
        """
        sessions = self._read_sessions.get(snapshot)
        if sessions is None:
            raise RuntimeError(_NOT_STARTED)
        async with self._unit(sessions, "Database.reading()", "Database.read()") as session:
            yield session

    @asynccontextmanager
    async def _unit(
        self, sessions: async_sessionmaker[AsyncSession], name: str, retried_by: str
    ) -> AsyncIterator[AsyncSession]:
        async with sessions() as session:
            try:
                async with session.begin():
                    yield session
            except RetriesExhausted:
                raise
            except Exception as error:
                sqlstate = conflict_sqlstate(error)
                if sqlstate is None:
                    raise
                raise RetriesExhausted(
                    f"the transaction conflicted with another one (SQLSTATE {sqlstate}) and was "
                    f"rolled back after 1 attempt; {name} does not retry: run the "
                    f"unit of work with {retried_by} to retry it",
                    reason=RetryReason.CONFLICT,
                    attempts=1,
                    last_error=error,
                    sqlstate=sqlstate,
                ) from error

    async def run(
        self,
        fn: Callable[Concatenate[AsyncSession, P], Awaitable[T]],
        /,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        """``await fn(session, *args, **kwargs)`` in :func:`~sqlalchemy_dsql.run_transaction`.

        Each attempt gets a new session in a new transaction; ``fn`` must read
        what it depends on through it and do nothing outside the database
        that must not happen twice.
        """

        async def attempt(session: AsyncSession) -> T:
            return await fn(session, *args, **kwargs)

        # run_transaction names the function in its logs and in RetriesExhausted.
        attempt.__qualname__ = getattr(fn, "__qualname__", repr(fn))
        return await run_transaction(
            self.sessions, attempt, policy=self.policy, on_retry=self.on_retry, stats=self.stats
        )

    async def read(
        self,
        fn: Callable[Concatenate[AsyncSession, P], Awaitable[T]],
        /,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        """``await fn(session, *args, **kwargs)`` in ``run_transaction(..., read_only=True)``.

        Each statement is its own snapshot and costs one round trip; the read
        runs again on a lost connection (a read is idempotent) and on a conflict.
        """

        async def attempt(session: AsyncSession) -> T:
            return await fn(session, *args, **kwargs)

        attempt.__qualname__ = getattr(fn, "__qualname__", repr(fn))
        return await run_transaction(
            self.sessions,
            attempt,
            policy=self.policy,
            on_retry=self.on_retry,
            stats=self.stats,
            read_only=True,
        )
