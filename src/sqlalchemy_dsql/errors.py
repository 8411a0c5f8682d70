"""Exceptions raised by sqlalchemy-dsql.

All of them derive from SQLAlchemy's own exception classes, so code that
already catches ``sqlalchemy.exc.SQLAlchemyError`` keeps working; the subclasses
say which Aurora DSQL rule was hit and what to do instead.
"""

from __future__ import annotations

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


class ConfigurationError(DSQLError, exc.ArgumentError):
    """The connection settings cannot work: the message says what is wrong and what to do."""


class AsyncJobFailed(DSQLError):
    """An asynchronous DDL job (an index build, a constraint validation) failed."""

    def __init__(self, message: str, *, job_id: str, object_name: str | None) -> None:
        super().__init__(message)
        self.job_id = job_id
        self.object_name = object_name
