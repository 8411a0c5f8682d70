"""Verification of Aurora DSQL IAM authentication tokens.

A DSQL token is a SigV4 presigned ``GET https://<endpoint>/?Action=...`` URL
without its scheme. The emulator accepts a token only if botocore, given the
same request, date and credentials, produces the same signature; the checks
around it (host, region, service, action, expiry) mirror what DSQL refuses.
"""

from __future__ import annotations

import datetime as _dt
import hmac
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlsplit

from botocore.auth import SIGV4_TIMESTAMP, SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

# Clearly fake, fixed test credentials: tokens minted with them are only good
# against this emulator.
TEST_ACCESS_KEY_ID = "AKIADSQLLOCALTESTKEY"
TEST_SECRET_ACCESS_KEY = "dsql-local-test-secret-access-key-not-real"

ADMIN_USER = "admin"
_MAX_EXPIRES = 7 * 24 * 3600
_CLOCK_SKEW = _dt.timedelta(minutes=5)


def fixed_test_credentials() -> Credentials:
    return Credentials(TEST_ACCESS_KEY_ID, TEST_SECRET_ACCESS_KEY)


class TokenRejected(Exception):
    """The password is not a DSQL token this cluster accepts; the message says why.

    The server sends the message as the HINT of DSQL's ``access denied``
    refusal. Where a source records DSQL's (SigV4's) words for the reason,
    the message is those words; otherwise it is the emulator's own.
    """


@dataclass(frozen=True, slots=True)
class TokenVerifier:
    """Checks tokens as a cluster would.

    ``connect_only`` holds access key ids whose IAM policy (as this emulator
    pretends) allows ``dsql:DbConnect`` but not ``dsql:DbConnectAdmin``.
    ``clock_offset`` is how many seconds the cluster's clock runs ahead of
    the machine's, to show what a skewed client clock does.
    """

    endpoint: str
    region: str
    credentials: tuple[Credentials, ...]
    connect_only: frozenset[str] = frozenset()
    clock_offset: float = 0.0

    @classmethod
    def create(
        cls,
        endpoint: str,
        region: str,
        credentials: Iterable[Credentials],
        *,
        connect_only: Iterable[str] = (),
        clock_offset: float = 0.0,
    ) -> TokenVerifier:
        return cls(
            endpoint.lower(), region, tuple(credentials), frozenset(connect_only), clock_offset
        )

    def verify(self, user: str, token: str, now: _dt.datetime | None = None) -> None:
        """Raise :class:`TokenRejected` unless ``token`` lets ``user`` connect now."""
        now = (now or _dt.datetime.now(_dt.timezone.utc)) + _dt.timedelta(seconds=self.clock_offset)
        parts = urlsplit("https://" + token.strip())
        if parts.path not in ("", "/") or not parts.query:
            raise TokenRejected("the password is not an IAM authentication token")
        params = dict(parse_qsl(parts.query, keep_blank_values=True))
        host = (parts.hostname or "").lower()
        if host != self.endpoint:
            raise TokenRejected(
                f"the token was generated for host {host!r}, not for this cluster's "
                f"endpoint {self.endpoint!r}"
            )
        action = params.get("Action")
        expected_action = "DbConnectAdmin" if user == ADMIN_USER else "DbConnect"
        if action != expected_action:
            raise TokenRejected(
                f"user {user!r} needs a token for action {expected_action}, got {action!r}"
            )
        if params.get("X-Amz-Algorithm") != "AWS4-HMAC-SHA256":
            raise TokenRejected("the token is not signed with AWS4-HMAC-SHA256")
        scope = params.get("X-Amz-Credential", "").split("/")
        if len(scope) != 5 or scope[4] != "aws4_request":
            raise TokenRejected("the token's credential scope is malformed")
        access_key, _date, region, service, _ = scope
        if service != "dsql":
            raise TokenRejected(f"the token is signed for service {service!r}, not 'dsql'")
        if region != self.region:
            raise TokenRejected(
                f"the token is signed for region {region!r}, this cluster is in {self.region!r}"
            )
        signed_at = self._signed_at(params.get("X-Amz-Date", ""))
        expires = self._expires(params.get("X-Amz-Expires", ""))
        if signed_at - _CLOCK_SKEW > now:
            # SigV4's wording for a request signed ahead of the server's clock.
            raise TokenRejected(
                f"Signature not yet current: {_stamp(signed_at)} is still later than "
                f"{_stamp(now + _CLOCK_SKEW)} ({_stamp(now)} + 5 min.)"
            )
        if signed_at + _dt.timedelta(seconds=expires) < now:
            # DSQL's hint starts "Signature expired:" (agent-plugins troubleshooting.md,
            # observed 2026-10-01); the rest follows SigV4's wording for the same check.
            raise TokenRejected(
                f"Signature expired: {_stamp(signed_at)} is now earlier than "
                f"{_stamp(now - _dt.timedelta(seconds=expires))} ({_stamp(now)} - {expires} sec.)"
            )
        credentials = self._credentials_for(access_key, params.get("X-Amz-Security-Token"))
        expected = _signature(credentials, host, action, region, params["X-Amz-Date"], expires)
        if not hmac.compare_digest(expected, params.get("X-Amz-Signature", "")):
            raise TokenRejected("the token's signature does not match")
        if action == "DbConnectAdmin" and access_key in self.connect_only:
            raise TokenRejected(
                "the IAM identity that signed the token is not authorized to perform "
                "dsql:DbConnectAdmin on this cluster"
            )

    def _credentials_for(self, access_key: str, session_token: str | None) -> Credentials:
        for credentials in self.credentials:
            if credentials.access_key == access_key and credentials.token == session_token:
                return credentials
        raise TokenRejected("the token is signed with credentials this cluster does not know")

    @staticmethod
    def _signed_at(value: str) -> _dt.datetime:
        try:
            return _dt.datetime.strptime(value, SIGV4_TIMESTAMP).replace(tzinfo=_dt.timezone.utc)
        except ValueError:
            raise TokenRejected("the token's X-Amz-Date is malformed") from None

    @staticmethod
    def _expires(value: str) -> int:
        if value.isdigit() and int(value) > _MAX_EXPIRES:
            # DSQL's words: Amazon's connector tests assert them for a 604801 s token
            # (aurora-dsql-connectors python/connector test_integration_psycopg_common.py).
            raise TokenRejected(
                f"X-Amz-Expires must be less than a week (in seconds) that is {_MAX_EXPIRES}"
            )
        if not value.isdigit() or int(value) < 1:
            raise TokenRejected("the token's X-Amz-Expires must be between 1 s and one week")
        return int(value)


def _stamp(moment: _dt.datetime) -> str:
    return moment.strftime(SIGV4_TIMESTAMP)


def _signature(
    credentials: Credentials, host: str, action: str, region: str, timestamp: str, expires: int
) -> str:
    """The signature botocore gives the presigned request at ``timestamp``."""
    signer = SigV4QueryAuth(credentials, "dsql", region, expires=expires)
    request = AWSRequest(method="GET", url=f"https://{host}/", data={"Action": action})
    request.context["timestamp"] = timestamp
    # The step of add_auth() that builds the query string, without its clock.
    signer._modify_request_before_signing(request)  # type: ignore[attr-defined]
    canonical = signer.canonical_request(request)
    return str(signer.signature(signer.string_to_sign(request, canonical), request))
