"""The ``sqlalchemy_dsql.testing`` pytest plugin, run in pytest subprocesses.

Each run is a small project (models, a conftest that enables the plugin,
tests) under one async plugin setup: pytest-asyncio in auto mode with a loop
per test; pytest-asyncio in strict mode with the anyio plugin beside it and
loop scopes that disagree; and anyio alone, without pytest-asyncio. In each,
one test writes rows and commits, and the next must find the tables empty.
Every run starts its own emulator.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sqlalchemy_dsql.local import TEST_SECRET_ACCESS_KEY
from sqlalchemy_dsql.testing.plugin import _check_pytest_asyncio

pytest_plugins = ["pytester"]
pytestmark = pytest.mark.integration

MODELS = """
from sqlalchemy import BigInteger, Identity, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class Note(Base):
    __tablename__ = "notes"

    id: Mapped[int] = mapped_column(BigInteger, Identity(cache=1), primary_key=True)
    body: Mapped[str] = mapped_column(String(100))
"""

CONFTEST = """
import pytest

from models import Base

pytest_plugins = ["sqlalchemy_dsql.testing"]


@pytest.fixture(scope="session")
def dsql_metadata():
    return Base.metadata
"""

# Test modules run in file order, then in definition order: the writers run first.
WRITE_THEN_READ = """
import asyncio

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import create_async_engine

from models import Note
from sqlalchemy_dsql import run_transaction

loops = set()


async def count(session):
    return await session.scalar(select(func.count()).select_from(Note))


{mark}
async def test_a_writes(dsql_session):
    loops.add(asyncio.get_running_loop())
    dsql_session.add_all([Note(body="one"), Note(body="two")])
    await dsql_session.commit()
    assert await count(dsql_session) == 2


{mark}
async def test_b_sees_nothing_and_ids_restart(dsql_session):
    loops.add(asyncio.get_running_loop())
    assert await count(dsql_session) == 0
    note = Note(body="three")
    dsql_session.add(note)
    await dsql_session.commit()
    assert note.id == 1


{mark}
async def test_c_run_transaction_and_other_engines(dsql_local, dsql_engine, dsql_sessionmaker):
    loops.add(asyncio.get_running_loop())

    async def write(session):
        session.add(Note(body="four"))

    await run_transaction(dsql_sessionmaker, write)
    async with dsql_engine.connect() as connection:
        assert await connection.scalar(text("SELECT count(*) FROM notes")) == 1
    # The plain URL connects: the plugin put the emulator's test key pair in the environment.
    other = create_async_engine(dsql_local.url(), pool_size=1)
    try:
        async with other.connect() as connection:
            assert await connection.scalar(text("SELECT count(*) FROM notes")) == 1
            await connection.execute(text("INSERT INTO notes (body) VALUES ('five')"))
            await connection.commit()
    finally:
        await other.dispose()


{mark}
async def test_d_sees_nothing_written_by_any_engine(dsql_session):
    loops.add(asyncio.get_running_loop())
    assert await count(dsql_session) == 0
"""


@pytest.fixture(autouse=True)
def no_aws_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No credentials for the runs to inherit: the plugin must provide the test key pair."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def write_project(pytester: pytest.Pytester, mark: str, **ini_options: str) -> None:
    pytester.makeini(
        "\n".join(["[pytest]", *(f"{name} = {value}" for name, value in ini_options.items())])
    )
    pytester.makepyfile(models=MODELS)
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_notes=WRITE_THEN_READ.format(mark=mark))


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", *args, timeout=120)


def test_pytest_asyncio_auto_mode_with_a_loop_per_test(pytester: pytest.Pytester) -> None:
    write_project(
        pytester,
        mark="",
        asyncio_mode="auto",
        asyncio_default_fixture_loop_scope="function",
        asyncio_default_test_loop_scope="function",
    )
    pytester.makepyfile(
        test_zz_checks="""
        import pytest

        from test_notes import loops


        async def test_every_test_had_its_own_loop(dsql_session):
            assert len(loops) == 4


        async def test_the_read_session_reads_without_a_transaction(dsql_local, dsql_read_session):
            from sqlalchemy import func, select

            from models import Note
            from sqlalchemy_dsql.errors import ReadOnlyViolation

            count = select(func.count()).select_from(Note)
            assert await dsql_read_session.scalar(count) == 0  # asyncpg prepares it here
            before = dsql_local.totals()["round_trips"]
            assert await dsql_read_session.scalar(count) == 0
            assert dsql_local.totals()["round_trips"] == before + 1  # no BEGIN, no COMMIT
            dsql_read_session.add(Note(body="refused"))
            with pytest.raises(ReadOnlyViolation):
                await dsql_read_session.flush()


        async def test_a_failure_shows_no_secret(dsql_local, dsql_engine, dsql_session):
            pytest.fail("on purpose")
        """
    )
    result = run(pytester, "--showlocals", "-W", "error::pytest.PytestUnraisableExceptionWarning")
    result.assert_outcomes(passed=6, failed=1)
    output = result.stdout.str() + result.stderr.str()
    assert "on purpose" in output
    for secret in (TEST_SECRET_ACCESS_KEY, "X-Amz-Signature", "X-Amz-Credential"):
        assert secret not in output


def test_pytest_asyncio_strict_mode_beside_anyio(pytester: pytest.Pytester) -> None:
    write_project(
        pytester,
        mark="@pytest.mark.asyncio",
        asyncio_mode="strict",
        # Fixtures default to the session's loop, tests to their own: the plugin's
        # fixtures must follow the test.
        asyncio_default_fixture_loop_scope="session",
        asyncio_default_test_loop_scope="function",
    )
    pytester.makepyfile(
        test_zz_mixed="""
        import pytest
        from sqlalchemy import func, select, text

        from models import Note


        @pytest.fixture
        def anyio_backend():
            return "asyncio"


        @pytest.mark.anyio
        async def test_anyio_sees_nothing_then_writes(dsql_session):
            assert await dsql_session.scalar(select(func.count()).select_from(Note)) == 0
            dsql_session.add(Note(body="anyio"))
            await dsql_session.commit()


        @pytest.mark.asyncio(loop_scope="module")
        async def test_module_loop_sees_nothing_then_writes(dsql_engine):
            async with dsql_engine.begin() as connection:
                assert await connection.scalar(text("SELECT count(*) FROM notes")) == 0
                await connection.execute(text("INSERT INTO notes (body) VALUES ('module')"))


        @pytest.mark.anyio
        async def test_anyio_sees_nothing(dsql_session):
            assert await dsql_session.scalar(select(func.count()).select_from(Note)) == 0
        """
    )
    result = run(pytester, "-W", "error::pytest.PytestDeprecationWarning")
    result.assert_outcomes(passed=7)


def test_anyio_without_pytest_asyncio(pytester: pytest.Pytester) -> None:
    write_project(pytester, mark="@pytest.mark.anyio")
    pytester.makeconftest(
        CONFTEST
        + """

@pytest.fixture
def anyio_backend():
    return "asyncio"
"""
    )
    result = run(pytester, "-p", "no:asyncio")
    result.assert_outcomes(passed=4)


@pytest.mark.parametrize("version", ["0.24.0", "1.0.0"])
def test_a_pytest_asyncio_before_1_1_is_refused_with_what_to_do(version: str) -> None:
    with pytest.raises(pytest.UsageError, match=rf"needs pytest-asyncio 1.1 .* {version} .* -U"):
        _check_pytest_asyncio(version)
    _check_pytest_asyncio("1.1.0")
