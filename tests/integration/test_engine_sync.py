"""create_dsql_engine (psycopg and psycopg2) through the emulator."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.credentials import CredentialProvider, Credentials
from sqlalchemy import Connection, Engine, text

from harness.engine import boto3_session, sync_engine
from sqlalchemy_dsql import create_dsql_engine, pool_counters
from sqlalchemy_dsql.errors import ConfigurationError, ConnectionLost
from sqlalchemy_dsql.local import LocalDSQL

pytestmark = pytest.mark.integration

DRIVERS = ["psycopg", "psycopg2"]


@pytest.fixture(params=DRIVERS)
def driver(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def engine(dsql: LocalDSQL, driver: str) -> Iterator[Engine]:
    made = sync_engine(dsql, driver)
    yield made
    made.dispose()


def _session_id(conn: Connection) -> int:
    """The emulator's id for this session (what kill() takes): the pid the driver was given.

    (DSQL refuses ``pg_backend_pid()``; both drivers keep the id from the startup reply.)
    """
    raw: Any = conn.connection.driver_connection
    info = getattr(raw, "info", None)  # psycopg; psycopg2 has get_backend_pid()
    return int(info.backend_pid if info is not None else raw.get_backend_pid())


def test_connects_as_admin(engine: Engine, driver: str) -> None:
    with engine.connect() as conn:
        assert conn.execute(text("SELECT current_user")).scalar_one() == "admin"
        name = conn.execute(text("SHOW application_name")).scalar_one()
    assert (engine.dialect.name, engine.dialect.driver) == ("auroradsql", driver)
    assert name == ""  # none by default, as with create_async_dsql_engine


def test_amazon_style_call_with_connector_arguments(
    dsql: LocalDSQL, driver: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Amazon's positional arguments and its connector's connect_args keys work unchanged."""

    class Provider(CredentialProvider):  # type: ignore[misc]
        METHOD = "test-fixed"

        def load(self) -> Credentials:
            return dsql.credentials

    monkeypatch.delenv("AWS_ACCESS_KEY_ID", raising=False)
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY", raising=False)
    engine = create_dsql_engine(
        dsql.endpoint,
        "admin",
        driver,
        "postgres",
        "verify-full",
        dsql.ca_file,
        "amazon-style",
        2,
        1,
        {
            "region": dsql.region,
            "token_duration_secs": 600,
            "custom_credentials_provider": Provider(),
            "hostaddr": dsql.host,
            "port": dsql.port,
        },
    )
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SHOW application_name")).scalar_one() == "amazon-style"
        assert engine.pool.size() == 2  # type: ignore[attr-defined]
    finally:
        engine.dispose()


def test_custom_role_and_schema(dsql: LocalDSQL, driver: str) -> None:
    setup = sync_engine(dsql, driver, isolation_level="AUTOCOMMIT")
    try:
        with setup.connect() as admin:
            if not admin.execute(text("SELECT 1 FROM pg_roles WHERE rolname = 'app_sync'")).first():
                admin.execute(text("CREATE ROLE app_sync WITH LOGIN"))
            admin.execute(text("CREATE SCHEMA IF NOT EXISTS app_sync_schema"))
            admin.execute(text("GRANT USAGE, CREATE ON SCHEMA app_sync_schema TO app_sync"))
    finally:
        setup.dispose()
    engine = create_dsql_engine(
        dsql.endpoint,
        "app_sync",
        driver,
        sslrootcert=dsql.ca_file,
        connect_args={"region": dsql.region},
        hostaddr=dsql.host,
        port=dsql.port,
        schema="app_sync_schema",
        session=boto3_session(dsql),
    )
    try:
        with engine.connect() as conn:
            row = conn.execute(text("SELECT session_user, current_schema()")).one()
        assert tuple(row) == ("app_sync", "app_sync_schema")
    finally:
        engine.dispose()


def test_each_connection_gets_its_own_token(engine: Engine) -> None:
    held = [engine.connect() for _ in range(3)]
    for conn in held:
        conn.close()
    counters = pool_counters(engine)
    assert counters.tokens_minted == counters.connections_opened == 3


def test_retired_at_checkin_and_checkout(dsql: LocalDSQL, driver: str) -> None:
    engine = sync_engine(dsql, driver, max_connection_age=0.5, connection_age_jitter=0)
    try:
        with engine.begin() as conn:
            first = _session_id(conn)
            time.sleep(0.7)
            assert _session_id(conn) == first  # never mid-transaction
        assert pool_counters(engine).retired_for_age_at_checkin == 1
        with engine.connect() as conn:
            second = _session_id(conn)
        time.sleep(0.7)
        with engine.connect() as conn:
            third = _session_id(conn)
        assert len({first, second, third}) == 3
        assert pool_counters(engine).retired_for_age_at_checkout == 1
    finally:
        engine.dispose()


def test_killed_idle_connection_is_replaced(engine: Engine, dsql: LocalDSQL) -> None:
    with engine.connect() as conn:
        session_id = _session_id(conn)
    dsql.kill(session_id)
    time.sleep(0.1)
    with engine.connect() as conn:
        assert _session_id(conn) != session_id
    assert pool_counters(engine).replaced_after_server_close == 1


def test_connection_lost_in_use(engine: Engine, dsql: LocalDSQL) -> None:
    conn = engine.connect()
    try:
        dsql.kill(_session_id(conn))
        time.sleep(0.1)
        with pytest.raises(ConnectionLost, match="lost the connection") as caught:
            conn.execute(text("SELECT 1"))
        assert caught.value.during_commit is False
    finally:
        conn.close()


def test_direct_tls(dsql: LocalDSQL, driver: str) -> None:
    engine = sync_engine(dsql, driver, direct_tls=True)
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SELECT 1")).scalar_one() == 1
    finally:
        engine.dispose()


def test_unsupported_driver() -> None:
    with pytest.raises(ConfigurationError, match="create_async_dsql_engine"):
        create_dsql_engine("abcdefghijklmnopqrstuvwxyz.dsql.us-east-1.on.aws", "admin", "asyncpg")


def test_insecure_mode_in_connect_args_is_checked_too() -> None:
    with pytest.raises(ConfigurationError, match="allow_insecure_tls=True"):
        create_dsql_engine(
            "abcdefghijklmnopqrstuvwxyz.dsql.us-east-1.on.aws",
            "admin",
            connect_args={"sslmode": "require"},
        )
