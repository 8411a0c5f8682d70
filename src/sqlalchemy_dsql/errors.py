"""Exceptions raised by sqlalchemy-dsql.

All of them derive from SQLAlchemy's own exception classes, so code that
already catches ``sqlalchemy.exc.SQLAlchemyError`` keeps working; the subclasses
say which Aurora DSQL rule was hit and what to do instead.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import exc


class DSQLError(exc.SQLAlchemyError):
    """Base class of every error this package raises itself."""


class UnsupportedFeatureError(DSQLError, exc.InvalidRequestError):
    """The operation needs a feature Aurora DSQL does not have.

    Raised before anything is sent to the server.
    """


class SavepointsNotSupported(UnsupportedFeatureError):
    """``begin_nested()`` or a savepoint-mode Session: DSQL has no SAVEPOINT."""


class DDLAfterDMLError(UnsupportedFeatureError):
    """DDL was about to run in a transaction that has already written data.

    DSQL refuses DDL and DML in one transaction. Committing the data behind the
    caller's back (as Amazon's dialect does) would break the transaction's
    all-or-nothing promise, so the statement is refused and nothing is
    committed: commit the data first, or run the DDL in its own transaction.
    """


class ReadOnlyViolation(DSQLError, exc.InvalidRequestError):
    """A read-only unit of work (``run_transaction(..., read_only=True)``) tried to write.

    Raised before the statement is sent: outside a transaction each write
    would commit on its own, so a unit that writes must run as a transaction.
    """


class ConfigurationError(DSQLError, exc.ArgumentError, ValueError):
    """The connection settings cannot work: the message says what is wrong and what to do.

    Also a ``ValueError``, the class Amazon's connector and ``create_dsql_engine``
    raise for bad settings, so that code written for them catches it.
    """


class AsyncJobFailed(DSQLError):
    """An asynchronous DDL job (an index build, a constraint validation) failed."""

    def __init__(self, message: str, *, job_id: str, object_name: str | None) -> None:
        super().__init__(message)
        self.job_id = job_id
        self.object_name = object_name


class MigrationRefused(UnsupportedFeatureError):
    """An Alembic migration asks for something Aurora DSQL cannot do.

    Raised, where it can be known, before any statement of the migration runs.
    """


class MigrationInterrupted(DSQLError):
    """An Alembic migration failed part-way, after some of its statements were committed.

    DSQL cannot roll DDL back, so ``committed`` lists, in order, what this
    migration changed before it stopped; ``alembic_version`` still names the
    revision before it. The failure is the ``__cause__``.
    """

    def __init__(self, message: str, *, revision: str, committed: list[str]) -> None:
        super().__init__(message)
        self.revision = revision
        self.committed = committed


class ConnectError(DSQLError):
    """A new connection to the cluster could not be opened; the message says why and what to do.

    The driver's own exception is the ``__cause__``.
    """


class AuthenticationFailed(ConnectError):
    """The cluster refused the IAM token (expired, wrong action, wrong host, not allowed)."""


class TLSVerificationFailed(ConnectError):
    """The server's certificate could not be verified against the trusted CAs and host name."""


class ClusterUnreachable(ConnectError):
    """No connection could be made to the cluster's address (DNS, network, port, timeout)."""


class ClusterBusy(ConnectError):
    """The cluster refused a new connection for now: it is waking up, or at its connection
    limit or connection rate. Retrying later (with backoff) can succeed; a new token does not help.
    """


class PoolTimeout(DSQLError, exc.TimeoutError):
    """No pooled connection became free within ``pool_timeout`` seconds.

    A subclass of SQLAlchemy's :class:`sqlalchemy.exc.TimeoutError`, so code
    that handles that one keeps working. The message and the attributes say
    the pool's size, how many checkouts were waiting and what to change.
    """

    def __init__(
        self, message: str, *, pool_size: int, max_overflow: int, timeout: float, waiting: int
    ) -> None:
        super().__init__(message)
        self.pool_size = pool_size
        self.max_overflow = max_overflow
        self.timeout = timeout
        self.waiting = waiting

    def __reduce__(self) -> Any:
        return (
            _rebuild_pool_timeout,
            (self.args[0], self.pool_size, self.max_overflow, self.timeout, self.waiting),
        )


def _rebuild_pool_timeout(
    message: str, pool_size: int, max_overflow: int, timeout: float, waiting: int
) -> PoolTimeout:
    return PoolTimeout(
        message, pool_size=pool_size, max_overflow=max_overflow, timeout=timeout, waiting=waiting
    )


class ConnectionLost(DSQLError, exc.OperationalError):
    """The connection died while in use: the server closed it or the network dropped it.

    The work of the open transaction is lost. ``during_commit`` is true when
    the connection was lost while COMMIT was in flight: then nobody knows
    whether the transaction was committed, and retrying it is only safe if it
    is idempotent.
    """

    def __init__(self, message: str, original: exc.DBAPIError, *, during_commit: bool) -> None:
        exc.StatementError.__init__(
            self,
            message,
            original.statement,
            original.params,
            original.orig,
            hide_parameters=original.hide_parameters,
            ismulti=original.ismulti,
        )
        self.connection_invalidated = original.connection_invalidated
        self.during_commit = during_commit

    def __reduce__(self) -> Any:
        return (
            _rebuild_connection_lost,
            (self.args[0], self.statement, self.orig, self.during_commit),
        )


def _rebuild_connection_lost(
    message: str, statement: str | None, orig: BaseException | None, during_commit: bool
) -> ConnectionLost:
    original = exc.DBAPIError(statement, None, orig or Exception(message))
    return ConnectionLost(message, original, during_commit=during_commit)


class RetryReason(enum.Enum):
    """Why a transaction was run again, or why the retries that ran out were made."""

    CONFLICT = "conflict"
    """An optimistic-concurrency conflict: SQLSTATE ``40001``, ``OC000`` or ``OC001``."""

    CONNECTION_LOST = "connection_lost"
    """The connection died: before COMMIT (nothing was committed), or during an
    idempotent transaction's COMMIT."""


class RetriesExhausted(DSQLError):
    """A transaction kept failing with retryable errors until the retry policy gave up.

    ``reason`` says what kept happening (:class:`RetryReason`), ``attempts``
    how many times it ran, ``last_error`` (also the ``__cause__``) the last
    failure. ``sqlstate`` is the last error's SQLSTATE when it had one (for a
    conflict, ``OC000``, ``OC001`` or ``40001``); a lost connection usually
    has none, and then it is ``None``.
    """

    def __init__(
        self,
        message: str,
        *,
        reason: RetryReason,
        attempts: int,
        last_error: BaseException,
        sqlstate: str | None = None,
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.attempts = attempts
        self.last_error = last_error
        self.sqlstate = sqlstate


# A half-open range of row indices: rows [start, end) of a batch run's input.
Range = tuple[int, int]


@dataclass
class FailedRange:
    """The row range of one batch that did not commit, and the error that stopped it.

    Input that failed to be read is a range of no rows where the reading stopped.
    """

    range: Range
    error: BaseException


@dataclass
class BatchReport:
    """What a run did. ``committed`` holds merged, sorted half-open row ranges."""

    operation: str
    rows: int = 0
    batches: int = 0
    retries: int = 0
    elapsed: float = 0.0
    committed: list[Range] = field(default_factory=list)
    failures: list[FailedRange] = field(default_factory=list)
    not_attempted: list[tuple[int, int | None]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures


class BatchFailed(DSQLError):
    """A batch failed and the run stopped; the attributes say exactly what is in the database.

    Raised by :mod:`sqlalchemy_dsql.batch`. ``committed``: row ranges in the
    database; ``failed``: the first failed batch's range (``error`` /
    ``__cause__`` is its error); ``failures``: every failed batch, as
    :class:`FailedRange` records; ``not_attempted``:
    ranges never sent; ``rows``: rows written; ``report``: the partial
    :class:`BatchReport` (both also importable from :mod:`sqlalchemy_dsql.batch`).
    """

    def __init__(self, message: str, *, report: BatchReport) -> None:
        super().__init__(message)
        self.report = report
        self.committed = report.committed
        self.failures = report.failures
        self.failed = report.failures[0].range
        self.error = report.failures[0].error
        self.not_attempted = report.not_attempted
        self.rows = report.rows
