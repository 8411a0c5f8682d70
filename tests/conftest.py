"""Shared fixtures: one emulator for the whole test session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sqlalchemy_dsql.local import LocalDSQL


@pytest.fixture(scope="session")
def dsql() -> Iterator[LocalDSQL]:
    """The emulator with DSQL's default limits, shared by the integration tests."""
    with LocalDSQL(statement_log=True, round_trip_log=True) as emulator:
        yield emulator
