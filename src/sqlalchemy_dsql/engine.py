"""Engines for Aurora DSQL: a fresh IAM token per connection, and no connection past its hour.

:func:`create_async_dsql_engine` returns an ``AsyncEngine`` on
``auroradsql+asyncpg``. Every new physical connection gets its own token,
signed by a shared :class:`~sqlalchemy_dsql.auth.AsyncTokenGenerator` without
blocking the event loop. Every connection carries a retirement time: DSQL
closes sessions after 60 minutes, so the engine retires them at checkout after
``max_connection_age`` (55 minutes by default) minus a random per-connection
jitter, so that a pool opened at once does not reconnect at once against
DSQL's 100-connections-per-second quota. A connection the server closed anyway
(killed, network) is noticed at checkout, where asyncpg already knows its
socket is gone, and replaced before the caller runs anything: this costs
nothing, unlike ``pool_pre_ping``, which adds a ``BEGIN; ROLLBACK;`` round
trip to every checkout (enable it if your network drops connections silently).

TLS is verify-full by default, against the system trust store or
``sslrootcert``. ``hostaddr`` dials another address while tokens are signed
for, and the certificate is checked against, ``host`` (how the local emulator's
DSQL-shaped endpoint is reached).
"""

from __future__ import annotations

import logging
import random
import ssl
import time
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from sqlalchemy import Engine, event, exc
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from .auth import DEFAULT_TOKEN_LIFETIME, async_token_generator, resolve_endpoint
from .errors import ConfigurationError

__all__ = ["EngineCounters", "create_async_dsql_engine", "engine_counters"]

DEFAULT_MAX_CONNECTION_AGE = 55 * 60.0
_log = logging.getLogger("sqlalchemy_dsql.engine")
_RETIRE_AT = "auroradsql_retire_at"


@dataclass
class EngineCounters:
    """What the engine's pool did: connections opened, retired (and why), tokens minted."""

    connections_opened: int = 0
    retired_for_age: int = 0
    replaced_after_close: int = 0
    tokens_minted: int = 0

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


_counters: weakref.WeakKeyDictionary[Engine, EngineCounters] = weakref.WeakKeyDictionary()


def engine_counters(engine: AsyncEngine | Engine) -> EngineCounters:
    """The counters of an engine made by this module."""
    sync_engine = engine.sync_engine if isinstance(engine, AsyncEngine) else engine
    try:
        return _counters[sync_engine]
    except KeyError:
        raise ConfigurationError(
            "this engine was not made by create_async_dsql_engine(); it has no DSQL counters"
        ) from None


class _VerifyAs(ssl.SSLContext):
    """A client context that checks the certificate against a fixed host name.

    Used with ``hostaddr``: the socket goes to one address while the
    certificate must match the DSQL endpoint the token was signed for.
    """

    verify_host: str

    def wrap_bio(self, *args: Any, **kwargs: Any) -> ssl.SSLObject:
        kwargs["server_hostname"] = self.verify_host
        return super().wrap_bio(*args, **kwargs)


def _tls_context(
    sslmode: str, sslrootcert: str | None, verify_host: str | None, direct_tls: bool
) -> ssl.SSLContext:
    if sslmode != "verify-full":
        raise ConfigurationError(
            f"sslmode={sslmode!r} is not supported: Aurora DSQL requires TLS and this engine "
            f"only makes verified connections (sslmode='verify-full')"
        )
    if verify_host:
        pinned = _VerifyAs(ssl.PROTOCOL_TLS_CLIENT)
        pinned.verify_host = verify_host
        context: ssl.SSLContext = pinned
    else:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = True
    context.verify_mode = ssl.CERT_REQUIRED
    if sslrootcert in (None, "system"):
        context.load_default_certs()
    else:
        try:
            context.load_verify_locations(cafile=sslrootcert)
        except (OSError, ssl.SSLError) as error:
            raise ConfigurationError(
                f"cannot load the CA file sslrootcert={sslrootcert!r}: {error}; pass the path of "
                f"a PEM file, or 'system' for the system trust store"
            ) from None
    if direct_tls:
        # asyncpg sets ALPN only on contexts it builds; direct TLS requires it.
        context.set_alpn_protocols(["postgresql"])
    return context


def create_async_dsql_engine(
    host: str,
    *,
    user: str = "admin",
    region: str | None = None,
    database: str = "postgres",
    port: int = 5432,
    schema: str | None = None,
    session: Any = None,
    profile: str | None = None,
    token_lifetime: int = DEFAULT_TOKEN_LIFETIME,
    sslmode: str = "verify-full",
    sslrootcert: str | None = None,
    hostaddr: str | None = None,
    direct_tls: bool = False,
    application_name: str | None = None,
    max_connection_age: float = DEFAULT_MAX_CONNECTION_AGE,
    connection_age_jitter: float | None = None,
    connect_timeout: float = 30.0,
    server_settings: Mapping[str, str] | None = None,
    **engine_kwargs: Any,
) -> AsyncEngine:
    """An ``AsyncEngine`` on ``auroradsql+asyncpg`` that authenticates with fresh IAM tokens.

    ``host`` is the cluster endpoint, or a cluster id with ``region``.
    ``schema`` sets ``search_path`` on every new connection. Credentials come
    from ``session`` (an ``aioboto3.Session``), ``profile`` or the default
    chain. Other keyword arguments go to ``create_async_engine`` (``pool_size``,
    ``max_overflow``, ``echo``, ...).
    """
    import asyncpg

    endpoint = resolve_endpoint(host, region)
    if max_connection_age <= 0:
        raise ConfigurationError(f"max_connection_age must be positive, got {max_connection_age}")
    jitter = (
        min(max_connection_age * 0.1, 300.0)
        if connection_age_jitter is None
        else connection_age_jitter
    )
    if not 0 <= jitter < max_connection_age:
        raise ConfigurationError(
            f"connection_age_jitter must be between 0 and max_connection_age, got {jitter}"
        )
    context = _tls_context(sslmode, sslrootcert, endpoint.host if hostaddr else None, direct_tls)
    settings = dict(server_settings or {})
    if application_name is not None:
        settings["application_name"] = application_name
    if schema is not None:
        settings["search_path"] = schema
    counters = EngineCounters()

    async def connect() -> Any:
        generator = async_token_generator(endpoint.region, session=session, profile=profile)
        token = await generator.token(endpoint.host, user, token_lifetime)
        counters.tokens_minted += 1
        connection = await asyncpg.connect(
            host=hostaddr or endpoint.host,
            port=port,
            user=user,
            password=token,
            database=database,
            ssl=context,
            direct_tls=direct_tls,
            timeout=connect_timeout,
            server_settings=settings or None,
        )
        counters.connections_opened += 1
        _log.debug("opened a connection to %s as %s", endpoint.host, user)
        return connection

    engine = create_async_engine("auroradsql+asyncpg://", async_creator=connect, **engine_kwargs)
    _counters[engine.sync_engine] = counters
    pool = engine.sync_engine.pool

    @event.listens_for(pool, "connect")
    def _set_retirement(dbapi_connection: Any, record: Any) -> None:
        record.info[_RETIRE_AT] = time.monotonic() + max_connection_age - random.uniform(0, jitter)

    @event.listens_for(pool, "checkout")
    def _retire_or_replace(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        if dbapi_connection.driver_connection.is_closed():
            counters.replaced_after_close += 1
            _log.debug("replacing a connection the server closed")
            raise exc.DisconnectionError("the server closed this connection; opening another")
        if time.monotonic() >= record.info.get(_RETIRE_AT, float("inf")):
            counters.retired_for_age += 1
            _log.debug("retiring a connection past its maximum age")
            raise exc.DisconnectionError("connection past its maximum age; opening another")

    return engine
