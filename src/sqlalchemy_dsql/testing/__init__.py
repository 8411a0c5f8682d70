"""A pytest plugin: your tests on the local DSQL emulator, with empty tables in every test.

Enable it in your top-level ``conftest.py`` and tell it your tables::

    import pytest
    from myapp.models import Base

    pytest_plugins = ["sqlalchemy_dsql.testing"]

    @pytest.fixture(scope="session")
    def dsql_metadata():
        return Base.metadata

Fixtures (all named ``dsql_*``):

- ``dsql_local`` (session): a :class:`~sqlalchemy_dsql.local.LocalDSQL`,
  started once, synchronously, so it works under any async plugin.
- ``dsql_metadata`` (session): the ``MetaData`` whose tables the tests need;
  empty unless you override it.
- ``dsql_schema`` (session): ``dsql_metadata`` with its tables created once
  by :func:`sqlalchemy_dsql.schema.create_all`.
- ``dsql_url`` (session): the emulator's URL (``dsql_local.url()``, no
  secret in it): ``create_async_engine(dsql_url, ...)`` makes more engines.
  The emulator's test key pair is in the environment while it runs, and the
  ``auroradsql`` dialect signs a token per connection with it.
- ``dsql_engine`` (function, async): ``create_async_engine(dsql_url)``,
  disposed of after the test.
- ``dsql_sessionmaker`` (function): an ``async_sessionmaker`` on it,
  ``expire_on_commit=False``.
- ``dsql_session`` (function, async): an ``AsyncSession`` from it, closed
  after the test.
- ``dsql_read_session`` (function, async): an ``AsyncSession`` on
  ``dsql_engine`` for reads, as ``run_transaction(..., read_only=True)`` runs
  them: no ``BEGIN``/``COMMIT``, one round trip per statement, each statement
  its own snapshot, writes refused.
- ``dsql_isolation`` (function, autouse): empties the tables after each test
  that used the emulator.

Isolation: tests commit for real, and after every test that used the
emulator (through these fixtures or your own fixtures built on
``dsql_local``), ``dsql_isolation`` empties every table on the emulator's
backend with :meth:`LocalDSQL.truncate <sqlalchemy_dsql.local.LocalDSQL.truncate>`.
The usual recipe, one outer transaction per test rolled back at the end with
the session inside a SAVEPOINT, cannot work on DSQL, which has no
savepoints; and real commits let ``run_transaction``, several sessions or
several engines behave in a test as they do in production.

Event loops: the engine is made for each test and disposed of on the test's
own loop, so a new loop per test is fine. The async fixtures run under
pytest-asyncio, in strict or auto mode, on the loop of the test's loop scope,
and under anyio's plugin with ``anyio_backend`` set to ``"asyncio"``. Both
plugins may be active together as long as pytest-asyncio is in strict mode.

``docs/testing.md`` has a full example and the details.
"""

from __future__ import annotations

from .plugin import (
    dsql_engine,
    dsql_isolation,
    dsql_local,
    dsql_metadata,
    dsql_read_session,
    dsql_schema,
    dsql_session,
    dsql_sessionmaker,
    dsql_url,
    pytest_configure,
    pytest_fixture_setup,
)

__all__ = [
    "dsql_engine",
    "dsql_isolation",
    "dsql_local",
    "dsql_metadata",
    "dsql_read_session",
    "dsql_schema",
    "dsql_session",
    "dsql_sessionmaker",
    "dsql_url",
    "pytest_configure",
    "pytest_fixture_setup",
]
