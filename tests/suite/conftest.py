"""Start dsql-local, then hand the run to SQLAlchemy's test plugin with its URL."""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import quote

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
    # asyncpg reads the CA for ssl=verify-full from here.
    os.environ["PGSSLROOTCERT"] = _emulator.ca_file
    token = quote(_emulator.token(expires_in=6 * 3600), safe="")
    config.option.dburi = [
        f"auroradsql+asyncpg://admin:{token}@{_emulator.host}:{_emulator.port}/postgres"
        "?ssl=verify-full"
    ]
    pytestplugin.pytest_configure(config)


def pytest_unconfigure(config: Any) -> None:
    if _emulator is not None:
        _emulator.stop()


def _connect(emulator: LocalDSQL) -> Any:
    import psycopg

    return psycopg.connect(emulator.conninfo(), autocommit=True)
