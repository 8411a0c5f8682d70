"""Token verification against tokens minted by botocore itself (no server)."""

from __future__ import annotations

import datetime as dt
from unittest import mock

import botocore.auth
import botocore.session
import pytest
from botocore.credentials import Credentials

from sqlalchemy_dsql.local.tokens import (
    TokenRejected,
    TokenVerifier,
    fixed_test_credentials,
)

ENDPOINT = "abcdefghijklmnopqrstuvwxyz.dsql.eu-west-1.on.aws"
REGION = "eu-west-1"


def _client(credentials: Credentials, region: str = REGION) -> object:
    session = botocore.session.get_session()
    session.set_credentials(credentials.access_key, credentials.secret_key, credentials.token)
    return session.create_client("dsql", region_name=region)


@pytest.fixture
def verifier() -> TokenVerifier:
    return TokenVerifier.create(ENDPOINT, REGION, [fixed_test_credentials()])


def test_admin_and_role_tokens_are_accepted(verifier: TokenVerifier) -> None:
    client = _client(fixed_test_credentials())
    verifier.verify("admin", client.generate_db_connect_admin_auth_token(ENDPOINT, REGION))
    verifier.verify("app", client.generate_db_connect_auth_token(ENDPOINT, REGION))


def test_temporary_credentials_need_their_session_token() -> None:
    temporary = Credentials("ASIATEMPORARYKEY0000", "temporary-secret", "session-token-value")
    verifier = TokenVerifier.create(ENDPOINT, REGION, [temporary])
    token = _client(temporary).generate_db_connect_admin_auth_token(ENDPOINT, REGION)
    assert "X-Amz-Security-Token=session-token-value" in token
    verifier.verify("admin", token)
    stripped = token.replace("X-Amz-Security-Token=session-token-value&", "")
    with pytest.raises(TokenRejected, match="does not know"):
        verifier.verify("admin", stripped)


def test_host_is_compared_without_case(verifier: TokenVerifier) -> None:
    token = _client(fixed_test_credentials()).generate_db_connect_admin_auth_token(
        ENDPOINT.upper(), REGION
    )
    verifier.verify("admin", token)


@pytest.mark.parametrize(
    ("offset", "expires", "reason"),
    [
        (dt.timedelta(seconds=-901), 900, "expired"),
        (dt.timedelta(minutes=10), 900, "Signature not yet current"),
    ],
)
def test_time_window(
    verifier: TokenVerifier, offset: dt.timedelta, expires: int, reason: str
) -> None:
    signed_at = dt.datetime.now(dt.timezone.utc) + offset
    with mock.patch.object(botocore.auth, "get_current_datetime", return_value=signed_at):
        token = _client(fixed_test_credentials()).generate_db_connect_admin_auth_token(
            ENDPOINT, REGION, expires
        )
    with pytest.raises(TokenRejected, match=reason):
        verifier.verify("admin", token)


def test_a_week_long_token_is_valid_until_it_ends(verifier: TokenVerifier) -> None:
    token = _client(fixed_test_credentials()).generate_db_connect_admin_auth_token(
        ENDPOINT, REGION, 7 * 24 * 3600
    )
    now = dt.datetime.now(dt.timezone.utc)
    verifier.verify("admin", token, now=now + dt.timedelta(days=6))
    with pytest.raises(TokenRejected, match="expired"):
        verifier.verify("admin", token, now=now + dt.timedelta(days=8))


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda t: t.replace("X-Amz-Expires=900", "X-Amz-Expires=901"), "signature"),
        (lambda t: t.replace("X-Amz-Expires=900", "X-Amz-Expires=0"), "X-Amz-Expires"),
        (lambda t: t.replace("X-Amz-Algorithm=AWS4-HMAC-SHA256", "X-Amz-Algorithm=x"), "AWS4"),
        (lambda t: t.replace("%2Fdsql%2F", "%2Frds-db%2F"), "service"),
        (lambda t: t.replace("X-Amz-Date=", "X-Amz-Date=x"), "X-Amz-Date"),
        (lambda t: t.split("?")[0], "not an IAM authentication token"),
        (lambda t: t.replace("/?", "/path?"), "not an IAM authentication token"),
    ],
)
def test_tampered_tokens(verifier: TokenVerifier, mutate: object, reason: str) -> None:
    token = _client(fixed_test_credentials()).generate_db_connect_admin_auth_token(ENDPOINT, REGION)
    assert callable(mutate)
    with pytest.raises(TokenRejected, match=reason):
        verifier.verify("admin", mutate(token))


def test_rejection_never_contains_the_secret(verifier: TokenVerifier) -> None:
    other = Credentials("AKIAOTHERKEY00000000", "the-other-secret")
    token = _client(other).generate_db_connect_admin_auth_token(ENDPOINT, REGION)
    with pytest.raises(TokenRejected) as caught:
        verifier.verify("admin", token)
    assert "the-other-secret" not in str(caught.value)
    assert fixed_test_credentials().secret_key not in str(caught.value)
