"""The HTTP answer to a database error both web integrations map, and its log line.

Bodies are fixed texts and numbers: never the error's message, which may
quote SQL and parameters. The message goes to the log, first line only.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import exc

from ..errors import ConnectError, ConnectionLost, RetriesExhausted, RetryReason

MAPPED = (RetriesExhausted, ConnectionLost, ConnectError)
"""The exception classes :func:`problem_for` answers."""

_log = logging.getLogger("sqlalchemy_dsql.integrations")


def problem_for(
    error: RetriesExhausted | ConnectionLost | ConnectError,
) -> tuple[int, dict[str, Any]]:
    """The status and JSON body that answer ``error``."""
    if isinstance(error, RetriesExhausted):
        attempts = "1 attempt" if error.attempts == 1 else f"{error.attempts} attempts"
        if error.reason is RetryReason.CONNECTION_LOST:
            return 503, {
                "error": "database_unavailable",
                "detail": f"the connection to the database kept failing; gave up after {attempts}",
            }
        return 409, {
            "error": "conflict",
            "detail": (
                "the transaction conflicted with concurrent transactions and was rolled back; "
                f"gave up after {attempts} (SQLSTATE {error.sqlstate}). The request can be "
                "sent again."
            ),
            "attempts": error.attempts,
            "sqlstate": error.sqlstate,
        }
    if isinstance(error, ConnectionLost) and error.during_commit:
        return 503, {
            "error": "commit_outcome_unknown",
            "detail": (
                "the connection to the database was lost while the transaction was committing: "
                "it may or may not have been committed. Check before sending the request again."
            ),
        }
    if isinstance(error, ConnectionLost):
        detail = "the connection to the database was lost; the transaction was rolled back"
    else:
        detail = "the database cannot be reached"
    return 503, {"error": "database_unavailable", "detail": detail}


# The integrity violations a request can cause by what it sends, and their answers.
_VIOLATIONS = {
    "23505": ("duplicate", "a row with the same unique key already exists"),
    "23503": (
        "foreign_key_violation",
        "the row refers to a row that does not exist, or is still referred to",
    ),
}


def _chain(error: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and current not in seen:
        seen.append(current)
        current = getattr(current, "orig", None) or current.__cause__
    return seen


def integrity_problem(error: exc.IntegrityError) -> tuple[int, dict[str, Any]] | None:
    """409 and a body naming the constraint for a unique or foreign-key violation, else None.

    The constraint's name comes from the server's error fields (asyncpg's
    ``constraint_name``, libpq's ``diag.constraint_name``), never from the message,
    which quotes the row's values.
    """
    sqlstate = constraint = None
    for link in _chain(error):
        diag = getattr(link, "diag", None)
        sqlstate = sqlstate or getattr(link, "sqlstate", None) or getattr(link, "pgcode", None)
        constraint = (
            constraint
            or getattr(link, "constraint_name", None)
            or getattr(diag, "constraint_name", None)
        )
    if sqlstate not in _VIOLATIONS:
        return None
    name, detail = _VIOLATIONS[sqlstate]
    return 409, {"error": name, "detail": detail, "constraint": constraint, "sqlstate": sqlstate}


def log_problem(
    method: str, path: str, status: int, body: dict[str, Any], error: Exception
) -> None:
    """One line for each mapped error: the request, the answer and what the database said."""
    text = str(error).strip()
    summary = text.splitlines()[0] if text else type(error).__name__
    level = logging.WARNING if status == 409 else logging.ERROR
    _log.log(level, "%s %s -> %d %s: %s", method, path, status, body["error"], summary)
