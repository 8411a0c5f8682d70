"""Endpoint parsing and token generation, checked by the emulator's botocore verifier."""

from __future__ import annotations

import asyncio
import datetime as _dt
import gc
import threading
import weakref
from typing import Any

import aioboto3
import boto3
import pytest
from botocore.credentials import CredentialProvider, Credentials, RefreshableCredentials

from sqlalchemy_dsql.auth import (
    AsyncTokenGenerator,
    TokenGenerator,
    action_for,
    async_token_generator,
    resolve_endpoint,
    token_generator,
)
from sqlalchemy_dsql.errors import ConfigurationError
from sqlalchemy_dsql.local.tokens import (
    TEST_ACCESS_KEY_ID,
    TEST_SECRET_ACCESS_KEY,
    TokenVerifier,
    fixed_test_credentials,
)

HOST = "abcdefghijklmnopqrstuvwxyz.dsql.eu-west-1.on.aws"
REGION = "eu-west-1"


def _verifier() -> TokenVerifier:
    return TokenVerifier.create(HOST, REGION, [fixed_test_credentials()])


def _boto3_session() -> boto3.Session:
    return boto3.Session(
        aws_access_key_id=TEST_ACCESS_KEY_ID, aws_secret_access_key=TEST_SECRET_ACCESS_KEY
    )


@pytest.mark.parametrize(
    ("host", "region", "expected"),
    [
        (HOST, None, (HOST, REGION)),
        (HOST.upper() + ".", None, (HOST, REGION)),
        (
            "abcdefghijklmnopqrstuvwxyz.dsql-a1b2.us-east-2.on.aws",
            None,
            ("abcdefghijklmnopqrstuvwxyz.dsql-a1b2.us-east-2.on.aws", "us-east-2"),
        ),
        (
            "abcdefghijklmnopqrstuvwxyz",
            "ap-northeast-1",
            ("abcdefghijklmnopqrstuvwxyz.dsql.ap-northeast-1.on.aws", "ap-northeast-1"),
        ),
        ("localhost", "us-east-1", ("localhost", "us-east-1")),
    ],
)
def test_resolve_endpoint(host: str, region: str | None, expected: tuple[str, str]) -> None:
    endpoint = resolve_endpoint(host, region)
    assert (endpoint.host, endpoint.region) == expected


@pytest.mark.parametrize(
    ("host", "region", "reason"),
    [
        ("", None, "empty"),
        ("abcdefghijklmnopqrstuvwxyz", None, "bare cluster id, which needs region"),
        ("db.example.com", None, "pass region="),
        (HOST, "us-east-1", "does not match"),
    ],
)
def test_resolve_endpoint_errors(host: str, region: str | None, reason: str) -> None:
    with pytest.raises(ConfigurationError, match=reason):
        resolve_endpoint(host, region)


def test_endpoint_knows_real_dsql_hosts() -> None:
    assert resolve_endpoint(HOST).is_dsql
    assert not resolve_endpoint("localhost", REGION).is_dsql


def test_action_for() -> None:
    assert action_for("admin") == "DbConnectAdmin"
    assert action_for("app") == "DbConnect"


@pytest.mark.parametrize("user", ["admin", "app_reader"])
def test_sync_tokens_verify(user: str) -> None:
    generator = TokenGenerator(REGION, session=_boto3_session())
    token = generator.token(HOST, user)
    _verifier().verify(user, token)
    assert f"Action={action_for(user)}&" in token
    assert "X-Amz-Expires=900&" in token
    assert generator.minted == 1


def test_sync_generator_reuses_its_client() -> None:
    generator = TokenGenerator(REGION, session=_boto3_session())
    generator.token(HOST, "admin")
    client = generator._client
    generator.token(HOST, "app")
    assert generator._client is client


def test_shared_generators_per_credentials_source() -> None:
    session = _boto3_session()
    assert token_generator(REGION, session=session) is token_generator(REGION, session=session)
    assert token_generator(REGION, session=session) is not token_generator(
        "us-east-1", session=session
    )


async def test_async_tokens_verify() -> None:
    session = aioboto3.Session(
        aws_access_key_id=TEST_ACCESS_KEY_ID, aws_secret_access_key=TEST_SECRET_ACCESS_KEY
    )
    generator = AsyncTokenGenerator(REGION, session=session)
    try:
        _verifier().verify("admin", await generator.token(HOST, "admin", 300))
        _verifier().verify("app", await generator.token(HOST, "app"))
        assert generator.minted == 2
    finally:
        await generator.close()


async def test_shared_async_generator_is_per_loop() -> None:
    session = aioboto3.Session(
        aws_access_key_id=TEST_ACCESS_KEY_ID, aws_secret_access_key=TEST_SECRET_ACCESS_KEY
    )
    first = async_token_generator(REGION, session=session)
    assert async_token_generator(REGION, session=session) is first
    await first.close()


def test_shared_async_generators_of_closed_loops_are_let_go() -> None:
    session = aioboto3.Session(
        aws_access_key_id=TEST_ACCESS_KEY_ID, aws_secret_access_key=TEST_SECRET_ACCESS_KEY
    )

    async def generator_and_loop() -> tuple[weakref.ref[Any], weakref.ref[Any]]:
        generator = async_token_generator(REGION, session=session)
        _verifier().verify("admin", await generator.token(HOST, "admin"))
        return weakref.ref(generator), weakref.ref(asyncio.get_running_loop())

    # A loop per test, as pytest-asyncio and anyio give: each run's generator must go.
    first_generator, first_loop = asyncio.run(generator_and_loop())
    second_generator, _ = asyncio.run(generator_and_loop())
    gc.collect()
    assert first_generator() is None
    assert first_loop() is None
    assert second_generator() is not None  # the latest is kept until another loop asks


def test_missing_credentials_are_explained(
    monkeypatch: pytest.MonkeyPatch, tmp_path: object
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/config")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    generator = TokenGenerator(REGION)
    with pytest.raises(ConfigurationError, match="no AWS credentials found"):
        generator.token(HOST, "admin")


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_credentials_that_appear_later_are_found(
    monkeypatch: pytest.MonkeyPatch, flavour: str
) -> None:
    # A process that started before its credentials were there (a role not yet
    # attached, a key exported later) must not keep failing on the generator it made.
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/config")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")

    def set_credentials() -> None:
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", TEST_ACCESS_KEY_ID)
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", TEST_SECRET_ACCESS_KEY)

    if flavour == "sync":
        generator = TokenGenerator(REGION)
        with pytest.raises(ConfigurationError, match="no AWS credentials found"):
            generator.token(HOST, "admin")
        set_credentials()
        token = generator.token(HOST, "admin")
    else:

        async def twice() -> str:
            generator = AsyncTokenGenerator(REGION)
            try:
                with pytest.raises(ConfigurationError, match="no AWS credentials found"):
                    await generator.token(HOST, "admin")
                set_credentials()
                return await generator.token(HOST, "admin")
            finally:
                await generator.close()

        token = asyncio.run(twice())
    _verifier().verify("admin", token)


@pytest.mark.parametrize("expires_in", [0, -5, 7 * 24 * 3600 + 1])
def test_token_lifetime_bounds(expires_in: int) -> None:
    with pytest.raises(ConfigurationError, match="token lifetime"):
        TokenGenerator(REGION, session=_boto3_session()).token(HOST, "admin", expires_in)


def test_reprs_hold_no_secrets() -> None:
    generator = TokenGenerator(REGION, session=_boto3_session())
    token = generator.token(HOST, "admin")
    text = repr(generator) + repr(AsyncTokenGenerator(REGION, profile="dev"))
    assert TEST_SECRET_ACCESS_KEY not in text
    assert token not in text
    assert "eu-west-1" in text


def test_two_credentials_sources_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="one credentials source, not session and profile"):
        TokenGenerator(REGION, session=_boto3_session(), profile="dev")


class _FixedProvider(CredentialProvider):  # type: ignore[misc]
    METHOD = "fixed-test"

    def __init__(self, *, refreshable: bool = False) -> None:
        self.refreshable = refreshable
        self.loaded_in: list[str] = []

    def load(self) -> Credentials:
        self.loaded_in.append(threading.current_thread().name)
        if not self.refreshable:
            return fixed_test_credentials()
        expiry = _dt.datetime.now(_dt.timezone.utc) + _dt.timedelta(hours=1)
        return RefreshableCredentials.create_from_metadata(
            {
                "access_key": TEST_ACCESS_KEY_ID,
                "secret_key": TEST_SECRET_ACCESS_KEY,
                "token": None,
                "expiry_time": expiry.isoformat(),
            },
            refresh_using=lambda: None,
            method=self.METHOD,
        )


def test_sync_generator_takes_a_credentials_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID", raising=False)
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY", raising=False)
    provider = _FixedProvider()
    _verifier().verify(
        "admin", TokenGenerator(REGION, credentials_provider=provider).token(HOST, "admin")
    )
    assert provider.loaded_in == [threading.current_thread().name]


@pytest.mark.parametrize("refreshable", [False, True])
async def test_async_generator_loads_a_sync_provider_off_the_loop(
    monkeypatch: pytest.MonkeyPatch, refreshable: bool
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID", raising=False)
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY", raising=False)
    provider = _FixedProvider(refreshable=refreshable)
    generator = AsyncTokenGenerator(REGION, credentials_provider=provider)
    try:
        for user in ("admin", "app"):
            _verifier().verify(user, await generator.token(HOST, user))
    finally:
        await generator.close()
    assert provider.loaded_in
    assert threading.current_thread().name not in provider.loaded_in
    assert "provider=_FixedProvider" in repr(generator)
