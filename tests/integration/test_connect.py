"""TLS and IAM-token authentication, driven with raw asyncpg and psycopg clients."""

from __future__ import annotations

import datetime as dt
import socket
import ssl
from pathlib import Path
from unittest import mock

import asyncpg
import botocore.auth
import botocore.session
import psycopg
import pytest

from sqlalchemy_dsql.local import LocalDSQL

pytestmark = pytest.mark.integration


def _client(dsql: LocalDSQL, region: str | None = None) -> object:
    session = botocore.session.get_session()
    session.set_credentials(dsql.credentials.access_key, dsql.credentials.secret_key)
    return session.create_client("dsql", region_name=region or dsql.region)


async def test_asyncpg_verify_full_with_reported_ca(dsql: LocalDSQL) -> None:
    conn = await asyncpg.connect(**dsql.connect_kwargs())
    try:
        assert await conn.fetchval("SELECT current_user") == "admin"
        assert await conn.fetchval("SHOW transaction_isolation") == "repeatable read"
        assert await conn.fetchval("SELECT current_database()") == "postgres"
    finally:
        await conn.close()


async def test_asyncpg_direct_tls_with_alpn(dsql: LocalDSQL) -> None:
    context = dsql.ssl_context()
    context.set_alpn_protocols(["postgresql"])
    kwargs = {**dsql.connect_kwargs(), "ssl": context, "direct_tls": True}
    conn = await asyncpg.connect(**kwargs)
    try:
        assert await conn.fetchval("SELECT 41 + 1") == 42
    finally:
        await conn.close()


async def test_verify_full_fails_without_the_ca(dsql: LocalDSQL) -> None:
    kwargs = {**dsql.connect_kwargs(), "ssl": ssl.create_default_context()}
    with pytest.raises(ssl.SSLCertVerificationError):
        await asyncpg.connect(**kwargs)


async def test_plaintext_startup_is_refused(dsql: LocalDSQL) -> None:
    kwargs = {**dsql.connect_kwargs(), "ssl": False}
    with pytest.raises(asyncpg.PostgresError, match="SSL is mandatory") as caught:
        await asyncpg.connect(**kwargs)
    assert caught.value.sqlstate == "08P01"


def test_psycopg_verify_full_and_plaintext(dsql: LocalDSQL) -> None:
    with psycopg.connect(dsql.conninfo()) as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("admin",)
        assert conn.pgconn.ssl_in_use
    with pytest.raises(psycopg.OperationalError, match="SSL is mandatory"):
        psycopg.connect(dsql.conninfo().replace("sslmode=verify-full", "sslmode=disable"))


@pytest.mark.skipif(psycopg.pq.version() < 170000, reason="direct TLS needs libpq 17")
def test_psycopg_direct_tls(dsql: LocalDSQL) -> None:
    with psycopg.connect(dsql.conninfo() + " sslnegotiation=direct") as conn:
        assert conn.execute("SELECT 'direct'").fetchone() == ("direct",)
        assert conn.pgconn.ssl_in_use


def test_psycopg_refuses_wrong_ca(dsql: LocalDSQL) -> None:
    conninfo = dsql.conninfo().replace(dsql.ca_file, "/etc/ssl/certs/ca-certificates.crt")
    with pytest.raises(psycopg.OperationalError, match="certificate verify failed"):
        psycopg.connect(conninfo)


def _bad_tokens(dsql: LocalDSQL) -> dict[str, tuple[str, str, str]]:
    """user, token, expected reason, for each way a token can be wrong."""
    client = _client(dsql)
    good = client.generate_db_connect_admin_auth_token(dsql.endpoint, dsql.region)
    signature = good.rsplit("X-Amz-Signature=", 1)[1]
    forged = good.replace(signature, ("0" if signature[0] != "0" else "1") + signature[1:])
    past = dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=1)
    with mock.patch.object(botocore.auth, "get_current_datetime", return_value=past):
        expired = client.generate_db_connect_admin_auth_token(dsql.endpoint, dsql.region, 900)
    other_key = botocore.session.get_session()
    other_key.set_credentials("AKIAOTHERTESTKEY0000", "some-other-secret")
    unknown = other_key.create_client("dsql", region_name=dsql.region)
    return {
        "wrong signature": ("admin", forged, "signature does not match"),
        "expired": ("admin", expired, "expired"),
        "wrong action": (
            "admin",
            client.generate_db_connect_auth_token(dsql.endpoint, dsql.region),
            "DbConnectAdmin",
        ),
        "wrong host": (
            "admin",
            client.generate_db_connect_admin_auth_token("other." + dsql.endpoint, dsql.region),
            "not for this cluster's endpoint",
        ),
        "wrong region": (
            "admin",
            _client(dsql, "eu-west-1").generate_db_connect_admin_auth_token(
                dsql.endpoint, "eu-west-1"
            ),
            "region",
        ),
        "unknown credentials": (
            "admin",
            unknown.generate_db_connect_admin_auth_token(dsql.endpoint, dsql.region),
            "credentials this cluster does not know",
        ),
        "not a token": ("admin", "hunter2", "not an IAM authentication token"),
    }


@pytest.mark.parametrize(
    "case",
    [
        "wrong signature",
        "expired",
        "wrong action",
        "wrong host",
        "wrong region",
        "unknown credentials",
        "not a token",
    ],
)
async def test_bad_tokens_are_refused(dsql: LocalDSQL, case: str) -> None:
    user, token, reason = _bad_tokens(dsql)[case]
    kwargs = {**dsql.connect_kwargs(user), "password": token}
    with pytest.raises(asyncpg.InvalidPasswordError, match=reason):
        await asyncpg.connect(**kwargs)


def test_bad_token_refused_for_psycopg(dsql: LocalDSQL) -> None:
    _user, token, _reason = _bad_tokens(dsql)["wrong signature"]
    with pytest.raises(psycopg.OperationalError, match="access denied"):
        psycopg.connect(dsql.conninfo(), password=token)


async def test_non_admin_role_needs_dbconnect_token(dsql: LocalDSQL) -> None:
    admin = await asyncpg.connect(**dsql.connect_kwargs())
    try:
        await admin.execute("CREATE ROLE app_reader WITH LOGIN")
    except asyncpg.DuplicateObjectError:
        pass
    finally:
        await admin.close()
    conn = await asyncpg.connect(**dsql.connect_kwargs("app_reader"))
    try:
        assert await conn.fetchval("SELECT session_user") == "app_reader"
        with pytest.raises(asyncpg.PostgresError):
            await conn.execute("SET SESSION AUTHORIZATION postgres")
    finally:
        await conn.close()
    with pytest.raises(asyncpg.InvalidPasswordError, match="DbConnect"):
        await asyncpg.connect(**{**dsql.connect_kwargs("app_reader"), "password": dsql.token()})


async def test_only_the_postgres_database_exists(dsql: LocalDSQL) -> None:
    with pytest.raises(asyncpg.InvalidCatalogNameError, match="does not exist"):
        await asyncpg.connect(**{**dsql.connect_kwargs(), "database": "app"})


def test_auth_none_accepts_any_password_for_debugging() -> None:
    with (
        LocalDSQL(authenticate=False) as emulator,
        psycopg.connect(emulator.conninfo(), password="anything") as conn,
    ):
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_ca_and_endpoint_reported(dsql: LocalDSQL) -> None:
    pem = Path(dsql.ca_file).read_text()
    assert pem.startswith("-----BEGIN CERTIFICATE-----")
    assert dsql.endpoint.endswith(f".dsql.{dsql.region}.on.aws")
    assert dsql.credentials.access_key.startswith("AKIA")
    assert dsql.credentials.secret_key not in repr(dsql)
    with socket.create_connection((dsql.host, dsql.port)) as raw:
        assert raw.getpeername()[1] == dsql.port
