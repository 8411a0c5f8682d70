"""Shared fixtures: one emulator for the whole test session, and its test key pair."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sqlalchemy_dsql.local import TEST_ACCESS_KEY_ID, TEST_SECRET_ACCESS_KEY, LocalDSQL


@pytest.fixture(scope="session")
def aws_test_keys() -> Iterator[None]:
    """Every emulator's test key pair in the environment, as after ``dsql-local``'s printout.

    With it, an emulator's ``url()`` connects with plain ``create_async_engine``
    / ``create_engine``: the ``auroradsql`` dialect signs with the usual AWS
    chain. Fixtures of emulators other than ``dsql`` ask for it too.
    """
    with pytest.MonkeyPatch.context() as env:
        # A profile or session token of the developer's would take the chain elsewhere.
        for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN"):
            env.delenv(name, raising=False)
        env.setenv("AWS_ACCESS_KEY_ID", TEST_ACCESS_KEY_ID)
        env.setenv("AWS_SECRET_ACCESS_KEY", TEST_SECRET_ACCESS_KEY)
        yield


@pytest.fixture(scope="session")
def dsql(aws_test_keys: None) -> Iterator[LocalDSQL]:
    """The emulator with DSQL's default limits, shared by the integration tests."""
    with LocalDSQL(statement_log=True, round_trip_log=True) as emulator:
        yield emulator
