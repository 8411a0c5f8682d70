"""Engines from a URL alone, on all four drivers, through the emulator.

``create_async_engine("auroradsql+asyncpg://admin@<endpoint>/postgres")`` (and
``+psycopg_async``; ``create_engine`` with ``+psycopg`` and ``+psycopg2``) is
how frameworks make engines: no factory of ours, no keyword argument. These
tests hold that path to what the factories promise: a token per connection
(counted by the engine and by the emulator), settings from the URL over the
environment, retirement, lost connections, TLS failures, and clear refusals of
bad settings when the engine is created.
"""

from __future__ import annotations

import asyncio
import shlex
import socket
import subprocess
import sys
import textwrap
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import trustme
from sqlalchemy import Connection, Engine, create_engine, event, make_url, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from sqlalchemy_dsql import auth, pool_counters
from sqlalchemy_dsql.errors import (
    ClusterUnreachable,
    ConfigurationError,
    ConnectionLost,
    TLSVerificationFailed,
)
from sqlalchemy_dsql.local import LocalDSQL
from sqlalchemy_dsql.local.cli import _banner

pytestmark = pytest.mark.integration

ASYNC_DRIVERS = ("asyncpg", "psycopg_async")
DRIVERS = (*ASYNC_DRIVERS, "psycopg", "psycopg2")
# What the emulator's environment names; the AWS key pair is in os.environ already.
_LIBPQ_ENVIRONMENT = ("PGHOSTADDR", "PGPORT", "PGSSLMODE", "PGSSLROOTCERT", "AWS_REGION")


@pytest.fixture(params=DRIVERS)
def driver(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def make_engine(url: Any, driver: str, **kwargs: Any) -> AsyncEngine | Engine:
    """The engine a framework makes from ``url``: plain create_(async_)engine."""
    if driver in ASYNC_DRIVERS:
        return create_async_engine(url, **kwargs)
    return create_engine(url, **kwargs)


def url_for(dsql: LocalDSQL, driver: str, **query: str) -> str:
    """``dsql.url(driver)`` with ``query`` parameters added or replaced."""
    url = make_url(dsql.url(driver))
    return url.update_query_dict(query).render_as_string(hide_password=False)


class Held:
    """One checked-out connection of either kind, driven from async tests.

    Sync engines run in a worker thread, one call at a time, so that the
    tests read the same for the four drivers.
    """

    def __init__(self, conn: AsyncConnection | Connection) -> None:
        self.conn = conn

    @classmethod
    async def open(cls, engine: AsyncEngine | Engine) -> Held:
        if isinstance(engine, AsyncEngine):
            return cls(await engine.connect())
        return cls(await asyncio.to_thread(engine.connect))

    async def scalar(self, sql: str) -> Any:
        if isinstance(self.conn, AsyncConnection):
            return (await self.conn.execute(text(sql))).scalar_one()
        conn = self.conn
        return await asyncio.to_thread(lambda: conn.execute(text(sql)).scalar_one())

    async def commit(self) -> None:
        if isinstance(self.conn, AsyncConnection):
            await self.conn.commit()
        else:
            await asyncio.to_thread(self.conn.commit)

    async def close(self) -> None:
        if isinstance(self.conn, AsyncConnection):
            await self.conn.close()
        else:
            await asyncio.to_thread(self.conn.close)

    def session_id(self) -> int:
        """The emulator's id for this session (what kill() takes): the backend pid it sent."""
        if isinstance(self.conn, AsyncConnection):
            raw: Any = self.conn.sync_connection.connection.driver_connection  # type: ignore[union-attr]
        else:
            raw = self.conn.connection.driver_connection
        if hasattr(raw, "get_server_pid"):  # asyncpg
            return int(raw.get_server_pid())
        if hasattr(raw, "info"):  # psycopg, sync and async
            return int(raw.info.backend_pid)
        return int(raw.get_backend_pid())  # psycopg2


async def dispose(engine: AsyncEngine | Engine) -> None:
    if isinstance(engine, AsyncEngine):
        await engine.dispose()
    else:
        await asyncio.to_thread(engine.dispose)


async def select_one(engine: AsyncEngine | Engine) -> None:
    held = await Held.open(engine)
    try:
        assert await held.scalar("SELECT 1") == 1
    finally:
        await held.close()


async def open_many(engine: AsyncEngine | Engine, count: int) -> list[Held]:
    """``count`` connections opened at the same time (threads for the sync drivers)."""
    if isinstance(engine, AsyncEngine):
        return list(await asyncio.gather(*(Held.open(engine) for _ in range(count))))
    with ThreadPoolExecutor(count) as pool:
        return [Held(conn) for conn in pool.map(lambda _: engine.connect(), range(count))]


@pytest.fixture
def emulator_environment(dsql: LocalDSQL, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """dsql-local's printed environment, in os.environ for the test."""
    environ = dsql.environ()
    for name in _LIBPQ_ENVIRONMENT:
        monkeypatch.setenv(name, environ[name])
    return environ


# -- a token per connection ------------------------------------------------------------------


async def test_a_token_per_connection_counted_by_the_engine_and_the_emulator(
    dsql: LocalDSQL, driver: str
) -> None:
    count = 12
    engine = make_engine(dsql.url(driver), driver, pool_size=count, max_overflow=0)
    before = set(dsql.session_ids())
    held: list[Held] = []
    try:
        held = await open_many(engine, count)
        for conn in held:
            assert await conn.scalar("SELECT current_user") == "admin"
        # The emulator registers a session once its token was accepted.
        authenticated = set(dsql.session_ids()) - before
        ours = {conn.session_id() for conn in held}
        assert ours == authenticated
        assert len(authenticated) == count
        counters = pool_counters(engine)
        assert counters.tokens_minted == counters.connections_opened == count
    finally:
        for conn in held:
            await conn.close()
        await dispose(engine)


# -- the environment, and the URL over it -------------------------------------------------------


async def test_an_endpoint_and_the_printed_environment_connect(
    dsql: LocalDSQL, driver: str, emulator_environment: dict[str, str]
) -> None:
    engine = make_engine(f"auroradsql+{driver}://admin@{dsql.endpoint}/postgres", driver)
    try:
        await select_one(engine)
        settings = engine.dialect.connector.settings  # type: ignore[attr-defined]
        assert (settings.hostaddr, settings.port) == (dsql.host, dsql.port)
        assert settings.sslrootcert == dsql.ca_file
    finally:
        await dispose(engine)


async def test_the_endpoints_region_beats_aws_region(
    dsql: LocalDSQL,
    driver: str,
    emulator_environment: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # AWS_REGION is the application's default Region; the endpoint names this cluster's.
    monkeypatch.setenv("AWS_REGION", "eu-west-2")
    engine = make_engine(f"auroradsql+{driver}://admin@{dsql.endpoint}/postgres", driver)
    try:
        await select_one(engine)
    finally:
        await dispose(engine)


async def test_url_parameters_override_the_environment(
    dsql: LocalDSQL, driver: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An environment pointing elsewhere: another address, a closed port, a missing CA.
    monkeypatch.setenv("PGHOSTADDR", "127.0.0.2")
    monkeypatch.setenv("PGPORT", "1")
    monkeypatch.setenv("PGSSLROOTCERT", str(tmp_path / "missing.pem"))
    with pytest.raises(ConfigurationError, match="cannot load the CA file"):
        make_engine(f"auroradsql+{driver}://admin@{dsql.endpoint}/postgres", driver)
    engine = make_engine(url_for(dsql, driver), driver)  # port, hostaddr, sslrootcert given
    try:
        await select_one(engine)
    finally:
        await dispose(engine)


async def test_the_environment_is_read_when_the_url_is_silent(
    dsql: LocalDSQL,
    driver: str,
    emulator_environment: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The same URL connects or not with PGPORT alone changed: the variable is read.
    monkeypatch.setenv("PGPORT", str(_closed_port()))
    engine = make_engine(
        f"auroradsql+{driver}://admin@{dsql.endpoint}/postgres?connect_timeout=5", driver
    )
    try:
        with pytest.raises(ClusterUnreachable, match="cannot reach"):
            await select_one(engine)
    finally:
        await dispose(engine)


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# -- retirement ----------------------------------------------------------------------------------


async def test_url_age_settings_retire_connections_quietly(dsql: LocalDSQL, driver: str) -> None:
    url = url_for(dsql, driver, max_connection_age="1.0", connection_age_jitter="0.2")
    engine = make_engine(url, driver)
    try:
        settings = engine.dialect.connector.settings  # type: ignore[attr-defined]
        assert (settings.max_connection_age, settings.connection_age_jitter) == (1.0, 0.2)
        first = await Held.open(engine)
        first_id = first.session_id()
        assert await first.scalar("SELECT 1") == 1
        await first.close()  # back in the pool, young
        await asyncio.sleep(1.3)
        second = await Held.open(engine)  # the old one is retired at checkout
        second_id = second.session_id()
        assert await second.scalar("SELECT 2") == 2
        await asyncio.sleep(1.3)
        await second.close()  # retired as it comes back
        third = await Held.open(engine)
        assert await third.scalar("SELECT 3") == 3
        assert len({first_id, second_id, third.session_id()}) == 3
        await third.close()
        counters = pool_counters(engine)
        assert counters.retired_for_age_at_checkout == 1
        assert counters.retired_for_age_at_checkin == 1
        assert counters.retired_for_age == 2
        assert counters.tokens_minted == counters.connections_opened == 3
    finally:
        await dispose(engine)


# -- lost connections ----------------------------------------------------------------------------


async def test_a_connection_killed_in_use_raises_connection_lost(
    dsql: LocalDSQL, driver: str
) -> None:
    engine = make_engine(dsql.url(driver), driver)
    try:
        held = await Held.open(engine)
        try:
            assert await held.scalar("SELECT 1") == 1
            dsql.kill(held.session_id())
            await asyncio.sleep(0.1)
            with pytest.raises(ConnectionLost, match="lost the connection to") as caught:
                await held.scalar("SELECT 2")
        finally:
            await held.close()
        assert caught.value.during_commit is False
        assert dsql.endpoint in str(caught.value)
        assert pool_counters(engine).lost_in_use == 1
        await select_one(engine)  # the pool recovers by itself
    finally:
        await dispose(engine)


async def test_a_connection_killed_at_commit_says_the_outcome_is_unknown(
    dsql: LocalDSQL, driver: str
) -> None:
    engine = make_engine(dsql.url(driver), driver)
    sync_engine = engine.sync_engine if isinstance(engine, AsyncEngine) else engine
    victim: list[int] = []

    def kill_before_commit(conn: Any) -> None:
        dsql.kill(victim[0])

    try:
        held = await Held.open(engine)
        try:
            assert await held.scalar("SELECT 1") == 1
            victim.append(held.session_id())
            event.listen(sync_engine, "commit", kill_before_commit)
            with pytest.raises(ConnectionLost, match="while COMMIT was in flight") as caught:
                await held.commit()
        finally:
            event.remove(sync_engine, "commit", kill_before_commit)
            await held.close()
        assert caught.value.during_commit is True
        await select_one(engine)
    finally:
        await dispose(engine)


async def test_an_idle_killed_connection_is_replaced_at_checkout(
    dsql: LocalDSQL, driver: str
) -> None:
    engine = make_engine(dsql.url(driver), driver)
    try:
        held = await Held.open(engine)
        killed = held.session_id()
        await held.close()
        assert dsql.kill(killed) == 1
        await asyncio.sleep(0.2)  # the goodbye reaches the idle socket
        held = await Held.open(engine)
        try:
            assert await held.scalar("SELECT 1") == 1
            assert held.session_id() != killed
        finally:
            await held.close()
        counters = pool_counters(engine)
        assert counters.replaced_after_server_close == 1
        assert counters.lost_in_use == 0
    finally:
        await dispose(engine)


# -- TLS failures --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def foreign_ca(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A CA file of another authority, as another emulator's would be."""
    path = tmp_path_factory.mktemp("foreign-ca") / "ca.pem"
    trustme.CA(organization_name="not the emulator").cert_pem.write_to_path(str(path))
    return str(path)


@pytest.mark.parametrize("trust", ["foreign", "system"])
async def test_a_wrong_ca_says_what_to_trust(
    dsql: LocalDSQL, driver: str, trust: str, foreign_ca: str
) -> None:
    sslrootcert = foreign_ca if trust == "foreign" else "system"
    engine = make_engine(url_for(dsql, driver, sslrootcert=sslrootcert), driver)
    try:
        with pytest.raises(TLSVerificationFailed) as caught:
            await select_one(engine)
    finally:
        await dispose(engine)
    message = str(caught.value)
    assert f"could not verify the TLS certificate of {dsql.endpoint}" in message
    assert "pass its CA file as sslrootcert=" in message
    assert pool_counters(engine).connections_opened == 0


async def test_a_missing_ca_file_is_refused_at_create_time(
    dsql: LocalDSQL, driver: str, tmp_path: Path
) -> None:
    missing = str(tmp_path / "nowhere" / "ca.pem")
    with pytest.raises(ConfigurationError, match="cannot load the CA file") as caught:
        make_engine(url_for(dsql, driver, sslrootcert=missing), driver)
    assert missing in str(caught.value)
    assert "'system' for the system trust store" in str(caught.value)


# -- bad settings, refused by create_engine ------------------------------------------------------

PASSWORD = "hunter2-not-a-token"
ENDPOINT = "abcdefghijklmnopqrstuvwxyz.dsql.us-east-1.on.aws"

BAD_URLS: dict[str, tuple[str, str]] = {
    # id: (URL after the driver name, a phrase of the advice)
    "password-in-url": (f"admin:{PASSWORD}@{ENDPOINT}/postgres", r"signs a fresh IAM token"),
    "password-parameter": (f"admin@{ENDPOINT}/postgres?password={PASSWORD}", r"carries a password"),
    "unknown-parameter": (
        f"admin@{ENDPOINT}/postgres?sslmdoe=verify-full",
        r"unknown URL parameter 'sslmdoe'.*connect_args",
    ),
    "renamed-parameter": (
        f"admin@{ENDPOINT}/postgres?token_duration_secs=900",
        r"write token_lifetime instead",
    ),
    "malformed-endpoint": (
        "admin@mycluster.dsql.on.aws/postgres",
        r"not a valid Aurora DSQL endpoint.*<cluster-id>\.dsql\.<region>\.on\.aws",
    ),
    "malformed-region": (
        f"admin@{ENDPOINT}/postgres?region=US-EAST-1",
        r"not an AWS Region name.*'us-east-1'",
    ),
    "bad-port": (f"admin@{ENDPOINT}:70000/postgres", r"not a TCP port \(1 to 65535\)"),
    "bad-port-parameter": (f"admin@{ENDPOINT}/postgres?port=fivefour", r"not a TCP port"),
    "bad-number": (
        f"admin@{ENDPOINT}/postgres?max_connection_age=soon",
        r"not a number of seconds; write e\.g\. max_connection_age=30",
    ),
    "bad-flag": (f"admin@{ENDPOINT}/postgres?direct_tls=maybe", r"write direct_tls=true or false"),
    "given-twice": (
        f"admin@{ENDPOINT}/postgres?region=us-east-1&region=us-west-2",
        r"gives region 2 times.*give it once",
    ),
    "port-twice": (f"admin@{ENDPOINT}:5432/postgres?port=5433", r"gives the port twice"),
    "several-hosts": (
        f"admin@{ENDPOINT},other.dsql.us-east-1.on.aws/postgres",
        r"several hosts.*one cluster endpoint",
    ),
    "other-database": (f"admin@{ENDPOINT}/app", r"single database, 'postgres'"),
    "insecure-sslmode": (
        f"admin@{ENDPOINT}/postgres?sslmode=require",
        r"not verified; use sslmode='verify-full'.*allow_insecure_tls",
    ),
}


def _texts(error: BaseException) -> str:
    return "\n".join([str(error), repr(error), "".join(traceback.format_exception(error))])


@pytest.mark.parametrize("bad", list(BAD_URLS), ids=list(BAD_URLS))
def test_a_bad_setting_is_refused_when_the_engine_is_made(driver: str, bad: str) -> None:
    rest, advice = BAD_URLS[bad]
    with pytest.raises(ConfigurationError, match=advice) as caught:
        make_engine(f"auroradsql+{driver}://{rest}", driver)
    assert PASSWORD not in _texts(caught.value)


def test_a_bad_setting_given_as_a_keyword_is_refused_too(driver: str) -> None:
    with pytest.raises(ConfigurationError, match=r"connection_age_jitter must be at least 0"):
        make_engine(
            f"auroradsql+{driver}://admin@{ENDPOINT}/postgres",
            driver,
            max_connection_age=60,
            connection_age_jitter=60,
        )
    with pytest.raises(ConfigurationError, match=r"region is given twice"):
        make_engine(
            f"auroradsql+{driver}://admin@{ENDPOINT}/postgres?region=us-east-1",
            driver,
            region="us-west-2",
        )


async def test_a_password_in_connect_args_is_refused(dsql: LocalDSQL, driver: str) -> None:
    engine = make_engine(dsql.url(driver), driver, connect_args={"password": PASSWORD})
    try:
        with pytest.raises(ConfigurationError, match="connect_args carries a password") as caught:
            await select_one(engine)
    finally:
        await dispose(engine)
    assert PASSWORD not in _texts(caught.value)
    assert pool_counters(engine).tokens_minted == 0


# -- a name that does not resolve: the way out for dsql-local -------------------------------------


async def test_an_endpoint_without_hostaddr_names_the_way_out(
    dsql: LocalDSQL, driver: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PGHOSTADDR", raising=False)
    url = url_for(dsql, driver, connect_timeout="5")
    url = make_url(url).difference_update_query(["hostaddr"]).render_as_string(False)
    engine = make_engine(url, driver)
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        with pytest.raises(ClusterUnreachable) as caught:
            await select_one(engine)
    finally:
        await dispose(engine)
    assert loop.time() - started < 6
    message = str(caught.value)
    assert f"The name {dsql.endpoint} does not resolve" in message
    assert "set hostaddr=<address> in the URL" in message
    assert "PGHOSTADDR" in message


# -- dsql-local's banner ---------------------------------------------------------------------------

_SCRIPT = textwrap.dedent(
    """
    import asyncio, sys
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    async def main():
        engine = create_async_engine(sys.argv[1])
        async with engine.connect() as conn:
            print((await conn.execute(text("SELECT current_user"))).scalar_one())
        await engine.dispose()

    asyncio.run(main())
    """
)


def _exports(banner: str) -> dict[str, str]:
    exported: dict[str, str] = {}
    for line in banner.splitlines():
        if line.startswith("export "):
            name, _, value = line.removeprefix("export ").partition("=")
            exported[name] = value
    return exported


def test_the_banner_exports_exactly_what_the_library_reads(dsql: LocalDSQL) -> None:
    banner = _banner(dsql, "IAM tokens", "dsql-local token")
    assert _exports(banner) == dsql.environ()
    assert f'create_async_engine("auroradsql+asyncpg://admin@{dsql.endpoint}/postgres")' in banner


def test_the_banners_exports_alone_reach_the_emulator(dsql: LocalDSQL) -> None:
    banner = _banner(dsql, "IAM tokens", "dsql-local token")
    exports = "\n".join(line for line in banner.splitlines() if line.startswith("export "))
    url = f"auroradsql+asyncpg://admin@{dsql.endpoint}/postgres"
    command = f"{exports}\nexec {shlex.quote(sys.executable)} -c {shlex.quote(_SCRIPT)} {url}"
    # Nothing of this process's environment: no AWS variables, no HOME, no venv.
    result = subprocess.run(
        ["/bin/sh", "-c", command],
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "admin"


# -- credentials that appear later -----------------------------------------------------------------


async def test_credentials_set_after_a_failure_are_found(
    dsql: LocalDSQL, driver: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Generators of this test only, shared by its two halves as one process's would be.
    monkeypatch.setattr(auth, "_generators", {})
    monkeypatch.setattr(auth, "_async_generators", {})
    # No credentials anywhere: the default chain finds none, and says so.
    with monkeypatch.context() as bare:
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
            bare.delenv(name, raising=False)
        bare.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
        bare.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
        bare.setenv("AWS_EC2_METADATA_DISABLED", "true")
        engine = make_engine(dsql.url(driver), driver)
        try:
            with pytest.raises(ConfigurationError, match="no AWS credentials found"):
                await select_one(engine)
        finally:
            await dispose(engine)
    # The key pair is back in the environment: the next engine on this loop finds it.
    engine = make_engine(dsql.url(driver), driver)
    try:
        await select_one(engine)
    finally:
        await dispose(engine)
