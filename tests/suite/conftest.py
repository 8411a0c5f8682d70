"""Start dsql-local, then hand the run to SQLAlchemy's test plugin with its URL.

The URL is the one a user writes (``LocalDSQL.url()``: the endpoint, the
address to dial and the CA, no secret), and the emulator's test key pair is in
the environment, as after ``dsql-local``'s printout: every connection the
suite opens signs its own token through the dialect. The run ends with the
emulator's count of logins (each with a token the dialect signed for that
connection, as the URL has none) against the connections the pools opened.
"""

from __future__ import annotations

import os
from typing import Any

import pytest

pytest.register_assert_rewrite("sqlalchemy.testing.assertions")

from sqlalchemy import event  # noqa: E402
from sqlalchemy.pool import Pool  # noqa: E402
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


_opened = 0


@event.listens_for(Pool, "connect")
def _count(dbapi_connection: Any, record: Any) -> None:
    global _opened
    _opened += 1


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _emulator is not None:
        seen = _emulator.admissions()
        # One login is this file's own, to create the schemas.
        terminalreporter.write_line(
            f"dsql-local: {_opened} connections opened by the suite's pools, "
            f"{seen['tokens_accepted'] - 1} of its logins, each with a token the dialect "
            f"signed for it ({seen['tokens_refused']} refused)"
        )


def pytest_unconfigure(config: Any) -> None:
    if _emulator is not None:
        _emulator.stop()


def _connect(emulator: LocalDSQL) -> Any:
    import psycopg

    return psycopg.connect(emulator.conninfo(), autocommit=True)
