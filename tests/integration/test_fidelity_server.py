"""The emulator's front door against what live DSQL clusters were seen to do.

Startup parameters, the greeting's ParameterStatus values, the plaintext
refusal and IAM-token refusals, each in DSQL's recorded words (sources in
the comments), through raw asyncpg and psycopg; and the emulator program
itself: started with a client's libpq environment, and spawned through its
machine-readable ready file.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import struct
import subprocess
import sys
from pathlib import Path
from unittest import mock

import asyncpg
import botocore.auth
import botocore.session
import psycopg
import psycopg2
import pytest

from sqlalchemy_dsql.local import TEST_ACCESS_KEY_ID, TEST_SECRET_ACCESS_KEY, LocalDSQL
from sqlalchemy_dsql.local.process import spawn

pytestmark = pytest.mark.integration

# What dsql-local's banner tells a shell to export, with a port that is not 5432.
_BANNER_ENVIRONMENT = {
    "PGPORT": "6543",
    "PGHOST": "127.0.0.1",
    "PGUSER": "admin",
    "PGDATABASE": "postgres",
    "PGSSLMODE": "verify-full",
}


# -- the program: a client's libpq environment, the ready file -----------------------------


async def test_local_dsql_starts_with_the_banners_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in _BANNER_ENVIRONMENT.items():
        monkeypatch.setenv(name, value)
    async with LocalDSQL(second_opinion=False) as emulator:
        conn = await asyncpg.connect(**emulator.connect_kwargs())
        try:
            assert await conn.fetchval("SELECT 41 + 1") == 42
        finally:
            await conn.close()
        assert emulator.truncate() == []  # the backend is reachable directly too


def test_spawned_cli_starts_with_pgport_set(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in _BANNER_ENVIRONMENT.items():
        monkeypatch.setenv(name, value)
    with (
        spawn(no_second_opinion=True) as spawned,
        psycopg.connect(
            host=spawned.host,
            port=spawned.port,
            dbname="postgres",
            user="admin",
            password=_token(spawned.endpoint, spawned.region),
            sslmode="verify-full",
            sslrootcert=spawned.ca_file,
        ) as conn,
    ):
        assert conn.execute("SELECT current_user").fetchone() == ("admin",)


def _token(
    endpoint: str,
    region: str,
    expires_in: int = 900,
    signed_at: dt.datetime | None = None,
) -> str:
    """An admin token made by botocore, optionally as if signed at another time."""
    session = botocore.session.get_session()
    session.set_credentials(TEST_ACCESS_KEY_ID, TEST_SECRET_ACCESS_KEY)
    client = session.create_client("dsql", region_name=region)
    with mock.patch.object(
        botocore.auth,
        "get_current_datetime",
        return_value=signed_at or dt.datetime.now(dt.timezone.utc),
    ):
        return str(client.generate_db_connect_admin_auth_token(endpoint, region, expires_in))


def test_cli_ready_file_says_where_it_listens(tmp_path: Path) -> None:
    ready_file = tmp_path / "ready.json"
    command = [sys.executable, "-m", "sqlalchemy_dsql.local.cli", "--port", "0"]
    command += ["--no-second-opinion", "--region", "eu-west-1", "--ready-file", str(ready_file)]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    try:
        assert process.stdout is not None
        banner = process.stdout.readline()  # the banner for people still comes first
        assert banner.startswith("dsql-local is ready")
        ready = json.loads(ready_file.read_text())
        assert set(ready) == {"endpoint", "host", "port", "region", "ca_file", "pid"}
        assert ready["pid"] == process.pid
        assert ready["region"] == "eu-west-1"
        assert ready["endpoint"].endswith(".dsql.eu-west-1.on.aws")
        assert os.path.exists(ready["ca_file"])
        assert isinstance(ready["port"], int)
        assert ready["port"] > 0
        # No stray partial file is left next to it.
        assert [p.name for p in tmp_path.iterdir()] == ["ready.json"]
    finally:
        process.terminate()
        process.wait(30)


# -- startup parameters ----------------------------------------------------------------------


async def _set_refusal(dsql: LocalDSQL, name: str, value: str) -> asyncpg.PostgresError:
    """What the emulator answers ``SET name = value`` inside a session."""
    conn = await asyncpg.connect(**dsql.connect_kwargs())
    try:
        with pytest.raises(asyncpg.PostgresError) as caught:
            await conn.execute(f"SET {name} = '{value}'")
    finally:
        await conn.close()
    return caught.value


async def test_a_refused_parameter_in_the_startup_packet_fails_the_connection(
    dsql: LocalDSQL,
) -> None:
    # pistachio DSQL.md (live cluster, 2026-10-10): the startup parameter is refused
    # FATAL 0A000 with the same words as the SET.
    in_session = await _set_refusal(dsql, "statement_timeout", "1000")
    assert in_session.sqlstate == "0A000"
    with pytest.raises(asyncpg.FeatureNotSupportedError) as caught:
        await asyncpg.connect(
            **dsql.connect_kwargs(), server_settings={"statement_timeout": "1000"}
        )
    assert caught.value.severity == "FATAL"
    assert caught.value.args[0] == in_session.args[0]
    assert "statement_timeout" in caught.value.args[0]
    assert "not supported" in caught.value.args[0]


def test_libpq_options_are_judged_like_startup_parameters(dsql: LocalDSQL) -> None:
    with pytest.raises(psycopg.OperationalError, match=r"statement_timeout.* not supported"):
        psycopg.connect(dsql.conninfo(), options="-c statement_timeout=1000")
    with pytest.raises(psycopg.OperationalError, match=r"lock_timeout.* not supported"):
        psycopg.connect(dsql.conninfo(), options="-c search_path=public --lock-timeout=5s")
    # Accepted ones take effect, libpq's backslash escape included.
    with psycopg.connect(
        dsql.conninfo(), options=r"-c search_path=sys,public -capplication_name=with\ space"
    ) as conn:
        assert conn.execute("SHOW search_path").fetchone() == ("sys,public",)
        assert conn.execute("SHOW application_name").fetchone() == ("with space",)


def test_a_switch_that_is_not_a_setting_is_refused(dsql: LocalDSQL) -> None:
    with pytest.raises(psycopg.OperationalError, match="invalid command-line argument"):
        psycopg.connect(dsql.conninfo(), options="-e")


async def test_default_transaction_read_only_at_startup_is_refused(dsql: LocalDSQL) -> None:
    with pytest.raises(asyncpg.FeatureNotSupportedError, match="default_transaction_read_only"):
        await asyncpg.connect(
            **dsql.connect_kwargs(), server_settings={"default_transaction_read_only": "on"}
        )


async def test_the_parameters_drivers_and_connectors_send_are_accepted(dsql: LocalDSQL) -> None:
    # asyncpg's own (client_encoding), Amazon's connector's (application_name) and pgJDBC's
    # (DateStyle, TimeZone, extra_float_digits): Amazon ships connectors for all of them.
    settings = {
        "application_name": "aurora-dsql-python-asyncpg/1.0",
        "DateStyle": "ISO",
        "TimeZone": "UTC",
        "extra_float_digits": "2",
        "search_path": "public",
    }
    conn = await asyncpg.connect(**dsql.connect_kwargs(), server_settings=settings)
    try:
        assert await conn.fetchval("SHOW application_name") == settings["application_name"]
        assert await conn.fetchval("SHOW extra_float_digits") == "2"
        assert await conn.fetchval("SHOW transaction_isolation") == "repeatable read"
    finally:
        await conn.close()
    with psycopg.connect(dsql.conninfo()) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    with psycopg2.connect(dsql.conninfo()) as conn2, conn2.cursor() as cursor:
        cursor.execute("SELECT 2")
        assert cursor.fetchone() == (2,)
    conn2.close()


# -- the greeting ----------------------------------------------------------------------------


async def test_server_version_is_dsqls(dsql: LocalDSQL) -> None:
    # pistachio's wire recording of a live cluster (testdata/dsql/dsql.yaml, 2026-10-10).
    conn = await asyncpg.connect(**dsql.connect_kwargs())
    try:
        assert conn.get_settings().server_version == "16.15"
        # asyncpg files the minor release of a two-part version under micro.
        assert (conn.get_server_version().major, conn.get_server_version().micro) == (16, 15)
    finally:
        await conn.close()
    with psycopg.connect(dsql.conninfo()) as libpq:
        assert libpq.info.parameter_status("server_version") == "16.15"
        assert libpq.info.server_version == 160015


# -- plaintext -------------------------------------------------------------------------------


def _plaintext_startup(dsql: LocalDSQL) -> dict[str, str]:
    body = struct.pack("!i", 196608) + b"user\0admin\0database\0postgres\0\0"
    with socket.create_connection((dsql.host, dsql.port), timeout=5) as sock:
        sock.sendall(struct.pack("!i", len(body) + 4) + body)
        # The server answers after the first 8 bytes and hangs up; read just its message,
        # since what follows is a reset for the unread rest of the packet.
        reply = b""
        while len(reply) < 5 or len(reply) < 1 + struct.unpack("!i", reply[1:5])[0]:
            chunk = sock.recv(4096)
            assert chunk, f"the server hung up after {reply!r}"
            reply += chunk
    assert reply[:1] == b"E", f"expected an ErrorResponse, got {reply[:1]!r}"
    return {part[:1]: part[1:] for part in reply[5:].decode().split("\0") if part}


async def test_plaintext_is_refused_in_dsqls_words(dsql: LocalDSQL) -> None:
    # Amazon's connector tests (aurora-dsql-connectors python/connector
    # test_integration_asyncpg.py) assert "SSL is mandatory" as a ProtocolViolationError.
    fields = _plaintext_startup(dsql)
    assert (fields["S"], fields["C"], fields["M"]) == ("FATAL", "08P01", "SSL is mandatory")
    with pytest.raises(asyncpg.ProtocolViolationError, match="SSL is mandatory"):
        await asyncpg.connect(**{**dsql.connect_kwargs(), "ssl": False})
    kwargs = dsql.connect_kwargs()
    dsn = f"postgresql://admin@{kwargs['host']}:{kwargs['port']}/postgres?sslmode=disable"
    with pytest.raises(asyncpg.ProtocolViolationError, match="SSL is mandatory"):
        await asyncpg.connect(dsn=dsn, password=kwargs["password"])
    with pytest.raises(psycopg.OperationalError, match="SSL is mandatory"):
        psycopg.connect(dsql.conninfo().replace("sslmode=verify-full", "sslmode=disable"))


# -- tokens ----------------------------------------------------------------------------------


async def _token_refusal(dsql: LocalDSQL, token: str) -> asyncpg.PostgresError:
    with pytest.raises(asyncpg.InvalidPasswordError) as caught:
        await asyncpg.connect(**{**dsql.connect_kwargs(), "password": token})
    return caught.value


def _libpq_refusal(dsql: LocalDSQL, token: str) -> str:
    with pytest.raises(psycopg.OperationalError) as caught:
        psycopg.connect(dsql.conninfo(), password=token)
    return str(caught.value)


async def test_an_expired_token_is_access_denied_with_signature_expired(dsql: LocalDSQL) -> None:
    # agent-plugins troubleshooting.md (observed on a cluster, 2026-10-01): "unable to accept
    # connection, access denied" plus "HINT: Signature expired: ...".
    an_hour_ago = dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=1)
    token = _token(dsql.endpoint, dsql.region, signed_at=an_hour_ago)
    error = await _token_refusal(dsql, token)
    assert (error.sqlstate, error.severity) == ("28P01", "FATAL")
    assert error.args[0] == "unable to accept connection, access denied"
    stamp = an_hour_ago.strftime("%Y%m%dT%H%M%SZ")
    assert error.hint.startswith(f"Signature expired: {stamp} is now earlier than ")
    libpq = _libpq_refusal(dsql, token)
    assert "FATAL:  unable to accept connection, access denied" in libpq
    assert "HINT:  Signature expired: " in libpq


async def test_a_token_longer_than_a_week_gets_dsqls_words(dsql: LocalDSQL) -> None:
    # Amazon's connector tests: a 604801 s token fails with this (psycopg and psycopg2).
    token = _token(dsql.endpoint, dsql.region, expires_in=604801)
    error = await _token_refusal(dsql, token)
    assert error.args[0] == "unable to accept connection, access denied"
    assert error.hint == "X-Amz-Expires must be less than a week (in seconds) that is 604800"
    assert "X-Amz-Expires must be less than a week (in seconds)" in _libpq_refusal(dsql, token)
    with pytest.raises(psycopg2.OperationalError) as caught:
        psycopg2.connect(dsql.conninfo(), password=token)
    assert "X-Amz-Expires must be less than a week (in seconds)" in caught.value.args[0]
    # A week exactly is the longest lifetime DSQL's documentation allows.
    week = _token(dsql.endpoint, dsql.region, expires_in=604800)
    conn = await asyncpg.connect(**{**dsql.connect_kwargs(), "password": week})
    await conn.close()


async def test_a_token_signed_ahead_of_the_clock_is_not_yet_current(dsql: LocalDSQL) -> None:
    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(minutes=10)
    error = await _token_refusal(dsql, _token(dsql.endpoint, dsql.region, signed_at=later))
    assert error.args[0] == "unable to accept connection, access denied"
    assert error.hint.startswith("Signature not yet current: ")


async def test_other_token_failures_keep_dsqls_message(dsql: LocalDSQL) -> None:
    good = _token(dsql.endpoint, dsql.region)
    head, signature = good.rsplit("X-Amz-Signature=", 1)
    forged = f"{head}X-Amz-Signature={'1' if signature[0] == '0' else '0'}{signature[1:]}"
    error = await _token_refusal(dsql, forged)
    assert error.args[0] == "unable to accept connection, access denied"
    assert "Signature expired" not in (error.hint or "")
    assert signature not in str(error)


async def test_a_user_without_a_role_is_a_protocol_violation(dsql: LocalDSQL) -> None:
    # Amazon's connector tests expect asyncpg's ProtocolViolationError (08P01), and an
    # OperationalError from psycopg2, for a user that has no role (test_invalid_user_fails).
    kwargs = dsql.connect_kwargs("nonexistent_user")
    with pytest.raises(asyncpg.ProtocolViolationError) as caught:
        await asyncpg.connect(**kwargs)
    assert caught.value.args[0] == "unable to accept connection, access denied"
    assert caught.value.hint == 'role "nonexistent_user" does not exist'
    with pytest.raises(psycopg2.OperationalError, match="access denied"):
        psycopg2.connect(dsql.conninfo("nonexistent_user"))
