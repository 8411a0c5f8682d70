"""Every bad configuration fails with an error that says what is wrong and what to do.

Each case also checks that neither a token nor the secret key shows in the
error (message, repr, chained traceback) or in the logs, with ``echo=True``
and every logger at DEBUG.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from typing import Any

import aioboto3
import pytest
from botocore.credentials import Credentials
from sqlalchemy import text

from harness.engine import (
    assert_no_secrets,
    async_engine,
    exception_texts,
    secrets_of,
    sync_engine,
)
from sqlalchemy_dsql import auth, create_async_dsql_engine, create_dsql_engine
from sqlalchemy_dsql.errors import (
    AuthenticationFailed,
    ClusterUnreachable,
    ConfigurationError,
    ConnectError,
    DSQLError,
    TLSVerificationFailed,
)
from sqlalchemy_dsql.local import LocalDSQL

pytestmark = pytest.mark.integration

# dsql-local now answers in DSQL's recorded words: "SSL is mandatory" (08P01) for plaintext,
# and "unable to accept connection, access denied" with the reason in the HINT for a token.
# engine.py still reads only the first line of the message and looks for "SSL ... required",
# so these explanations are lost until it recognises those words (an engine-room change).
# A key pair the strict emulator lets DbConnect but not DbConnectAdmin.
CONNECT_ONLY = Credentials("AKIADSQLCONNECTONLY1", "connect-only-secret-not-real")
# The strict emulator's clock runs this far ahead: a 900 s token is already expired there.
CLOCK_AHEAD = 1000.0
OTHER_CLUSTER = "otherclusterid00000000000b"


@pytest.fixture(scope="module")
def strict_dsql(aws_test_keys: None) -> Iterator[LocalDSQL]:
    with LocalDSQL(clock_offset=CLOCK_AHEAD, connect_only_credentials=[CONNECT_ONLY]) as emulator:
        yield emulator


@pytest.fixture
def no_aws_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """No credentials anywhere: env, shared files, instance metadata."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    # A default-chain generator cached by an earlier test holds the test key pair.
    monkeypatch.setattr(auth, "_generators", {})
    monkeypatch.setattr(auth, "_async_generators", {})


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def _failure(
    engine_kwargs: dict[str, Any],
    dsql: LocalDSQL,
    expected: type[DSQLError],
    caplog: pytest.LogCaptureFixture,
) -> str:
    """Connect with echo on and every logger at DEBUG; return the error's text."""
    engine = async_engine(dsql, echo=True, echo_pool="debug", **engine_kwargs)
    try:
        with caplog.at_level(logging.DEBUG), pytest.raises(expected) as caught:
            async with engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
    finally:
        await engine.dispose()
    texts = exception_texts(caught.value)
    assert_no_secrets(
        [*texts, caplog.text, repr(engine), engine.url.render_as_string(False)], secrets_of(dsql)
    )
    return str(caught.value)


async def test_expired_token(strict_dsql: LocalDSQL, caplog: pytest.LogCaptureFixture) -> None:
    message = await _failure({}, strict_dsql, AuthenticationFailed, caplog)
    assert "refused the IAM token for user 'admin'" in message
    assert "expired" in message
    assert "check this machine's clock" in message


async def test_long_lived_token_passes_the_skewed_clock(strict_dsql: LocalDSQL) -> None:
    engine = async_engine(strict_dsql, token_lifetime=3600)
    try:
        async with engine.connect() as conn:
            assert (await conn.execute(text("SELECT 1"))).scalar_one() == 1
    finally:
        await engine.dispose()


async def test_token_for_the_wrong_host(
    strict_dsql: LocalDSQL, caplog: pytest.LogCaptureFixture
) -> None:
    # The regional wildcard certificate lets TLS pass, so the token check speaks.
    other = f"{OTHER_CLUSTER}.dsql.{strict_dsql.region}.on.aws"
    message = await _failure(
        {"host": other, "token_lifetime": 3600}, strict_dsql, AuthenticationFailed, caplog
    )
    assert f"tokens are signed for host '{other}'" in message
    assert "use hostaddr=" in message


async def test_identity_not_allowed_the_admin_action(
    strict_dsql: LocalDSQL, caplog: pytest.LogCaptureFixture
) -> None:
    session = aioboto3.Session(
        aws_access_key_id=CONNECT_ONLY.access_key, aws_secret_access_key=CONNECT_ONLY.secret_key
    )
    message = await _failure(
        {"session": session, "token_lifetime": 3600}, strict_dsql, AuthenticationFailed, caplog
    )
    assert "dsql:DbConnectAdmin" in message
    assert "needs dsql:DbConnectAdmin on this cluster" in message
    assert CONNECT_ONLY.secret_key not in message


async def test_unknown_role(dsql: LocalDSQL, caplog: pytest.LogCaptureFixture) -> None:
    message = await _failure({"user": "nobody_here"}, dsql, AuthenticationFailed, caplog)
    assert "user 'nobody_here'" in message
    assert "must exist WITH LOGIN" in message


async def test_no_credentials(
    dsql: LocalDSQL, caplog: pytest.LogCaptureFixture, no_aws_environment: None
) -> None:
    message = await _failure({"session": None}, dsql, ConfigurationError, caplog)
    assert "no AWS credentials found" in message
    assert "AWS_PROFILE" in message


async def test_unknown_ca(dsql: LocalDSQL, caplog: pytest.LogCaptureFixture) -> None:
    message = await _failure({"sslrootcert": "system"}, dsql, TLSVerificationFailed, caplog)
    assert "could not verify the TLS certificate" in message
    assert "pass its CA file as sslrootcert=" in message


async def test_certificate_for_another_name(
    dsql: LocalDSQL, caplog: pytest.LogCaptureFixture
) -> None:
    message = await _failure(
        {"host": "db.example.com", "region": dsql.region}, dsql, TLSVerificationFailed, caplog
    )
    assert "must be issued for db.example.com" in message


async def test_nothing_listening(dsql: LocalDSQL, caplog: pytest.LogCaptureFixture) -> None:
    message = await _failure({"port": _closed_port()}, dsql, ClusterUnreachable, caplog)
    assert "cannot reach" in message
    assert "ConnectionRefusedError" in message


async def test_name_does_not_resolve(dsql: LocalDSQL, caplog: pytest.LogCaptureFixture) -> None:
    message = await _failure({"hostaddr": "no-such-host.invalid"}, dsql, ClusterUnreachable, caplog)
    assert "cannot reach" in message
    assert "DNS" in message


async def test_connect_timeout(caplog: pytest.LogCaptureFixture, dsql: LocalDSQL) -> None:
    # A listener that never answers: the TLS request waits until connect_timeout.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        message = await _failure(
            {"port": silent.getsockname()[1], "connect_timeout": 0.5},
            dsql,
            ClusterUnreachable,
            caplog,
        )
    assert "connect_timeout=0.5" in message


async def test_plaintext_refused_by_the_server(
    dsql: LocalDSQL, caplog: pytest.LogCaptureFixture
) -> None:
    message = await _failure(
        {"sslmode": "disable", "allow_insecure_tls": True}, dsql, ConnectError, caplog
    )
    assert "requires TLS" in message


def test_no_region() -> None:
    with pytest.raises(ConfigurationError, match="pass region="):
        create_async_dsql_engine("db.example.com")
    with pytest.raises(ConfigurationError, match="needs region="):
        create_dsql_engine("abcdefghijklmnopqrstuvwxyz", "admin")


def test_region_contradicting_the_endpoint() -> None:
    with pytest.raises(ConfigurationError, match="does not match the endpoint"):
        create_async_dsql_engine(
            "abcdefghijklmnopqrstuvwxyz.dsql.us-east-1.on.aws", region="eu-west-1"
        )


def test_sync_engine_errors_are_explained_too(
    strict_dsql: LocalDSQL, caplog: pytest.LogCaptureFixture
) -> None:
    for driver in ("psycopg", "psycopg2"):
        engine = sync_engine(strict_dsql, driver, echo=True)
        try:
            with caplog.at_level(logging.DEBUG), pytest.raises(AuthenticationFailed) as caught:
                engine.connect()
        finally:
            engine.dispose()
        assert "expired" in str(caught.value)
        assert_no_secrets([*exception_texts(caught.value), caplog.text], secrets_of(strict_dsql))
