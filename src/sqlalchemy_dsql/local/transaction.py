"""DSQL's transaction rules for one session, as a state machine with no sockets.

A :class:`Transaction` sees each statement on its way to the backend (after
:mod:`.rules` has classified it) and answers whether DSQL would run it in the
transaction the session is in, or the error DSQL would give instead. It owns
everything the relay in :mod:`.session` needs to know about that transaction:

* its :class:`TransactionState`: none, an implicit one (an autocommit statement
  or an extended-protocol batch up to its Sync), an explicit one (``BEGIN``),
  one failed by a limit the proxy enforces (statements are refused with
  ``25P02`` until it ends), or one that another session's DDL has made stale
  (its next statement or ``COMMIT`` fails with ``40001 (OC001)``);
* what it holds (nothing yet, data changes, or its one DDL statement), since
  DSQL allows one DDL statement per transaction and no DDL beside data changes;
* the catalog version it started on, the relations it used and the bytes of
  data it sent, for schema conflicts, the age limit and the size limit.

Time is passed in (``now``, monotonic seconds) so that tests can drive it.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass, replace

from . import rules
from .catalog import Catalog
from .limits import Limits
from .rules import Kind, Rejection

__all__ = [
    "ABORTED",
    "CONFLICT",
    "SCHEMA_CONFLICT",
    "Contents",
    "Transaction",
    "TransactionState",
]

CONFLICT = Rejection("40001", "change conflicts with another transaction (OC000)")
SCHEMA_CONFLICT = Rejection("40001", "schema has been updated by another transaction (OC001)")
ABORTED = Rejection(
    "25P02", "current transaction is aborted, commands ignored until end of transaction block"
)
# DSQL's own words, without a hint: DSQL gives none (the dialect adds advice of its own).
DDL_AND_DML = Rejection("0A000", "ddl and dml are not supported in the same transaction")
SECOND_DDL = Rejection("0A000", "multiple ddl statements not supported in a transaction")
# Statements that read the catalog version they plan with.
_CATALOG_CHECKED = frozenset({Kind.READ, Kind.WRITE, Kind.WAIT_FOR_JOB})


class TransactionState(enum.Enum):
    """Where a session stands with respect to transactions (request side)."""

    #: No transaction: the next statement runs on its own.
    IDLE = "idle"
    #: One autocommit statement, or an extended-protocol batch up to its Sync.
    IMPLICIT = "implicit"
    #: Between ``BEGIN`` and ``COMMIT`` / ``ROLLBACK``.
    EXPLICIT = "explicit"
    #: Explicit, and failed by a limit the proxy enforces: ``25P02`` until it ends.
    FAILED = "failed"
    #: Explicit, and made stale by another session's DDL: ``OC001`` comes next.
    CONFLICTED = "conflicted"


class Contents(enum.Enum):
    """What a transaction has done so far, as DSQL's one-DDL rule sees it."""

    NOTHING = "nothing"
    WRITES = "writes"
    DDL = "ddl"


_EXPLICIT_STATES = frozenset(
    {TransactionState.EXPLICIT, TransactionState.FAILED, TransactionState.CONFLICTED}
)


@dataclass(slots=True)
class _Facts:
    """What is known about the current transaction; replaced whole when it ends."""

    state: TransactionState = TransactionState.IDLE
    started: float = 0.0
    catalog_version: int = 0
    contents: Contents = Contents.NOTHING
    ddl_relations: frozenset[str] = frozenset()
    relations: frozenset[str] = frozenset()
    bytes_written: int = 0


class Transaction:
    """The transaction rules of one session.

    :meth:`admit` is called for every statement in the order the backend will
    run them; ``begin`` / ``end`` follow from the statements themselves, except
    where the relay knows better (an extended batch ends at its Sync).
    """

    __slots__ = ("_catalog", "_commit_failures", "_facts", "_limits")

    def __init__(self, limits: Limits, catalog: Catalog, commit_failures: deque[Rejection]) -> None:
        self._limits = limits
        self._catalog = catalog
        # Shared by every session of a server: the next COMMITs fail with these (a test hook).
        self._commit_failures = commit_failures
        self._facts = _Facts()

    def __repr__(self) -> str:
        facts = self._facts
        return f"<Transaction {facts.state.value} {facts.contents.value}>"

    # -- state -------------------------------------------------------------

    @property
    def state(self) -> TransactionState:
        return self._facts.state

    @property
    def active(self) -> bool:
        return self._facts.state is not TransactionState.IDLE

    @property
    def explicit(self) -> bool:
        return self._facts.state in _EXPLICIT_STATES

    @property
    def relations(self) -> frozenset[str]:
        return self._facts.relations

    def save(self) -> object:
        """A copy to :meth:`restore` if a multi-statement query is refused part-way."""
        return replace(self._facts)

    def restore(self, saved: object) -> None:
        assert isinstance(saved, _Facts)
        self._facts = saved

    def begin(self, now: float, *, explicit: bool) -> None:
        self._facts = _Facts(
            state=TransactionState.EXPLICIT if explicit else TransactionState.IMPLICIT,
            started=now,
            catalog_version=self._catalog.version,
        )

    def end(self, *, committed: bool) -> None:
        facts = self._facts
        if committed and facts.contents is Contents.DDL:
            self._catalog.record(facts.ddl_relations)
        self._facts = _Facts()

    def fail(self) -> None:
        """A limit the proxy enforces failed a statement of this transaction."""
        if self.explicit:
            self._facts.state = TransactionState.FAILED

    def add_bytes(self, size: int) -> None:
        """Data sent for a write of this transaction (statement text and bound values)."""
        self._facts.bytes_written += size

    def preempt(self, changed: frozenset[str]) -> bool:
        """Another session's DDL changes ``changed``: whether this transaction is now stale.

        Only an explicit transaction that used one of those relations is; the
        caller must then release its backend locks, since DSQL's DDL never waits.
        """
        facts = self._facts
        preemptible = facts.state in (TransactionState.EXPLICIT, TransactionState.FAILED)
        if not preemptible or not _overlap(facts.relations, changed):
            return False
        facts.state = TransactionState.CONFLICTED
        return True

    def take_conflict(self) -> Rejection:
        """The schema conflict to answer with; the refused statement aborts the backend."""
        self._facts.state = TransactionState.EXPLICIT
        return self._conflict()

    # -- statements ----------------------------------------------------------

    def admit(self, statement: rules.Statement, now: float) -> Rejection | None:
        """Check ``statement`` against the transaction it would run in, and record it."""
        facts = self._facts
        kind = statement.kind
        if kind is Kind.ROLLBACK:
            self.end(committed=False)
            return None
        if facts.state is TransactionState.CONFLICTED:
            return self.take_conflict()
        if facts.state is TransactionState.FAILED:
            facts.state = TransactionState.EXPLICIT  # the backend refuses the rest itself
            return ABORTED
        age_refusal = self._age_refusal(now)
        if age_refusal is not None:
            return age_refusal
        if kind is Kind.BEGIN:
            if not self.explicit:
                self.begin(now, explicit=True)
            return None
        if kind is Kind.COMMIT:
            self.end(committed=True)
            return None
        if kind in (Kind.EMPTY, Kind.SESSION) or (kind is Kind.READ and not self.active):
            return None  # an autocommit read cannot break a transaction rule
        if not self.active:
            self.begin(now, explicit=False)
            facts = self._facts
        if kind in (Kind.DDL, Kind.ASYNC_DDL):
            if facts.contents is Contents.WRITES:
                return DDL_AND_DML
            if facts.contents is Contents.DDL:
                return SECOND_DDL
            facts.contents = Contents.DDL
            facts.ddl_relations = statement.relations
        elif kind is Kind.WRITE and facts.contents is Contents.DDL:
            return DDL_AND_DML
        if kind in _CATALOG_CHECKED and self._catalog.changed_since(
            facts.catalog_version, statement.relations
        ):
            return self._conflict()
        if kind is Kind.WRITE:
            facts.contents = Contents.WRITES
        if statement.relations and not statement.relations <= facts.relations:
            facts.relations = facts.relations | statement.relations
        return None

    def commit_refusal(self, now: float) -> Rejection | None:
        """What a COMMIT now would fail with, or ``None``; nothing changes by asking."""
        facts = self._facts
        state = facts.state
        if state is TransactionState.FAILED:
            return ABORTED
        if state is TransactionState.CONFLICTED:
            return SCHEMA_CONFLICT
        if state is TransactionState.IDLE:
            return None
        if self._commit_failures:
            return self._commit_failures[0]
        refusal = self._age_refusal(now) or self.size_refusal()
        if refusal is not None:
            return refusal
        if state is TransactionState.EXPLICIT and self._catalog.changed_since(
            facts.catalog_version, facts.relations
        ):
            return SCHEMA_CONFLICT
        return None

    def refuse_commit(self, now: float) -> Rejection:
        """End a transaction whose COMMIT :meth:`commit_refusal` refuses; the error it gets.

        A transaction that had already failed answers as PostgreSQL does (the
        ``ROLLBACK`` tag, no error): the caller relays :data:`ABORTED` as that.
        """
        refusal = self.commit_refusal(now)
        assert refusal is not None
        if self._commit_failures and refusal is self._commit_failures[0]:
            self._commit_failures.popleft()
        elif refusal is SCHEMA_CONFLICT:
            refusal = self._conflict()
        self.end(committed=False)
        return refusal

    def size_refusal(self) -> Rejection | None:
        """The error for data written so far being over the transaction size limit."""
        if self._facts.bytes_written > self._limits.max_transaction_bytes:
            return self._size_refusal()
        return None

    def _age_refusal(self, now: float) -> Rejection | None:
        limit = self._limits.max_transaction_age
        age = now - self._facts.started
        if self.active and age > limit:
            return Rejection(
                "54000",
                f"transaction age limit of {limit:g}s exceeded",
                detail=f"Current transaction age {age:.0f}s exceeds {limit:g}s",
            )
        return None

    def _size_refusal(self) -> Rejection:
        limit = _megabytes(self._limits.max_transaction_bytes)
        size = _megabytes(self._facts.bytes_written)
        return Rejection(
            "54000",
            f"transaction size limit {limit} exceeded",
            detail=f"Current transaction size {size} > {limit}",
        )

    def _conflict(self) -> Rejection:
        # The failed statement refreshes the session's catalog, as DSQL's retry would.
        self._facts.catalog_version = self._catalog.version
        return SCHEMA_CONFLICT


def _megabytes(size: int) -> str:
    """A size as DSQL writes it in its limit errors (``10mb``)."""
    return f"{size / (1024 * 1024):.3g}mb"


def _overlap(used: frozenset[str], changed: frozenset[str]) -> bool:
    unqualified = {name.rsplit(".", 1)[-1] for name in changed}
    return any(name.rsplit(".", 1)[-1] in unqualified for name in used)
