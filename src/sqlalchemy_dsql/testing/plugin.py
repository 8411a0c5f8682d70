"""The fixtures and the hook of the ``sqlalchemy_dsql.testing`` pytest plugin.

Enable the plugin with ``pytest_plugins = ["sqlalchemy_dsql.testing"]``
rather than importing from here; see that module for how it works.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import importlib.metadata
import inspect
import types
from collections.abc import AsyncIterator, Callable, Coroutine, Generator, Iterator
from typing import Any, TypeVar

import pytest
from packaging.version import Version
from sqlalchemy import MetaData
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import NullPool

from ..local import LocalDSQL
from ..retry import read_only_options
from ..schema import create_all

T = TypeVar("T")


# What the emulator's URL leaves to the AWS credential chain.
_TEST_KEY_PAIR = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")


@contextlib.contextmanager
def _test_key_pair_in_environment(dsql: LocalDSQL) -> Iterator[None]:
    """The emulator's test key pair in ``os.environ`` for the length of the block."""
    environ = dsql.environ()
    with pytest.MonkeyPatch.context() as env:
        # A profile or session token of the developer's would take the chain elsewhere.
        for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN"):
            env.delenv(name, raising=False)
        for name in _TEST_KEY_PAIR:
            env.setenv(name, environ[name])
        yield


@pytest.fixture(scope="session")
def dsql_local() -> Iterator[LocalDSQL]:
    """The local DSQL emulator, started once for the test session.

    Its test key pair is in the environment while it runs, so that
    ``create_async_engine(dsql_local.url())`` connects.
    """
    with LocalDSQL() as dsql, _test_key_pair_in_environment(dsql):
        yield dsql


@pytest.fixture(scope="session")
def dsql_url(dsql_local: LocalDSQL) -> Iterator[str]:
    """``dsql_local.url()``: ``create_async_engine(dsql_url, ...)`` makes more engines.

    The URL holds no secret; the test key pair is in the environment while it
    is in use, even when ``dsql_local`` is overridden by an emulator of your own.
    """
    with _test_key_pair_in_environment(dsql_local):
        yield dsql_local.url()


@pytest.fixture(scope="session")
def dsql_metadata() -> MetaData:
    """The tables the tests need: override it to return your models' ``MetaData``."""
    return MetaData()


@pytest.fixture(scope="session")
def dsql_schema(dsql_local: LocalDSQL, dsql_url: str, dsql_metadata: MetaData) -> MetaData:
    """``dsql_metadata``, its tables created once per test session, empty."""
    _run_on_own_loop(_create_tables(dsql_url, dsql_metadata))
    # An emulator on a kept backend (data_dir, backend_url) may hold an earlier run's rows.
    dsql_local.truncate()
    return dsql_metadata


@pytest.fixture
async def dsql_engine(dsql_url: str, dsql_schema: MetaData) -> AsyncIterator[AsyncEngine]:
    """An ``AsyncEngine`` on the emulator for one test, disposed of on the test's event loop."""
    _require_asyncio()
    engine = create_async_engine(dsql_url)
    try:
        yield engine
    finally:
        await engine.dispose()


@pytest.fixture
def dsql_sessionmaker(dsql_engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """An ``async_sessionmaker`` on ``dsql_engine`` (``expire_on_commit=False``)."""
    return async_sessionmaker(dsql_engine, expire_on_commit=False)


@pytest.fixture
async def dsql_session(
    dsql_sessionmaker: async_sessionmaker[AsyncSession],
) -> AsyncIterator[AsyncSession]:
    """An ``AsyncSession`` for one test; commit as the code under test would."""
    async with dsql_sessionmaker() as session:
        yield session


@pytest.fixture
async def dsql_read_session(dsql_engine: AsyncEngine) -> AsyncIterator[AsyncSession]:
    """An ``AsyncSession`` for reads, as ``run_transaction(..., read_only=True)`` runs them.

    No ``BEGIN`` and no ``COMMIT``: each statement is its own snapshot and
    costs one round trip; a write raises
    :class:`~sqlalchemy_dsql.errors.ReadOnlyViolation` before it is sent.
    """
    reader = dsql_engine.execution_options(**read_only_options())
    async with AsyncSession(reader, expire_on_commit=False) as session:
        yield session


@pytest.fixture(autouse=True)
def dsql_isolation(request: pytest.FixtureRequest) -> Iterator[None]:
    """After each test that used ``dsql_local`` (even indirectly), empty every table.

    Override it with a fixture that does nothing to keep rows between tests.
    """
    # Autouse fixtures are set up first, so this teardown runs after every other
    # function-scoped fixture has closed its sessions and connections.
    if "dsql_local" not in request.fixturenames:
        yield
        return
    dsql: LocalDSQL = request.getfixturevalue("dsql_local")
    yield
    dsql.truncate()


def pytest_configure(config: pytest.Config) -> None:
    """Refuse a pytest-asyncio too old for :func:`pytest_fixture_setup` to work with."""
    if config.pluginmanager.has_plugin("asyncio"):
        _check_pytest_asyncio(importlib.metadata.version("pytest-asyncio"))


def _check_pytest_asyncio(version: str) -> None:
    # Before 1.1, pytest-asyncio chose the async fixtures it runs when collecting tests,
    # before this plugin can hand it the right twin.
    if Version(version) < Version("1.1"):
        raise pytest.UsageError(
            f"sqlalchemy_dsql.testing needs pytest-asyncio 1.1 or later, and {version} is "
            "installed: upgrade it (pip install -U 'pytest-asyncio>=1.1'), or uninstall it and "
            "use anyio's pytest plugin"
        )


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_fixture_setup(
    fixturedef: pytest.FixtureDef[Any], request: pytest.FixtureRequest
) -> Generator[None, object, object]:
    """Hand this plugin's async fixtures to whichever plugin runs the test.

    The anyio plugin runs the async fixtures of a test that uses
    ``anyio_backend``; pytest-asyncio, in strict mode, only those marked with
    ``@pytest_asyncio.fixture``. A fixture marked so is run by pytest-asyncio
    even for an anyio test, on a loop that is not the test's. So the fixtures
    here are left unmarked and, for a pytest-asyncio test, swapped for a marked
    twin whose loop scope is the test's own (the event loop the test runs on is
    the one the engine's connections must belong to).
    """
    func = fixturedef.func
    if not (
        getattr(func, "__module__", None) == __name__
        and inspect.isasyncgenfunction(func)
        and request.config.pluginmanager.has_plugin("asyncio")
    ):
        return (yield)
    import pytest_asyncio

    if not pytest_asyncio.is_async_test(request.node):
        return (yield)
    # Swapping the function of a FixtureDef is how pytest-asyncio and anyio themselves
    # run async fixtures. pytest-asyncio looks at it again when it calls the test, so the
    # twin stays until the fixture is torn down, before another test can set it up.
    fixturedef.func = _pytest_asyncio_twin(func, _loop_scope(request.node))  # type: ignore[misc]
    fixturedef.addfinalizer(functools.partial(setattr, fixturedef, "func", func))
    return (yield)


@functools.cache
def _pytest_asyncio_twin(func: Callable[..., Any], loop_scope: str) -> Callable[..., Any]:
    import pytest_asyncio

    twin = types.FunctionType(
        func.__code__, func.__globals__, func.__name__, func.__defaults__, func.__closure__
    )
    twin.__kwdefaults__ = func.__kwdefaults__
    twin.__qualname__ = func.__qualname__
    # pytest_asyncio.fixture marks the function itself; the definition it returns is not needed.
    pytest_asyncio.fixture(twin, loop_scope=loop_scope)  # type: ignore[call-overload]
    return twin


def _loop_scope(item: pytest.Item) -> str:
    marker = item.get_closest_marker("asyncio")
    scope = marker.kwargs.get("loop_scope") if marker is not None else None
    if scope is None:
        try:
            scope = item.config.getini("asyncio_default_test_loop_scope")
        except ValueError:  # pytest-asyncio before 0.26 has no such option
            scope = None
    return str(scope or "function")


def _require_asyncio() -> None:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        raise RuntimeError(
            "sqlalchemy_dsql.testing's fixtures need an asyncio event loop (asyncpg runs on "
            "asyncio only); with anyio, make the anyio_backend fixture return 'asyncio'"
        ) from None


async def _create_tables(url: str, metadata: MetaData) -> None:
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        await create_all(engine, metadata)
    finally:
        await engine.dispose()


def _run_on_own_loop(coroutine: Coroutine[Any, Any, T]) -> T:
    # asyncio.run here would replace, then unset, this thread's current event loop,
    # which pytest-asyncio may be holding for the tests; a thread of its own avoids that.
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="dsql-schema") as pool:
        return pool.submit(asyncio.run, coroutine).result()
