"""Shared fixtures: one emulator for the whole test session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sqlalchemy_dsql.local import LocalDSQL

_AWS_ENVIRONMENT = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")


@pytest.fixture(scope="session")
def dsql() -> Iterator[LocalDSQL]:
    """The emulator with DSQL's default limits, shared by the integration tests.

    Its test key pair is in the environment while it runs (as after
    ``dsql-local``'s printout), so that ``dsql.url()`` (and the URL of any other
    emulator of these tests, which all share the key pair) connects with
    plain ``create_async_engine`` / ``create_engine``.
    """
    with (
        LocalDSQL(statement_log=True, round_trip_log=True) as emulator,
        pytest.MonkeyPatch.context() as env,
    ):
        for name in _AWS_ENVIRONMENT:
            env.setenv(name, emulator.environ()[name])
        yield emulator
