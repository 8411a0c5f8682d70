"""Engines for Aurora DSQL: a fresh IAM token per connection, and no connection past its hour.

:func:`create_async_dsql_engine` returns an ``AsyncEngine`` on
``auroradsql+asyncpg``; :func:`create_dsql_engine` an ``Engine`` on
``auroradsql+psycopg`` or ``auroradsql+psycopg2`` and keeps the argument
names of Amazon's ``aurora_dsql_sqlalchemy.create_dsql_engine`` (``host``,
``user``, ``driver``, ``dbname``, ``sslmode``, ``sslrootcert``,
``application_name``, ``pool_size``, ``max_overflow``, ``connect_args`` with
the connector's ``region``, ``profile``, ``token_duration_secs`` and
``custom_credentials_provider``), so switching is a change of import.

Every new physical connection gets its own token, signed by the shared
generator for the credentials source (:mod:`sqlalchemy_dsql.auth`); the async
engine signs through aioboto3, so refreshing temporary credentials never
blocks the event loop. Connections are retired before DSQL's 60-minute limit
and connections the server closed are replaced at checkout
(:mod:`sqlalchemy_dsql.pool`). A connection lost while in use raises
:class:`~sqlalchemy_dsql.errors.ConnectionLost`, which says whether COMMIT
was in flight.

TLS is verify-full by default, against the system trust store or
``sslrootcert``. ``hostaddr`` dials another address while tokens are signed
for, and the certificate is checked against, ``host`` (how the local
emulator's DSQL-shaped endpoint is reached). Anything weaker than
verify-full towards a ``*.on.aws`` host is refused unless
``allow_insecure_tls=True``.

A connection that cannot be opened raises a
:class:`~sqlalchemy_dsql.errors.ConnectError` subclass that says what is
wrong and what to do: :class:`~sqlalchemy_dsql.errors.AuthenticationFailed`,
:class:`~sqlalchemy_dsql.errors.TLSVerificationFailed` or
:class:`~sqlalchemy_dsql.errors.ClusterUnreachable`. Tokens and secret keys
never appear in logs, reprs, URLs or error messages.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import ipaddress
import logging
import os
import re
import socket
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import URL, Engine, create_engine, event, exc
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import QueuePool

from .auth import (
    DEFAULT_TOKEN_LIFETIME,
    Endpoint,
    action_for,
    async_token_generator,
    check_token_lifetime,
    resolve_endpoint,
    token_generator,
)
from .errors import (
    AuthenticationFailed,
    ClusterBusy,
    ClusterUnreachable,
    ConfigurationError,
    ConnectError,
    ConnectionLost,
    TLSVerificationFailed,
)
from .pool import (
    DEFAULT_MAX_CONNECTION_AGE,
    AsyncDSQLQueuePool,
    DSQLQueuePool,
    PoolCounters,
    checked_jitter,
    manage_lifetime,
)

__all__ = ["create_async_dsql_engine", "create_dsql_engine"]

_log = logging.getLogger("sqlalchemy_dsql.engine")
_SSLMODES = ("verify-full", "verify-ca", "require", "disable")
_COMMITTING = "auroradsql_committing"
# Keys of Amazon's connector that create_dsql_engine accepts inside connect_args.
_CONNECTOR_KEYS = {
    "region": "region",
    "profile": "profile",
    "token_duration_secs": "token_lifetime",
    "custom_credentials_provider": "credentials_provider",
}


class _VerifyAs(ssl.SSLContext):
    """A client context that checks the certificate against a fixed host name.

    Used with ``hostaddr``: the socket goes to one address while the
    certificate must match the DSQL endpoint the token was signed for.
    """

    verify_host: str

    def wrap_bio(self, *args: Any, **kwargs: Any) -> ssl.SSLObject:
        kwargs["server_hostname"] = self.verify_host
        return super().wrap_bio(*args, **kwargs)


def _check_tls(endpoint: Endpoint, sslmode: str, allow_insecure_tls: bool) -> None:
    if sslmode not in _SSLMODES:
        raise ConfigurationError(
            f"sslmode={sslmode!r} is not supported: use 'verify-full' (the default; Aurora DSQL "
            f"requires TLS), or one of {', '.join(repr(m) for m in _SSLMODES[1:])} towards a "
            f"proxy or emulator"
        )
    if sslmode != "verify-full" and endpoint.is_dsql and not allow_insecure_tls:
        raise ConfigurationError(
            f"sslmode={sslmode!r} towards {endpoint.host} would send the IAM token over a "
            f"connection whose server is not verified; use sslmode='verify-full' (Amazon Root "
            f"CA 1 is in the system trust store), or pass allow_insecure_tls=True if you "
            f"really mean it"
        )


def _tls_context(
    sslmode: str,
    sslrootcert: str | None,
    verify_as: str | None,
    direct_tls: bool,
) -> ssl.SSLContext | bool:
    """The ``ssl`` argument for asyncpg."""
    if sslmode == "disable":
        return False
    if verify_as:
        pinned = _VerifyAs(ssl.PROTOCOL_TLS_CLIENT)
        pinned.verify_host = verify_as
        context: ssl.SSLContext = pinned
    else:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = sslmode == "verify-full"
    context.verify_mode = ssl.CERT_NONE if sslmode == "require" else ssl.CERT_REQUIRED
    if sslrootcert in (None, "system"):
        context.load_default_certs()
    else:
        _check_ca_file(sslrootcert, context)
    if direct_tls:
        # asyncpg sets ALPN only on contexts it builds; direct TLS requires it.
        context.set_alpn_protocols(["postgresql"])
    return context


def _check_ca_file(sslrootcert: str | None, context: ssl.SSLContext | None = None) -> None:
    """Load ``sslrootcert`` into ``context`` (or a scratch one), failing with advice."""
    if sslrootcert in (None, "system"):
        return
    try:
        (context or ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)).load_verify_locations(
            cafile=sslrootcert
        )
    except (OSError, ssl.SSLError) as error:
        raise ConfigurationError(
            f"cannot load the CA file sslrootcert={sslrootcert!r} "
            f"({type(error).__name__}: {error.strerror or error}); pass the path of a PEM "
            f"file, or 'system' for the system trust store"
        ) from None


def _quoted(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


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
class _ConnectContext:
    """What the error explanations need to know about the connection attempt."""

    endpoint: Endpoint
    user: str
    dial: str | None  # None: the driver's default (libpq's PGHOSTADDR, else the host name)
    port: int | str | None  # None: the driver's default (PGPORT, else 5432)
    sslrootcert: str | None
    token_lifetime: int
    connect_timeout: float

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
            return self._unreachable(f"{type(error).__name__}: {error}")
        if any(
            marker in lowered
            for marker in (
                "connection refused",
                "could not translate host name",
                "timeout expired",
                "no route to host",
                "network is unreachable",
            )
        ):
            return self._unreachable(_server_reason(error))
        return None

    def _target(self) -> str:
        # What the driver used: it reads the environment when the attempt starts, as here.
        port = self.port if self.port is not None else os.environ.get("PGPORT") or 5432
        dial = self.dial or os.environ.get("PGHOSTADDR") or self.endpoint.host
        if dial != self.endpoint.host:
            return f"{self.endpoint.host} (dialled at {dial}:{port})"
        return f"{self.endpoint.host}:{port}"

    def _tls(self, reason: str) -> TLSVerificationFailed:
        trust = (
            "the system trust store"
            if self.sslrootcert in (None, "system")
            else f"sslrootcert={self.sslrootcert!r}"
        )
        return TLSVerificationFailed(
            f"could not verify the TLS certificate of {self._target()}: {reason}. The "
            f"certificate must be issued for {self.endpoint.host} by a CA in {trust}. For "
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
        action = action_for(self.user)
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
                f"a token for user {self.user!r} must be signed for dsql:{action}: 'admin' "
                f"logs in with DbConnectAdmin tokens (generate_db_connect_admin_auth_token), "
                f"every other role with DbConnect ones (generate_db_connect_auth_token)"
            )
        elif any(
            word in lowered for word in ("expired", "future", "signing time", "not yet current")
        ):
            advice.append(
                f"each connection gets a token valid for {self.token_lifetime} s from signing, "
                f"so check this machine's clock (the server compares it with its own)"
            )
        if "host" in lowered or "endpoint" in lowered:
            advice.append(
                f"tokens are signed for host {self.endpoint.host!r}: pass the cluster's "
                f"endpoint as host (to dial another address, use hostaddr=)"
            )
        if "wrong user to action mapping" not in lowered and (
            "action" in lowered or "not authorized" in lowered or "dbconnect" in lowered
        ):
            advice.append(
                f"user {self.user!r} logs in with a {action} token: the IAM identity behind "
                f"your credentials needs dsql:{action} on this cluster"
            )
        if not advice:
            advice.append(
                f"the IAM identity behind your credentials needs dsql:{action} on this cluster, "
                f"for region {self.endpoint.region!r}, and this machine's clock must be right"
            )
        if self.user != "admin":
            advice.append(
                f"role {self.user!r} must exist WITH LOGIN and be linked to that IAM identity "
                f"(AWS IAM GRANT {self.user} TO '<role arn>')"
            )
        return AuthenticationFailed(
            f"the cluster {self.endpoint.host} refused the IAM token for user {self.user!r}: "
            f"{reason}. What to do: {'; '.join(advice)}"
        )

    def _unreachable(self, reason: str) -> ClusterUnreachable:
        return ClusterUnreachable(
            f"cannot reach {self._target()} ({reason}). Check the endpoint (cluster id and "
            f"region), DNS, the network path (VPC, security groups, proxy) and the port; the "
            f"connection attempt waits at most connect_timeout={self.connect_timeout} s"
        )


def _explain_lost_connections(engine: Engine, endpoint: Endpoint, counters: PoolCounters) -> None:
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
        _log.debug("connection to %s lost in use (during commit: %s)", endpoint.host, during_commit)
        return ConnectionLost(
            f"lost the connection to {endpoint.host} (closed by the server or the network, "
            f"for example DSQL's 60-minute limit): {original.orig}. {outcome}",
            original,
            during_commit=during_commit,
        )


def create_async_dsql_engine(
    host: str,
    *,
    user: str = "admin",
    region: str | None = None,
    database: str = "postgres",
    port: int | None = None,
    schema: str | None = None,
    session: Any = None,
    profile: str | None = None,
    credentials_provider: Any = None,
    token_lifetime: int = DEFAULT_TOKEN_LIFETIME,
    sslmode: str = "verify-full",
    sslrootcert: str | None = None,
    hostaddr: str | None = None,
    direct_tls: bool = False,
    allow_insecure_tls: bool = False,
    application_name: str | None = None,
    max_connection_age: float = DEFAULT_MAX_CONNECTION_AGE,
    connection_age_jitter: float | None = None,
    connect_timeout: float = 30.0,
    server_settings: Mapping[str, str] | None = None,
    **engine_kwargs: Any,
) -> AsyncEngine:
    """An ``AsyncEngine`` on ``auroradsql+asyncpg`` that authenticates with fresh IAM tokens.

    ``host`` is the cluster endpoint, or a cluster id with ``region``.
    ``port`` defaults to ``PGPORT`` from the environment, else 5432.
    ``schema`` sets ``search_path`` on every new connection. Credentials come
    from ``session`` (an ``aioboto3.Session``), ``profile``,
    ``credentials_provider`` (a botocore or aiobotocore credential provider)
    or the default chain. ``token_lifetime`` is each token's validity in
    seconds. ``max_connection_age`` and ``connection_age_jitter`` (seconds)
    bound each connection's life. Other keyword arguments go to
    ``create_async_engine`` (``pool_size``, ``max_overflow``, ``pool_timeout``,
    ``echo``, ...).
    """
    import asyncpg

    endpoint = resolve_endpoint(host, region)
    jitter = checked_jitter(max_connection_age, connection_age_jitter)
    check_token_lifetime(token_lifetime)
    _check_tls(endpoint, sslmode, allow_insecure_tls)
    tls = _tls_context(sslmode, sslrootcert, endpoint.host if hostaddr else None, direct_tls)
    generator_for_this_loop = functools.partial(
        async_token_generator,
        endpoint.region,
        session=session,
        profile=profile,
        credentials_provider=credentials_provider,
    )
    settings = dict(server_settings or {})
    if application_name is not None:
        settings["application_name"] = application_name
    set_search_path = f"SET search_path = {_quoted(schema)}" if schema else None
    dial = hostaddr or endpoint.host
    explainer = _ConnectContext(
        endpoint, user, dial, port, sslrootcert, token_lifetime, connect_timeout
    )
    counters = PoolCounters()

    async def connect() -> Any:
        generator = generator_for_this_loop()
        token = await generator.token(endpoint.host, user, token_lifetime)
        counters.tokens_minted += 1
        try:
            connection = await asyncpg.connect(
                host=dial,
                port=port,
                user=user,
                password=token,
                database=database,
                ssl=tls,
                direct_tls=direct_tls,
                timeout=connect_timeout,
                server_settings=settings or None,
            )
        except Exception as error:
            explained = explainer.explain(error)
            if explained is None:
                raise
            raise explained from error
        if set_search_path:
            await connection.execute(set_search_path)
        counters.connections_opened += 1
        _log.debug("opened a connection to %s as %s", endpoint.host, user)
        return connection

    engine_kwargs.setdefault("poolclass", AsyncDSQLQueuePool)
    engine = create_async_engine(
        URL.create(
            "auroradsql+asyncpg", username=user, host=endpoint.host, port=port, database=database
        ),
        async_creator=connect,
        **engine_kwargs,
    )
    manage_lifetime(engine.sync_engine, counters, max_connection_age, jitter)
    _explain_lost_connections(engine.sync_engine, endpoint, counters)
    return engine


def _numeric_address(hostaddr: str) -> str:
    """libpq's ``hostaddr`` must be an IP address; resolve a name once, here."""
    try:
        ipaddress.ip_address(hostaddr)
    except ValueError:
        try:
            return socket.gethostbyname(hostaddr)
        except OSError as error:
            raise ConfigurationError(
                f"hostaddr={hostaddr!r} does not resolve ({error}); pass an IP address"
            ) from None
    return hostaddr


def create_dsql_engine(
    host: str,
    user: str = "admin",
    driver: str = "psycopg",
    dbname: str = "postgres",
    sslmode: str = "verify-full",
    sslrootcert: str = "system",
    application_name: str = "sqlalchemy",
    pool_size: int = 5,
    max_overflow: int = 10,
    connect_args: dict[str, Any] | None = None,
    *,
    region: str | None = None,
    port: int | None = None,
    schema: str | None = None,
    session: Any = None,
    profile: str | None = None,
    credentials_provider: Any = None,
    token_lifetime: int = DEFAULT_TOKEN_LIFETIME,
    hostaddr: str | None = None,
    direct_tls: bool | None = None,
    allow_insecure_tls: bool = False,
    max_connection_age: float = DEFAULT_MAX_CONNECTION_AGE,
    connection_age_jitter: float | None = None,
    connect_timeout: int = 30,
    **engine_kwargs: Any,
) -> Engine:
    """An ``Engine`` on ``auroradsql+psycopg`` (or ``+psycopg2``) with fresh IAM tokens.

    The positional arguments are those of Amazon's ``create_dsql_engine``;
    ``connect_args`` may carry its connector's ``region``, ``profile``,
    ``token_duration_secs`` and ``custom_credentials_provider`` (or use the
    keyword arguments of the same meaning); other ``connect_args`` go to the
    driver. ``session`` is a ``boto3.Session``. As with Amazon's helper, libpq's
    environment fills in what is not given (``PGPORT``, ``PGHOSTADDR``, ...), and
    TLS starts directly, without the SSLRequest round trip, when the driver's
    libpq is version 17 or newer (``direct_tls=None``; pass ``True`` or ``False``
    to choose). The other keywords mean what they mean for
    :func:`create_async_dsql_engine`; the rest go to ``create_engine``.
    """
    if driver not in ("psycopg", "psycopg2"):
        # Amazon's wording and class (ValueError), so that code handling them keeps working.
        raise ConfigurationError(
            f"Unsupported driver: {driver!r}. Use 'psycopg' or 'psycopg2' here, and "
            f"create_async_dsql_engine() for asyncio"
        )
    options: dict[str, Any] = {
        "region": region,
        "profile": profile,
        "token_lifetime": token_lifetime,
        "credentials_provider": credentials_provider,
    }
    driver_args = dict(connect_args or {})
    for key, option in _CONNECTOR_KEYS.items():
        if key in driver_args:
            options[option] = driver_args.pop(key)
    # Amazon's helper lets connect_args override these; they go through the same checks.
    sslmode = driver_args.pop("sslmode", sslmode)
    sslrootcert = driver_args.pop("sslrootcert", sslrootcert)
    hostaddr = driver_args.pop("hostaddr", hostaddr)
    endpoint = resolve_endpoint(host, options["region"])
    lifetime = int(options["token_lifetime"])
    jitter = checked_jitter(max_connection_age, connection_age_jitter)
    check_token_lifetime(lifetime)
    _check_tls(endpoint, sslmode, allow_insecure_tls)
    if sslmode != "disable":
        _check_ca_file(sslrootcert)
    generator = token_generator(
        endpoint.region,
        session=session,
        profile=options["profile"],
        credentials_provider=options["credentials_provider"],
    )
    address = _numeric_address(hostaddr) if hostaddr else None
    explainer = _ConnectContext(
        endpoint,
        user,
        address,
        driver_args.get("port", port),
        sslrootcert,
        lifetime,
        connect_timeout,
    )
    counters = PoolCounters()
    libpq: dict[str, Any] = {
        "sslmode": sslmode,
        "application_name": application_name,
        "connect_timeout": connect_timeout,
    }
    if sslmode != "disable":
        libpq["sslrootcert"] = sslrootcert
    if address:
        libpq["hostaddr"] = address
    if direct_tls is None:
        direct_tls = sslmode != "disable" and _libpq_version(driver) >= 170000
    if direct_tls:
        libpq["sslnegotiation"] = "direct"
    libpq.update(driver_args)

    engine_kwargs.setdefault("poolclass", DSQLQueuePool)
    engine = create_engine(
        URL.create(
            f"auroradsql+{driver}", username=user, host=endpoint.host, port=port, database=dbname
        ),
        connect_args=libpq,
        **_pool_arguments(engine_kwargs, pool_size, max_overflow),
    )

    @event.listens_for(engine, "do_connect")
    def _connect_with_token(dialect: Any, record: Any, cargs: Any, cparams: Any) -> Any:
        cparams["password"] = generator.token(endpoint.host, user, lifetime)
        counters.tokens_minted += 1
        try:
            connection = dialect.loaded_dbapi.connect(*cargs, **cparams)
        except Exception as error:
            explained = explainer.explain(error)
            if explained is None:
                raise
            raise explained from error
        if schema:
            with connection.cursor() as cursor:
                cursor.execute(f"SET search_path = {_quoted(schema)}")
            connection.commit()
        counters.connections_opened += 1
        _log.debug("opened a connection to %s as %s", endpoint.host, user)
        return connection

    manage_lifetime(engine, counters, max_connection_age, jitter)
    _explain_lost_connections(engine, endpoint, counters)
    return engine


def _libpq_version(driver: str) -> int:
    """The version of the libpq ``driver`` runs on, as libpq gives it (170002 for 17.2)."""
    if driver == "psycopg":
        from psycopg import pq

        return int(pq.version())
    import psycopg2.extensions

    return int(psycopg2.extensions.libpq_version())


def _pool_arguments(
    engine_kwargs: dict[str, Any], pool_size: int, max_overflow: int
) -> dict[str, Any]:
    """Amazon's defaults for pool_size / max_overflow apply only to queue pools."""
    poolclass = engine_kwargs["poolclass"]
    if isinstance(poolclass, type) and issubclass(poolclass, QueuePool):
        return {"pool_size": pool_size, "max_overflow": max_overflow, **engine_kwargs}
    return engine_kwargs
