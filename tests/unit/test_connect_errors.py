"""The connect-error explanations recognise Aurora DSQL's own wordings.

The input of each case is a driver exception carrying a refusal as live
clusters word it (sources in docs/dialect.md, "Connection refusals"): asyncpg
keeps SQLSTATE and HINT apart, libpq (psycopg, psycopg2) puts the whole
server message in the exception's text. No database is needed.
"""

from __future__ import annotations

import asyncpg.exceptions
import psycopg
import psycopg2
import pytest
from sqlalchemy import make_url

from sqlalchemy_dsql.auth import Endpoint
from sqlalchemy_dsql.diagnosis import ConnectAttempt
from sqlalchemy_dsql.errors import (
    AuthenticationFailed,
    ClusterBusy,
    ConnectError,
    TLSVerificationFailed,
)
from sqlalchemy_dsql.settings import ConnectionSettings, DriverFamily

HOST = "abcdefghijklmnopqrstuvwxyz.dsql.us-east-1.on.aws"
EXPIRED_HINT = (
    "Signature expired: 20261202T040000Z is now earlier than 20261202T041500Z "
    "(20261202T043000Z - 15 min.)"
)


def context(user: str = "admin") -> ConnectAttempt:
    return ConnectAttempt(ConnectionSettings(Endpoint(HOST, "us-east-1"), user=user))


def asyncpg_error(sqlstate: str, message: str, hint: str | None = None) -> BaseException:
    fields = {"C": sqlstate, "M": message, "S": "FATAL"}
    if hint is not None:
        fields["H"] = hint
    return asyncpg.exceptions.PostgresError.new(fields)  # type: ignore[no-any-return]


def libpq_text(message: str, hint: str | None = None) -> str:
    """What libpq reports for a FATAL during startup, as psycopg and psycopg2 show it."""
    text = f'connection to server at "{HOST}" (10.0.0.1), port 5432 failed: FATAL:  {message}'
    return text + (f"\nHINT:  {hint}\n" if hint else "\n")


def every_driver(sqlstate: str, message: str, hint: str | None = None) -> list[BaseException]:
    return [
        asyncpg_error(sqlstate, message, hint),
        psycopg.OperationalError("connection failed: " + libpq_text(message, hint)),
        psycopg2.OperationalError(libpq_text(message, hint)),
    ]


def ids(errors: list[BaseException]) -> list[str]:
    return [type(error).__module__.split(".")[0] for error in errors]


PLAINTEXT = every_driver("08P01", "SSL is mandatory")


@pytest.mark.parametrize("error", PLAINTEXT, ids=ids(PLAINTEXT))
def test_plaintext_refused(error: BaseException) -> None:
    # aurora-dsql-connectors' asyncpg tests: ProtocolViolationError (08P01), "SSL is mandatory".
    explained = context().explain(error)
    assert type(explained) is ConnectError
    assert "requires TLS (SSL is mandatory)" in str(explained)
    assert "sslmode='verify-full'" in str(explained)


EXPIRED = every_driver("08P01", "unable to accept connection, access denied", EXPIRED_HINT)


@pytest.mark.parametrize("error", EXPIRED, ids=ids(EXPIRED))
def test_expired_token_is_told_by_its_hint(error: BaseException) -> None:
    explained = context().explain(error)
    assert isinstance(explained, AuthenticationFailed)
    message = str(explained)
    assert f"access denied (HINT: {EXPIRED_HINT})" in message
    assert "valid for 900 s from signing, so check this machine's clock" in message
    assert "needs dsql:" not in message  # not a permissions problem


NOT_YET_CURRENT_HINT = (
    "Signature not yet current: 20261202T053201Z is still later than 20261202T050702Z "
    "(20261202T050202Z + 5 min.)"
)
AHEAD = every_driver("28P01", "unable to accept connection, access denied", NOT_YET_CURRENT_HINT)


@pytest.mark.parametrize("error", AHEAD, ids=ids(AHEAD))
def test_token_signed_ahead_of_the_server_clock_gets_clock_advice(error: BaseException) -> None:
    message = str(context().explain(error))
    assert "so check this machine's clock" in message
    assert "needs dsql:" not in message


DENIED = every_driver("08P01", "unable to accept connection, access denied")


@pytest.mark.parametrize("error", DENIED, ids=ids(DENIED))
def test_access_denied_without_a_hint_is_about_permissions(error: BaseException) -> None:
    explained = context("app").explain(error)
    assert isinstance(explained, AuthenticationFailed)
    message = str(explained)
    assert "refused the IAM token for user 'app': unable to accept connection, access denied." in (
        message
    )
    assert "needs dsql:DbConnect on this cluster, for region 'us-east-1'" in message
    assert "must exist WITH LOGIN" in message
    assert "clock" in message  # the generic advice names the clock too
    assert "valid for 900 s" not in message


WRONG_ACTION = every_driver(
    "08P01",
    "unable to accept connection, access denied",
    "Wrong user to action mapping. user: admin, action: DbConnect",
)


@pytest.mark.parametrize("error", WRONG_ACTION, ids=ids(WRONG_ACTION))
def test_token_signed_for_the_wrong_action(error: BaseException) -> None:
    message = str(context().explain(error))
    assert "Wrong user to action mapping" in message
    assert "must be signed for dsql:DbConnectAdmin" in message
    assert "generate_db_connect_admin_auth_token" in message


@pytest.mark.parametrize(
    "error",
    [
        psycopg.OperationalError(
            "connection failed: "
            + libpq_text("X-Amz-Expires must be less than a week (in seconds) that is 604800")
        ),
        psycopg2.OperationalError(
            libpq_text(
                "unable to accept connection, access denied",
                "X-Amz-Expires must be less than a week (in seconds) that is 604800",
            )
        ),
    ],
    ids=["in-message", "in-hint"],
)
def test_token_valid_for_over_a_week(error: BaseException) -> None:
    # aurora-dsql-connectors' psycopg tests: an OperationalError naming X-Amz-Expires.
    explained = context().explain(error)
    assert isinstance(explained, AuthenticationFailed)
    assert "at most one week (604800 s): lower token_lifetime" in str(explained)


@pytest.mark.parametrize(
    ("sqlstate", "message", "advice"),
    [
        (
            "08006",
            "unable to accept connection, waking up cluster, please retry later",
            "waking up (state INACTIVE): retry in a few seconds",
        ),
        (
            "53300",
            "Unable to accept connection, too many open connections.",
            "its maximum of 10,000 open connections",
        ),
        (
            "53400",
            "Unable to accept connection, rate exceeded.",
            "about 100 new connections per second",
        ),
    ],
)
def test_cluster_busy(sqlstate: str, message: str, advice: str) -> None:
    for error in every_driver(sqlstate, message):
        explained = context().explain(error)
        assert isinstance(explained, ClusterBusy), error
        assert not isinstance(explained, AuthenticationFailed)
        assert f"did not accept a new connection: {message}. " in str(explained)
        assert advice in str(explained)


def test_other_errors_pass_through() -> None:
    assert context().explain(psycopg2.OperationalError("server closed the connection")) is None
    assert context().explain(asyncpg_error("0A000", "unsupported statement")) is None


def test_target_names_the_environment_it_dialled() -> None:
    url = make_url(f"auroradsql+psycopg://admin@{HOST}/postgres")
    environ = {"PGHOSTADDR": "127.0.0.1", "PGPORT": "6543"}
    settings, _ = ConnectionSettings.from_url(url, {}, DriverFamily.LIBPQ, environ)
    explained = ConnectAttempt(settings).explain(
        psycopg.OperationalError("certificate verify failed: unable to get local issuer")
    )
    assert isinstance(explained, TLSVerificationFailed)
    assert f"{HOST} (dialled at 127.0.0.1:6543)" in str(explained)


# The AWS user guide's troubleshooting page ("Troubleshooting authentication errors").
IAM_FAILED = every_driver("28000", 'IAM authentication failed for user "admin"')


@pytest.mark.parametrize("error", IAM_FAILED, ids=ids(IAM_FAILED))
def test_iam_authentication_failed(error: BaseException) -> None:
    explained = context().explain(error)
    assert isinstance(explained, AuthenticationFailed)
    assert "refresh expired temporary credentials" in str(explained)


def test_unknown_role() -> None:
    error = psycopg2.OperationalError(libpq_text('role "nobody" does not exist'))
    explained = context("nobody").explain(error)
    assert isinstance(explained, AuthenticationFailed)
    assert "role 'nobody' must exist WITH LOGIN" in str(explained)


def test_no_sni() -> None:
    refusal = "unable to accept connection, sni was not received"
    error = psycopg.OperationalError(libpq_text(refusal))
    explained = context().explain(error)
    assert type(explained) is ConnectError
    assert "(SNI): pass the cluster endpoint as host" in str(explained)
