"""The emulator's transaction state machine, driven statement by statement without sockets."""

from __future__ import annotations

from collections import deque

import pytest

from sqlalchemy_dsql.local import rules
from sqlalchemy_dsql.local.catalog import Catalog
from sqlalchemy_dsql.local.limits import Limits
from sqlalchemy_dsql.local.rules import Rejection
from sqlalchemy_dsql.local.transaction import (
    ABORTED,
    SCHEMA_CONFLICT,
    Transaction,
    TransactionState,
)


def statement(sql: str) -> rules.Statement:
    verdict = rules.check(sql)
    assert verdict.rejection is None, verdict.rejection
    assert len(verdict.statements) == 1
    return verdict.statements[0]


BEGIN = statement("BEGIN")
COMMIT = statement("COMMIT")
ROLLBACK = statement("ROLLBACK")
READ = statement("SELECT * FROM t")
WRITE = statement("INSERT INTO t VALUES (1)")
DDL = statement("ALTER TABLE t ADD COLUMN c text")
OTHER_DDL = statement("ALTER TABLE u ADD COLUMN c text")


@pytest.fixture
def catalog() -> Catalog:
    return Catalog()


@pytest.fixture
def failures() -> deque[Rejection]:
    return deque()


def new(catalog: Catalog, failures: deque[Rejection], limits: Limits | None = None) -> Transaction:
    return Transaction(limits or Limits(), catalog, failures)


def test_autocommit_reads_open_no_transaction(catalog: Catalog, failures: deque[Rejection]) -> None:
    tx = new(catalog, failures)
    assert tx.admit(READ, 0.0) is None
    assert tx.state is TransactionState.IDLE


def test_an_autocommit_write_runs_in_an_implicit_transaction(
    catalog: Catalog, failures: deque[Rejection]
) -> None:
    tx = new(catalog, failures)
    assert tx.admit(WRITE, 0.0) is None
    assert tx.state is TransactionState.IMPLICIT
    assert not tx.explicit
    tx.end(committed=True)
    assert tx.state is TransactionState.IDLE


def test_begin_commit(catalog: Catalog, failures: deque[Rejection]) -> None:
    tx = new(catalog, failures)
    assert tx.admit(BEGIN, 0.0) is None
    assert tx.state is TransactionState.EXPLICIT
    assert tx.admit(WRITE, 1.0) is None
    assert tx.relations == frozenset({"t"})
    assert tx.commit_refusal(2.0) is None
    assert tx.admit(COMMIT, 2.0) is None
    assert tx.state is TransactionState.IDLE


def test_one_ddl_per_transaction_and_none_beside_writes(
    catalog: Catalog, failures: deque[Rejection]
) -> None:
    tx = new(catalog, failures)
    tx.admit(BEGIN, 0.0)
    assert tx.admit(DDL, 0.0) is None
    second = tx.admit(OTHER_DDL, 0.0)
    assert second is not None
    assert second.message == "multiple ddl statements not supported in a transaction"
    assert tx.admit(WRITE, 0.0) is not None
    tx.admit(ROLLBACK, 0.0)
    tx.admit(BEGIN, 0.0)
    tx.admit(WRITE, 0.0)
    mixed = tx.admit(DDL, 0.0)
    assert mixed is not None
    assert mixed.sqlstate == "0A000"


def test_committed_ddl_makes_other_transactions_stale(
    catalog: Catalog, failures: deque[Rejection]
) -> None:
    reader = new(catalog, failures)
    reader.admit(BEGIN, 0.0)
    reader.admit(READ, 0.0)
    ddl = new(catalog, failures)
    ddl.admit(BEGIN, 0.0)
    ddl.admit(DDL, 0.0)
    ddl.admit(COMMIT, 0.0)  # the catalog of "t" changes
    assert reader.commit_refusal(1.0) is SCHEMA_CONFLICT
    assert reader.refuse_commit(1.0) is SCHEMA_CONFLICT
    assert reader.state is TransactionState.IDLE


def test_preemption_answers_the_next_statement_once(
    catalog: Catalog, failures: deque[Rejection]
) -> None:
    tx = new(catalog, failures)
    tx.admit(BEGIN, 0.0)
    tx.admit(READ, 0.0)
    assert not tx.preempt(frozenset({"u"}))  # not a relation it used
    assert tx.preempt(frozenset({"public.t"}))
    assert tx.state is TransactionState.CONFLICTED
    assert not tx.preempt(frozenset({"t"}))  # already stale
    assert tx.admit(READ, 0.0) is SCHEMA_CONFLICT
    assert tx.state is TransactionState.EXPLICIT  # the backend refuses the rest itself
    assert tx.admit(ROLLBACK, 0.0) is None
    assert tx.state is TransactionState.IDLE


def test_a_failed_transaction_refuses_until_it_ends(
    catalog: Catalog, failures: deque[Rejection]
) -> None:
    tx = new(catalog, failures)
    tx.admit(BEGIN, 0.0)
    tx.fail()
    assert tx.state is TransactionState.FAILED
    assert tx.commit_refusal(0.0) is ABORTED
    assert tx.refuse_commit(0.0) is ABORTED
    assert tx.state is TransactionState.IDLE
    tx.admit(BEGIN, 0.0)
    tx.fail()
    assert tx.admit(READ, 0.0) is ABORTED


def test_fail_outside_an_explicit_transaction_changes_nothing(
    catalog: Catalog, failures: deque[Rejection]
) -> None:
    tx = new(catalog, failures)
    tx.admit(WRITE, 0.0)
    tx.fail()
    assert tx.state is TransactionState.IMPLICIT


def test_the_age_limit(catalog: Catalog, failures: deque[Rejection]) -> None:
    tx = new(catalog, failures, Limits(max_transaction_age=300.0))
    tx.admit(BEGIN, 0.0)
    assert tx.admit(READ, 299.0) is None
    late = tx.admit(READ, 301.0)
    assert late is not None
    assert (late.sqlstate, late.message) == ("54000", "transaction age limit of 300s exceeded")
    refusal = tx.commit_refusal(301.0)
    assert refusal is not None
    assert refusal.sqlstate == "54000"


def test_the_size_limit_is_judged_at_commit(catalog: Catalog, failures: deque[Rejection]) -> None:
    tx = new(catalog, failures, Limits(max_transaction_bytes=100))
    tx.admit(BEGIN, 0.0)
    tx.admit(WRITE, 0.0)
    tx.add_bytes(60)
    assert tx.commit_refusal(0.0) is None
    tx.add_bytes(60)
    refusal = tx.commit_refusal(0.0)
    assert refusal is not None
    assert refusal.sqlstate == "54000"
    assert "size limit" in refusal.message
    assert tx.size_refusal() is not None


def test_injected_commit_failures_are_used_once_each(
    catalog: Catalog, failures: deque[Rejection]
) -> None:
    injected = Rejection("40001", "change conflicts with another transaction (OC000)")
    failures.append(injected)
    tx = new(catalog, failures)
    assert tx.commit_refusal(0.0) is None  # no transaction: nothing to fail
    tx.admit(BEGIN, 0.0)
    assert tx.commit_refusal(0.0) is injected
    assert tx.refuse_commit(0.0) is injected
    assert not failures
    tx.admit(BEGIN, 0.0)
    assert tx.commit_refusal(0.0) is None


def test_save_and_restore_undo_a_refused_multi_statement_query(
    catalog: Catalog, failures: deque[Rejection]
) -> None:
    tx = new(catalog, failures)
    saved = tx.save()
    tx.admit(BEGIN, 0.0)
    tx.admit(WRITE, 0.0)
    tx.restore(saved)
    assert tx.state is TransactionState.IDLE
    assert repr(tx) == "<Transaction idle nothing>"
