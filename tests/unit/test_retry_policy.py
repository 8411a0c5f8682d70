"""Which errors are conflicts, and the backoff policy (no database)."""

from __future__ import annotations

import pytest
from sqlalchemy.exc import DBAPIError

from sqlalchemy_dsql import RetryPolicy
from sqlalchemy_dsql.errors import ConfigurationError
from sqlalchemy_dsql.retry import conflict_sqlstate


class _DriverError(Exception):
    """A stand-in for asyncpg / psycopg errors: a ``sqlstate`` attribute."""

    def __init__(self, message: str, sqlstate: str | None = None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


class _Psycopg2Error(Exception):
    def __init__(self, message: str, pgcode: str) -> None:
        super().__init__(message)
        self.pgcode = pgcode


def _wrapped(orig: BaseException) -> DBAPIError:
    return DBAPIError("COMMIT", None, orig)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (
            _DriverError("change conflicts with another transaction (OC000)", "40001"),
            "OC000",
        ),
        (
            _DriverError("schema has been updated by another transaction (OC001)", "40001"),
            "OC001",
        ),
        (_DriverError("could not serialize access", "40001"), "40001"),
        (_DriverError("conflict", "OC000"), "OC000"),
        (_DriverError("conflict", "OC001"), "OC001"),
        (_Psycopg2Error("conflict", "40001"), "40001"),
        (_wrapped(_DriverError("x (OC000)", "40001")), "OC000"),
        (_DriverError("transaction row limit exceeded", "54000"), None),
        (_DriverError("unsupported", "0A000"), None),
        (_DriverError("access denied", "28P01"), None),
        (ValueError("(not a database error)"), None),
    ],
)
def test_conflict_detection(error: BaseException, expected: str | None) -> None:
    assert conflict_sqlstate(error) == expected


def _raise_wrapped(conflict: DBAPIError, *, explicitly: bool) -> None:
    try:
        raise conflict
    except DBAPIError as inner:
        if explicitly:
            raise RuntimeError("booking failed") from inner
        raise KeyError("handler failed too")  # noqa: B904 - an implicit __context__


@pytest.mark.parametrize("explicitly", [True, False])
def test_conflicts_are_found_through_causes_and_contexts(explicitly: bool) -> None:
    conflict = _wrapped(_DriverError("(OC001)", "40001"))
    with pytest.raises((RuntimeError, KeyError)) as caught:
        _raise_wrapped(conflict, explicitly=explicitly)
    assert conflict_sqlstate(caught.value) == "OC001"


def test_a_cycle_in_the_chain_ends() -> None:
    first, second = ValueError("a"), ValueError("b")
    first.__cause__, second.__cause__ = second, first
    assert conflict_sqlstate(first) is None


def test_delays_grow_to_the_cap_with_full_jitter() -> None:
    policy = RetryPolicy(base_delay=0.01, max_delay=0.05)
    for retry, ceiling in [(1, 0.01), (2, 0.02), (3, 0.04), (4, 0.05), (10, 0.05)]:
        samples = [policy.delay(retry) for _ in range(500)]
        assert all(0 <= s <= ceiling for s in samples)
        assert max(samples) > ceiling * 0.8  # the whole range is used
        assert min(samples) < ceiling * 0.2


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"max_attempts": 0}, "max_attempts"),
        ({"base_delay": -1}, "base_delay"),
        ({"base_delay": 1, "max_delay": 0.5}, "base_delay <= max_delay"),
        ({"deadline": 0}, "deadline"),
    ],
)
def test_bad_policies_are_refused(kwargs: dict[str, float], reason: str) -> None:
    with pytest.raises(ConfigurationError, match=reason):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


def test_connection_lost_survives_pickling() -> None:
    import pickle

    from sqlalchemy_dsql.errors import ConnectionLost

    original = _wrapped(_DriverError("connection was closed in the middle of operation"))
    lost = ConnectionLost("lost the connection", original, during_commit=True)
    copy = pickle.loads(pickle.dumps(lost))
    assert isinstance(copy, ConnectionLost)
    assert copy.during_commit is True
    assert "lost the connection" in str(copy)
