"""The fixtures and the hook of the ``sqlalchemy_dsql.testing`` pytest plugin.

Enable the plugin with ``pytest_plugins = ["sqlalchemy_dsql.testing"]``
rather than importing from here; see that module for how it works.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import importlib.metadata
import inspect
import types
import weakref
from collections.abc import AsyncIterator, Callable, Coroutine, Generator, Iterator
from typing import Any, TypeVar

import pytest
from packaging.version import Version
from sqlalchemy import MetaData
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.pool import NullPool

from ..engine import create_async_dsql_engine
from ..local import LocalDSQL
from ..schema import create_all

T = TypeVar("T")


def local_async_engine(dsql: LocalDSQL, **engine_kwargs: Any) -> AsyncEngine:
    """An ``AsyncEngine`` on the emulator ``dsql``, as ``create_async_dsql_engine`` makes it.

    It signs a fresh token with the emulator's test credentials for every
    connection and verifies TLS against the emulator's CA. Keyword arguments go
    to :func:`~sqlalchemy_dsql.create_async_dsql_engine` (``pool_size``,
    ``echo``, ``schema``, ...). Its connections belong to the event loop that
    opens them: dispose of the engine on that loop.
    """
    return create_async_dsql_engine(
        dsql.endpoint,
        session=_aws_session(dsql),
        hostaddr=dsql.host,
        port=dsql.port,
        sslrootcert=dsql.ca_file,
        **engine_kwargs,
    )


# One aioboto3 session per emulator: a new session reloads botocore's service models
# (about 0.1 s), and token generators are shared per session and event loop.
_aws_sessions: weakref.WeakKeyDictionary[LocalDSQL, Any] = weakref.WeakKeyDictionary()


def _aws_session(dsql: LocalDSQL) -> Any:
    session = _aws_sessions.get(dsql)
    if session is None:
        import aioboto3

        session = _aws_sessions[dsql] = aioboto3.Session(
            aws_access_key_id=dsql.credentials.access_key,
            aws_secret_access_key=dsql.credentials.secret_key,
            region_name=dsql.region,
        )
    return session


@pytest.fixture(scope="session")
def dsql_local() -> Iterator[LocalDSQL]:
    """The local DSQL emulator, started once for the test session."""
    with LocalDSQL() as dsql:
        yield dsql


@pytest.fixture(scope="session")
def dsql_metadata() -> MetaData:
    """The tables the tests need: override it to return your models' ``MetaData``."""
    return MetaData()


@pytest.fixture(scope="session")
def dsql_schema(dsql_local: LocalDSQL, dsql_metadata: MetaData) -> MetaData:
    """``dsql_metadata``, its tables created once per test session, empty."""
    _run_on_own_loop(_create_tables(dsql_local, dsql_metadata))
    # An emulator on a kept backend (data_dir, backend_url) may hold an earlier run's rows.
    dsql_local.truncate()
    return dsql_metadata


@pytest.fixture
async def dsql_engine(dsql_local: LocalDSQL, dsql_schema: MetaData) -> AsyncIterator[AsyncEngine]:
    """An ``AsyncEngine`` on the emulator for one test, disposed of on the test's event loop."""
    _require_asyncio()
    engine = local_async_engine(dsql_local)
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


async def _create_tables(dsql: LocalDSQL, metadata: MetaData) -> None:
    engine = local_async_engine(dsql, poolclass=NullPool)
    try:
        await create_all(engine, metadata)
    finally:
        await engine.dispose()


def _run_on_own_loop(coroutine: Coroutine[Any, Any, T]) -> T:
    # asyncio.run here would replace, then unset, this thread's current event loop,
    # which pytest-asyncio may be holding for the tests; a thread of its own avoids that.
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="dsql-schema") as pool:
        return pool.submit(asyncio.run, coroutine).result()
