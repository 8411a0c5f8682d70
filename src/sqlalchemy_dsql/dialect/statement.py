"""What kind of statement a SQL text is, as the client side of this package sees it.

DSQL runs each DDL statement in a transaction of its own and never DDL after
a write in one transaction, so the dialect commits right after DDL and
remembers when a transaction wrote; Alembic migrations commit data changes
before DDL. Both ask :func:`statement_kind` about SQL sent as text (compiled
constructs say what they are), so they agree on what DDL is:

- ``DDL``: ``CREATE``, ``ALTER``, ``DROP``, ``COMMENT ON``, ``GRANT``,
  ``REVOKE`` and DSQL's ``AWS IAM GRANT`` / ``AWS IAM REVOKE``.
- ``DML``: ``INSERT``, ``UPDATE``, ``DELETE``, ``MERGE``, ``TRUNCATE`` (which
  DSQL refuses, but which would write), and a ``WITH`` query whose main
  statement or one of whose CTEs is one of the first four.
- ``OTHER``: everything else: ``SELECT``, ``VALUES``, ``SHOW``, ``CALL``,
  ``SET``, transaction control.

The kind is read from keywords, not from a parse: comments are skipped, and
string literals, quoted identifiers and dollar-quoted bodies cannot make a
keyword, so ``-- note`` before ``CREATE TABLE`` is DDL and ``SELECT 'delete'``
is not DML. The emulator (``sqlalchemy_dsql.local``) parses statements with
PostgreSQL's own parser instead; it is a separate program and keeps its own.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

__all__ = ["AsyncDDL", "StatementKind", "async_ddl", "statement_kind", "statements"]


class StatementKind(enum.Enum):
    """What a statement does to the transaction it runs in."""

    DDL = "ddl"
    """Changes the schema or permissions: DSQL runs it in a transaction of its own."""

    DML = "dml"
    """Writes rows: DSQL refuses DDL later in the same transaction."""

    OTHER = "other"
    """Reads, session settings, transaction control and anything else."""


@dataclass(frozen=True, slots=True)
class AsyncDDL:
    """A statement DSQL runs as an asynchronous job and answers with the job's id."""

    index: str | None
    """The index ``CREATE INDEX ASYNC`` builds, unquoted; ``None`` for ``ALTER TABLE ASYNC``."""


# What cannot hold a keyword: string literals, quoted identifiers, dollar-quoted bodies
# ($$ ... $$ or $tag$ ... $tag$; a tag does not start with a digit, unlike $1) and comments.
_OPAQUE = re.compile(
    r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|\$((?:[A-Za-z_]\w*)?)\$.*?\$\1\$"
    r"|(?P<comment>--[^\n]*|/\*.*?\*/)",
    re.DOTALL,
)
_DDL = re.compile(r"^\s*(?:CREATE|ALTER|DROP|COMMENT\s+ON|GRANT|REVOKE|AWS\s+IAM)\b", re.IGNORECASE)
# In a WITH query a writing statement follows "(" (a CTE's body) or ")" (the main
# statement after the last CTE); FOR UPDATE in a CTE does not.
_DML = re.compile(
    r"^\s*(?:INSERT|UPDATE|DELETE|MERGE|TRUNCATE)\b"
    r"|^\s*WITH\b.*[()]\s*(?:INSERT|UPDATE|DELETE|MERGE)\b",
    re.IGNORECASE | re.DOTALL,
)
_ASYNC_DDL = re.compile(
    r"(?:\s+|--[^\n]*|/\*.*?\*/)*"  # whitespace and comments before the statement
    r"(?:CREATE\s+(?:UNIQUE\s+)?INDEX\s+ASYNC(?:\s+IF\s+NOT\s+EXISTS)?"
    r"\s+(?P<index>\"[^\"]+\"|[\w$]+)|ALTER\s+TABLE\s+ASYNC\b)",
    re.IGNORECASE | re.DOTALL,
)


def statements(sql: str) -> list[str]:
    """``sql``'s statements, split at semicolons, as text to look for keywords in.

    Comments become a space; string literals, quoted identifiers and
    dollar-quoted bodies become ``''``. Empty statements are left out.
    """
    bare = _OPAQUE.sub(lambda m: " " if m.group("comment") else "''", sql)
    return [part for part in bare.split(";") if part.strip()]


def statement_kind(sql: str) -> StatementKind:
    """The kind of ``sql``'s first statement (``OTHER`` for no statement at all)."""
    parts = statements(sql)
    if not parts:
        return StatementKind.OTHER
    if _DDL.match(parts[0]):
        return StatementKind.DDL
    if _DML.match(parts[0]):
        return StatementKind.DML
    return StatementKind.OTHER


def async_ddl(sql: str) -> AsyncDDL | None:
    """What ``sql`` starts as a job: ``CREATE INDEX ASYNC`` or ``ALTER TABLE ASYNC``, else None."""
    found = _ASYNC_DDL.match(sql)
    if found is None:
        return None
    index = found.group("index")
    return AsyncDDL(index.strip('"') if index else None)
