"""Why a connection failed or was lost, in words that say what to do.

Drivers report a refused or failed connection in their own ways (asyncpg's
exception classes, libpq's message text), and Aurora DSQL words its refusals
in its own. :class:`ConnectAttempt` turns them into one of
:class:`~sqlalchemy_dsql.errors.ConnectError`'s subclasses, naming the
endpoint, what was dialled and the setting to change:
:class:`~sqlalchemy_dsql.errors.AuthenticationFailed`,
:class:`~sqlalchemy_dsql.errors.TLSVerificationFailed`,
:class:`~sqlalchemy_dsql.errors.ClusterUnreachable` or
:class:`~sqlalchemy_dsql.errors.ClusterBusy`.

:func:`explain_lost_connections` makes a connection lost while in use raise
:class:`~sqlalchemy_dsql.errors.ConnectionLost`, which says whether COMMIT
was in flight (then the outcome is unknown).

The wordings matched are those recorded on live clusters
(docs/dsql-evidence.md) and the local emulator's.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import re
import socket
import ssl
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, event, exc

from .auth import action_for
from .errors import (
    AuthenticationFailed,
    ClusterBusy,
    ClusterUnreachable,
    ConnectError,
    ConnectionLost,
    TLSVerificationFailed,
)
from .pool import PoolCounters
from .settings import ConnectionSettings

__all__ = ["ConnectAttempt", "explain_lost_connections"]

_log = logging.getLogger("sqlalchemy_dsql.diagnosis")
_COMMITTING = "auroradsql_committing"


def _server_reason(error: BaseException) -> str:
    text = str(error).strip()
    # libpq: 'connection to server at "h" (a), port p failed: FATAL:  <reason>'
    found = re.search(r"FATAL:\s+(.*)", text, re.DOTALL)
    return (found.group(1) if found else text).strip().splitlines()[0]


def _server_hint(error: BaseException) -> str | None:
    """The HINT of the server's refusal: asyncpg keeps it apart, libpq appends a line."""
    hint = getattr(error, "hint", None)
    if isinstance(hint, str) and hint.strip():
        return hint.strip()
    found = re.search(r"^HINT:\s+(.+)$", str(error), re.MULTILINE)
    return found.group(1).strip() if found else None


# How Aurora DSQL words its connection refusals (SQLSTATE and text), as recorded on live
# clusters; the emulator's wordings are matched too. Sources: docs/dialect.md.
_PLAINTEXT_REFUSED = ("ssl is mandatory", "ssl/tls is required")
_WAKING_UP = "waking up cluster"
_RATE_EXCEEDED = "rate exceeded"  # 53400
_CLUSTER_BUSY = (_WAKING_UP, _RATE_EXCEEDED, "too many open connections", "too many connections")


@dataclass(frozen=True, slots=True)
class ConnectAttempt:
    """Explains the failures of connection attempts made with ``settings``."""

    settings: ConnectionSettings

    def explain(self, error: BaseException) -> ConnectError | None:
        """Our error for a failed connection attempt, or None to let ``error`` through."""
        text = str(error)
        lowered = text.lower()
        if isinstance(error, ssl.SSLCertVerificationError) or (
            "certificate verify failed" in lowered
            or ("server certificate" in lowered and "does not match" in lowered)
        ):
            return self._tls(_server_reason(error))
        # DSQL: 08P01 "SSL is mandatory" (asyncpg: ProtocolViolationError).
        if any(marker in lowered for marker in _PLAINTEXT_REFUSED):
            return ConnectError(
                f"{self._target()} requires TLS ({_server_reason(error)}); connect with "
                f"sslmode='verify-full' (the default)"
            )
        if "sni was not received" in lowered:
            return ConnectError(
                f"{self._target()} refused the connection: {_server_reason(error)}. Aurora DSQL "
                f"needs the endpoint's name in the TLS handshake (SNI): pass the cluster endpoint "
                f"as host (hostaddr= to dial another address) with a client on libpq 14 or newer"
            )
        sqlstate = getattr(error, "sqlstate", None) or getattr(error, "pgcode", None)
        if sqlstate == "3D000" or ("database" in lowered and "does not exist" in lowered):
            return ConnectError(
                f"{self._target()} refused the connection: {_server_reason(error)}. Aurora DSQL "
                f"has a single database, 'postgres': leave database= (dbname=) at its default"
            )
        if sqlstate in ("53300", "53400") or any(marker in lowered for marker in _CLUSTER_BUSY):
            return self._busy(_server_reason(error), lowered, sqlstate)
        if (
            (sqlstate or "").startswith("28")
            or "access denied" in lowered
            # DSQL: 'IAM authentication failed for user "..."'; PostgreSQL: password ...
            or "authentication failed" in lowered
            # A token valid for over a week: refused before its signature is checked.
            or "x-amz-expires" in lowered
            or ("role" in lowered and "does not exist" in lowered)
        ):
            return self._refused(_server_reason(error), _server_hint(error))
        if isinstance(error, ssl.SSLError):
            return ConnectError(
                f"the TLS handshake with {self._target()} failed ({error.reason or error}); "
                f"if direct_tls=True, the server may not accept direct TLS"
            )
        # asyncio.TimeoutError is not the builtin TimeoutError before Python 3.11.
        unreachable = (socket.gaierror, ConnectionRefusedError, TimeoutError, asyncio.TimeoutError)
        if isinstance(error, unreachable) or (
            isinstance(error, OSError)
            and error.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ETIMEDOUT)
        ):
            return self._unreachable(
                f"{type(error).__name__}: {error}",
                unresolved=isinstance(error, socket.gaierror),
            )
        if any(
            marker in lowered
            for marker in (
                "connection refused",
                "could not translate host name",
                "failed to resolve host",  # psycopg's async connect resolves names itself
                "timeout expired",
                "no route to host",
                "network is unreachable",
            )
        ):
            unresolved = any(
                marker in lowered
                for marker in ("could not translate host name", "failed to resolve host")
            )
            return self._unreachable(_server_reason(error), unresolved=unresolved)
        return None

    def _target(self) -> str:
        settings = self.settings
        if settings.dial != settings.endpoint.host:
            return f"{settings.endpoint.host} (dialled at {settings.dial}:{settings.port})"
        return f"{settings.endpoint.host}:{settings.port}"

    def _tls(self, reason: str) -> TLSVerificationFailed:
        trust = self.settings.trust
        return TLSVerificationFailed(
            f"could not verify the TLS certificate of {self._target()}: {reason}. The "
            f"certificate must be issued for {self.settings.endpoint.host} by a CA in {trust}. For "
            f"Aurora DSQL that is Amazon Root CA 1, in the system trust store "
            f"(sslrootcert='system'); for a proxy or the local emulator pass its CA file as "
            f"sslrootcert=..."
        )

    def _busy(self, reason: str, lowered: str, sqlstate: str | None) -> ClusterBusy:
        if _WAKING_UP in lowered:
            advice = (
                "the cluster was idle and is waking up (state INACTIVE): retry in a few "
                "seconds, or wait until `aws dsql get-cluster` reports ACTIVE"
            )
        elif sqlstate == "53400" or _RATE_EXCEEDED in lowered:
            advice = (
                "Aurora DSQL accepts about 100 new connections per second per cluster (bursts "
                "of 1,000): retry with backoff, and open connections more slowly (smaller "
                "pools, a longer max_connection_age); a new token does not help"
            )
        else:
            advice = (
                "the cluster has its maximum of 10,000 open connections: close idle ones "
                "(smaller pool_size / max_overflow across your processes), then retry"
            )
        return ClusterBusy(f"{self._target()} did not accept a new connection: {reason}. {advice}")

    def _refused(self, reason: str, hint: str | None = None) -> AuthenticationFailed:
        user, endpoint = self.settings.user, self.settings.endpoint
        action = action_for(user)
        # DSQL says why in the hint (e.g. "Signature expired: ..."), after a generic reason.
        if hint and hint not in reason:
            reason = f"{reason} (HINT: {hint})"
        lowered = reason.lower()
        advice = []
        if "iam authentication failed" in lowered:
            advice.append(
                "a token is accepted for at most a week, and only while the credentials that "
                "signed it are valid: refresh expired temporary credentials (an assumed role, "
                "SSO) and connect again"
            )
        if "x-amz-expires" in lowered:
            advice.append(
                "a token may be valid for at most one week (604800 s): lower token_lifetime "
                "(token_duration_secs)"
            )
        if "wrong user to action mapping" in lowered:
            advice.append(
                f"a token for user {user!r} must be signed for dsql:{action}: 'admin' "
                f"logs in with DbConnectAdmin tokens (generate_db_connect_admin_auth_token), "
                f"every other role with DbConnect ones (generate_db_connect_auth_token)"
            )
        elif any(
            word in lowered for word in ("expired", "future", "signing time", "not yet current")
        ):
            advice.append(
                f"each connection gets a token valid for {self.settings.token_lifetime} s from "
                f"signing, "
                f"so check this machine's clock (the server compares it with its own)"
            )
        if "host" in lowered or "endpoint" in lowered:
            advice.append(
                f"tokens are signed for host {endpoint.host!r}: pass the cluster's "
                f"endpoint as host (to dial another address, use hostaddr=)"
            )
        if "wrong user to action mapping" not in lowered and (
            "action" in lowered or "not authorized" in lowered or "dbconnect" in lowered
        ):
            advice.append(
                f"user {user!r} logs in with a {action} token: the IAM identity behind "
                f"your credentials needs dsql:{action} on this cluster"
            )
        if not advice:
            advice.append(
                f"the IAM identity behind your credentials needs dsql:{action} on this cluster, "
                f"for region {endpoint.region!r}, and this machine's clock must be right"
            )
        if user != "admin":
            advice.append(
                f"role {user!r} must exist WITH LOGIN and be linked to that IAM identity "
                f"(AWS IAM GRANT {user} TO '<role arn>')"
            )
        return AuthenticationFailed(
            f"the cluster {endpoint.host} refused the IAM token for user {user!r}: "
            f"{reason}. What to do: {'; '.join(advice)}"
        )

    def _unreachable(self, reason: str, *, unresolved: bool = False) -> ClusterUnreachable:
        advice = (
            "Check the endpoint (cluster id and region), DNS, the network path (VPC, security "
            "groups, proxy) and the port; the connection attempt waits at most "
            f"connect_timeout={self.settings.connect_timeout} s"
        )
        if unresolved and self.settings.hostaddr is None:
            # The endpoint of an emulator or a tunnel is not in DNS: say how to dial it.
            advice = (
                f"The name {self.settings.endpoint.host} does not resolve: check the cluster id "
                f"and region. To reach it through another address (dsql-local, a tunnel, a "
                f"proxy), keep the endpoint as the host and set hostaddr=<address> in the URL, "
                f"or PGHOSTADDR in the environment (dsql-local prints it)"
            )
        return ClusterUnreachable(f"cannot reach {self._target()} ({reason}). {advice}")


def explain_lost_connections(engine: Engine, endpoint: str, counters: PoolCounters) -> None:
    """Say "connection lost" (and whether COMMIT was in flight) instead of a driver error."""

    # Set when COMMIT starts, cleared when a ROLLBACK starts: only the two of them
    # fail without a statement, so together they tell which one lost the connection.
    @event.listens_for(engine, "commit")
    def _commit(conn: Any) -> None:
        conn.info[_COMMITTING] = True

    @event.listens_for(engine, "rollback")
    def _rollback(conn: Any) -> None:
        if not conn.invalidated:  # an invalidated connection has no info left to clear
            conn.info.pop(_COMMITTING, None)

    @event.listens_for(engine, "handle_error")
    def _lost(context: Any) -> BaseException | None:
        original = context.sqlalchemy_exception
        if not context.is_disconnect or not isinstance(original, exc.DBAPIError):
            return None
        # SQLAlchemy would mark every pooled connection stale and reopen them all. DSQL
        # closes sessions one at a time (each at its own hour), and the checkout check
        # replaces any other closed one without a round trip, so only this one goes:
        # otherwise one lost connection reopens the pool, uncounted, against DSQL's quota
        # of new connections per second.
        context.invalidate_pool_on_disconnect = False
        connection = context.connection
        during_commit = False
        if connection is not None and not connection.invalidated:
            committing = connection.info.pop(_COMMITTING, False)
            during_commit = committing and context.statement is None
        counters.lost_in_use += 1
        if during_commit:
            outcome = (
                "the connection was lost while COMMIT was in flight, so whether the transaction "
                "was committed is unknown: check before repeating it, or retry only if it is "
                "idempotent"
            )
        else:
            outcome = (
                "the open transaction, if any, was rolled back by the server; retry it on a new "
                "connection (sqlalchemy_dsql.run_transaction does)"
            )
        _log.debug("connection to %s lost in use (during commit: %s)", endpoint, during_commit)
        return ConnectionLost(
            f"lost the connection to {endpoint} (closed by the server or the network, "
            f"for example DSQL's 60-minute limit): {original.orig}. {outcome}",
            original,
            during_commit=during_commit,
        )
