"""Start dsql-local, then hand the run to SQLAlchemy's test plugin with its URL."""

from __future__ import annotations

import os
from typing import Any

import pytest

pytest.register_assert_rewrite("sqlalchemy.testing.assertions")

from sqlalchemy.testing.plugin import pytestplugin  # noqa: E402
from sqlalchemy.testing.plugin.pytestplugin import *  # noqa: E402, F403

from sqlalchemy_dsql.local import LocalDSQL  # noqa: E402

_emulator: LocalDSQL | None = None
# The suite uses these schemas when the ``schemas`` requirement is open.
_SCHEMAS = ("test_schema", "test_schema_2")


def pytest_configure(config: Any) -> None:
    global _emulator
    _emulator = LocalDSQL().start()
    with _connect(_emulator) as connection:
        for name in _SCHEMAS:
            connection.execute(f"CREATE SCHEMA IF NOT EXISTS {name}")
    # The emulator's URL holds no secret: the dialect signs a token per connection
    # with the AWS chain, here the emulator's test key pair (this process is the run's).
    environ = _emulator.environ()
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        os.environ[name] = environ[name]
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN"):
        os.environ.pop(name, None)
    config.option.dburi = [_emulator.url()]
    pytestplugin.pytest_configure(config)


def pytest_unconfigure(config: Any) -> None:
    if _emulator is not None:
        _emulator.stop()


def _connect(emulator: LocalDSQL) -> Any:
    import psycopg

    return psycopg.connect(emulator.conninfo(), autocommit=True)
