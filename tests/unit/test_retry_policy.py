"""Which errors are conflicts, and the backoff policy (no database)."""

from __future__ import annotations

import pytest
from sqlalchemy.exc import DBAPIError

from sqlalchemy_dsql import RetryPolicy
from sqlalchemy_dsql.errors import ConfigurationError, RetriesExhausted
from sqlalchemy_dsql.retry import (
    Attempt,
    Attempts,
    AttemptState,
    RetryEvent,
    RetryReason,
    RetryStats,
    conflict_sqlstate,
)


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


# -- the Attempts loop, used directly (conflicts stand in for the database's) ------------------

_INSTANT = RetryPolicy(base_delay=0, max_delay=0)


def _conflict() -> DBAPIError:
    return _wrapped(_DriverError("change conflicts with another transaction (OC000)", "40001"))


def test_attempts_run_again_after_conflicts_and_stop_after_success() -> None:
    stats = RetryStats()
    events: list[RetryEvent] = []
    seen: list[Attempt] = []
    for attempt in Attempts(_INSTANT, name="work", on_retry=events.append, stats=stats):
        seen.append(attempt)
        with attempt:
            if attempt.number < 3:
                raise _conflict()
    assert [(a.number, a.state, a.reason) for a in seen] == [
        (1, AttemptState.RETRYING, RetryReason.CONFLICT),
        (2, AttemptState.RETRYING, RetryReason.CONFLICT),
        (3, AttemptState.SUCCEEDED, None),
    ]
    assert [(e.attempt, e.sqlstate, e.reason) for e in events] == [
        (1, "OC000", RetryReason.CONFLICT),
        (2, "OC000", RetryReason.CONFLICT),
    ]
    assert stats.as_dict() == {
        "transactions": 1,
        "attempts": 3,
        "retries": 2,
        "gave_up": 0,
        "retries_by_sqlstate": {"OC000": 2},
    }


async def test_async_attempts_return_from_the_attempt_that_succeeded() -> None:
    async def work() -> int:
        async for attempt in Attempts(_INSTANT):
            with attempt:
                if attempt.number == 1:
                    raise _conflict()
                return attempt.number
        raise AssertionError("the loop ended without a successful attempt")

    assert await work() == 2


def _fail_every_attempt(loop: Attempts, error: BaseException, seen: list[Attempt]) -> None:
    for attempt in loop:
        seen.append(attempt)
        with attempt:
            raise error


def test_an_error_that_is_not_retried_propagates_unchanged() -> None:
    stats = RetryStats()
    refused = _wrapped(_DriverError("transaction row limit exceeded", "54000"))
    seen: list[Attempt] = []
    with pytest.raises(DBAPIError) as caught:
        _fail_every_attempt(Attempts(_INSTANT, stats=stats), refused, seen)
    assert caught.value is refused
    assert [(a.state, a.error) for a in seen] == [(AttemptState.FAILED, refused)]
    assert (stats.attempts, stats.retries, stats.gave_up) == (1, 0, 0)


def test_giving_up_raises_retries_exhausted_with_the_reason() -> None:
    stats = RetryStats()
    policy = RetryPolicy(max_attempts=2, base_delay=0, max_delay=0)
    seen: list[Attempt] = []
    with pytest.raises(RetriesExhausted) as caught:
        _fail_every_attempt(Attempts(policy, stats=stats), _conflict(), seen)
    error = caught.value
    assert (error.reason, error.sqlstate, error.attempts) == (RetryReason.CONFLICT, "OC000", 2)
    assert isinstance(error.__cause__, DBAPIError)
    assert "transaction gave up after 2 attempts" in str(error)
    assert [a.state for a in seen] == [AttemptState.RETRYING, AttemptState.FAILED]
    assert (stats.attempts, stats.retries, stats.gave_up) == (2, 1, 1)


def test_an_attempt_used_without_its_with_block_is_an_error() -> None:
    loop = Attempts(_INSTANT, name="careless")
    next(loop)
    with pytest.raises(
        RuntimeError, match="careless: attempt 1 was not run inside `with attempt:`"
    ):
        next(loop)
