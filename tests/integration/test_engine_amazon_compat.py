"""create_dsql_engine behaves as Amazon's aurora_dsql_sqlalchemy.create_dsql_engine does.

Amazon's own tests of these behaviours (test_create_dsql_engine.py) mock its
module's internals; these check the same behaviours of ours on real
connections through the emulator.
"""

from __future__ import annotations

from typing import Any

import psycopg
import psycopg2.extensions
import pytest
from sqlalchemy import Engine, text

from harness.engine import boto3_session, sync_engine
from sqlalchemy_dsql import create_dsql_engine
from sqlalchemy_dsql.errors import ClusterUnreachable, ConfigurationError
from sqlalchemy_dsql.local import LocalDSQL

pytestmark = pytest.mark.integration

DRIVERS = ["psycopg", "psycopg2"]
LIBPQ_VERSION = {
    "psycopg": psycopg.pq.version(),
    "psycopg2": psycopg2.extensions.libpq_version(),
}


@pytest.fixture(params=DRIVERS)
def driver(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _connection_options(engine: Engine) -> dict[str, str]:
    """Connect once; the options libpq used, from the connection itself (env defaults too)."""
    with engine.connect() as conn:
        assert conn.execute(text("SELECT 1")).scalar_one() == 1
        raw: Any = conn.connection.driver_connection
        if engine.dialect.driver == "psycopg":
            return {o.keyword.decode(): o.val.decode() for o in raw.pgconn.info if o.val}
        return dict(raw.get_dsn_parameters())


def test_unsupported_driver_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="Unsupported driver: 'invalid'") as caught:
        create_dsql_engine("abcdefghijklmnopqrstuvwxyz.dsql.us-east-1.on.aws", "admin", "invalid")
    assert isinstance(caught.value, ConfigurationError)


def test_port_and_address_from_the_libpq_environment(
    dsql: LocalDSQL, driver: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Neither port nor hostaddr given: libpq's PGPORT and PGHOSTADDR apply, as with Amazon's."""
    monkeypatch.setenv("PGPORT", str(dsql.port))
    monkeypatch.setenv("PGHOSTADDR", dsql.host)
    engine = create_dsql_engine(
        dsql.endpoint, "admin", driver, sslrootcert=dsql.ca_file, session=boto3_session(dsql)
    )
    try:
        options = _connection_options(engine)
        assert (options["port"], options["hostaddr"]) == (str(dsql.port), dsql.host)
        assert engine.url.port is None
    finally:
        engine.dispose()


def test_wrong_pgport_is_named_in_the_error(
    dsql: LocalDSQL, driver: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PGPORT", "1")
    engine = sync_engine(dsql, driver, port=None, connect_timeout=2)
    try:
        with pytest.raises(ClusterUnreachable, match=r"dialled at 127\.0\.0\.1:1\b"):
            engine.connect()
    finally:
        engine.dispose()


def test_direct_tls_by_default_with_libpq_17(dsql: LocalDSQL, driver: str) -> None:
    engine = sync_engine(dsql, driver)
    try:
        options = _connection_options(engine)
    finally:
        engine.dispose()
    expected = "direct" if LIBPQ_VERSION[driver] >= 170000 else "postgres"
    assert options.get("sslnegotiation", "postgres") == expected


def test_direct_tls_can_be_turned_off(dsql: LocalDSQL, driver: str) -> None:
    engine = sync_engine(dsql, driver, direct_tls=False)
    try:
        assert _connection_options(engine).get("sslnegotiation", "postgres") == "postgres"
    finally:
        engine.dispose()


def test_amazon_defaults_and_engine_arguments(dsql: LocalDSQL) -> None:
    engine = sync_engine(dsql, echo=True, pool_pre_ping=True)
    try:
        assert engine.dialect.driver == "psycopg"  # Amazon's default driver
        assert engine.url.database == "postgres"
        # Amazon's 5 + 10 churns under load (docs/engine.md, 'Sizing a pool'): ours keeps 15.
        assert engine.pool.size() == 15  # type: ignore[attr-defined]
        assert engine.pool._max_overflow == 0  # type: ignore[attr-defined]
        assert engine.echo is True
        assert engine.pool._pre_ping is True
        with engine.connect() as conn:
            # Amazon's helper sends "sqlalchemy"; ours, like the async engine, sends none.
            assert conn.execute(text("SHOW application_name")).scalar_one() == ""
    finally:
        engine.dispose()
