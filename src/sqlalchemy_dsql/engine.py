"""Engine factories for Aurora DSQL: conveniences over the dialect's own connections.

Every ``auroradsql`` engine mints a fresh IAM token per connection, verifies
TLS, retires connections before DSQL's hour and explains refused connections,
whether it comes from a URL alone::

    engine = create_async_engine("auroradsql+asyncpg://admin@<id>.dsql.us-east-1.on.aws/postgres")

or from these factories, which take the same settings as keyword arguments
(:mod:`sqlalchemy_dsql.settings` lists them, with their environment
fallbacks) plus objects a URL cannot carry:

:func:`create_async_dsql_engine` returns an ``AsyncEngine`` on
``auroradsql+asyncpg`` (or ``driver="psycopg"`` for psycopg's async mode);
:func:`create_dsql_engine` an ``Engine`` on ``auroradsql+psycopg`` or
``auroradsql+psycopg2`` and keeps the argument names of Amazon's
``aurora_dsql_sqlalchemy.create_dsql_engine`` (``host``, ``user``,
``driver``, ``dbname``, ``sslmode``, ``sslrootcert``, ``application_name``,
``pool_size``, ``max_overflow``, ``connect_args`` with the connector's
``region``, ``profile``, ``token_duration_secs`` and
``custom_credentials_provider``), so switching is a change of import.

Both share names and defaults: ``database`` (``dbname`` is also accepted by
:func:`create_dsql_engine`), ``sslrootcert`` (``PGSSLROOTCERT``, else the
system trust store), ``connect_timeout`` (seconds, 30), ``application_name``
(none) and ``token_lifetime`` (900 s).

A connection lost while in use raises
:class:`~sqlalchemy_dsql.errors.ConnectionLost`, which says whether COMMIT
was in flight; one that cannot be opened raises a
:class:`~sqlalchemy_dsql.errors.ConnectError` subclass that says what is
wrong and what to do. Tokens and secret keys never appear in logs, reprs,
URLs or error messages.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import URL, Engine, create_engine
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import QueuePool

from .errors import ConfigurationError

__all__ = ["create_async_dsql_engine", "create_dsql_engine"]

# Keys of Amazon's connector that create_dsql_engine accepts inside connect_args.
_CONNECTOR_KEYS = {
    "region": "region",
    "profile": "profile",
    "token_duration_secs": "token_lifetime",
    "custom_credentials_provider": "credentials_provider",
    # Amazon's helper lets connect_args carry these too; they become settings.
    "sslmode": "sslmode",
    "sslrootcert": "sslrootcert",
    "hostaddr": "hostaddr",
    "port": "port",
    "application_name": "application_name",
}
_ASYNC_DRIVERS = {
    "asyncpg": "asyncpg",
    "psycopg": "psycopg_async",
    "psycopg_async": "psycopg_async",
}


def _given(**settings: Any) -> dict[str, Any]:
    """The settings actually given: None leaves a setting to the URL, environment or default."""
    return {name: value for name, value in settings.items() if value is not None}


def create_async_dsql_engine(
    host: str,
    *,
    user: str = "admin",
    driver: str = "asyncpg",
    database: str = "postgres",
    region: str | None = None,
    port: int | None = None,
    schema: str | None = None,
    session: Any = None,
    profile: str | None = None,
    credentials_provider: Any = None,
    token_lifetime: int | None = None,
    sslmode: str | None = None,
    sslrootcert: str | None = None,
    hostaddr: str | None = None,
    direct_tls: bool | None = None,
    allow_insecure_tls: bool | None = None,
    application_name: str | None = None,
    max_connection_age: float | None = None,
    connection_age_jitter: float | None = None,
    connect_timeout: float | None = None,
    server_settings: Mapping[str, str] | None = None,
    **engine_kwargs: Any,
) -> AsyncEngine:
    """An ``AsyncEngine`` on ``auroradsql+asyncpg`` (or ``+psycopg_async``) with fresh IAM tokens.

    ``host`` is the cluster endpoint, or a cluster id with ``region``.
    Credentials come from ``session`` (an ``aioboto3.Session``), ``profile``,
    ``credentials_provider`` (a botocore or aiobotocore credential provider)
    or the default chain. ``server_settings`` go to asyncpg. The other
    settings are described in :mod:`sqlalchemy_dsql.settings`; any other
    keyword argument goes to ``create_async_engine`` (``pool_size``,
    ``max_overflow``, ``pool_timeout``, ``echo``, ...).
    """
    if driver not in _ASYNC_DRIVERS:
        raise ConfigurationError(
            f"Unsupported driver: {driver!r}. Use 'asyncpg' (the default) or 'psycopg' here, "
            f"and create_dsql_engine() for synchronous code"
        )
    if server_settings:
        if _ASYNC_DRIVERS[driver] != "asyncpg":
            raise ConfigurationError(
                "server_settings is an asyncpg option; with psycopg, pass libpq's options= "
                "in connect_args"
            )
        merged = dict(server_settings)
        if application_name is not None:
            merged["application_name"] = application_name
        connect_args = engine_kwargs.setdefault("connect_args", {})
        connect_args["server_settings"] = merged
    url = URL.create(
        f"auroradsql+{_ASYNC_DRIVERS[driver]}", username=user, host=host, database=database
    )
    return create_async_engine(
        url,
        **_given(
            region=region,
            port=port,
            schema=schema,
            session=session,
            profile=profile,
            credentials_provider=credentials_provider,
            token_lifetime=token_lifetime,
            sslmode=sslmode,
            sslrootcert=sslrootcert,
            hostaddr=hostaddr,
            direct_tls=direct_tls,
            allow_insecure_tls=allow_insecure_tls,
            application_name=application_name,
            max_connection_age=max_connection_age,
            connection_age_jitter=connection_age_jitter,
            connect_timeout=connect_timeout,
        ),
        **engine_kwargs,
    )


def create_dsql_engine(
    host: str,
    user: str = "admin",
    driver: str = "psycopg",
    database: str = "postgres",
    sslmode: str | None = None,
    sslrootcert: str | None = None,
    application_name: str | None = None,
    pool_size: int | None = None,
    max_overflow: int | None = None,
    connect_args: dict[str, Any] | None = None,
    *,
    dbname: str | None = None,
    region: str | None = None,
    port: int | None = None,
    schema: str | None = None,
    session: Any = None,
    profile: str | None = None,
    credentials_provider: Any = None,
    token_lifetime: int | None = None,
    hostaddr: str | None = None,
    direct_tls: bool | None = None,
    allow_insecure_tls: bool | None = None,
    max_connection_age: float | None = None,
    connection_age_jitter: float | None = None,
    connect_timeout: float | None = None,
    **engine_kwargs: Any,
) -> Engine:
    """An ``Engine`` on ``auroradsql+psycopg`` (or ``+psycopg2``) with fresh IAM tokens.

    The positional arguments are those of Amazon's ``create_dsql_engine``
    (``dbname`` is accepted as the keyword it uses for ``database``);
    ``connect_args`` may carry its connector's ``region``, ``profile``,
    ``token_duration_secs`` and ``custom_credentials_provider`` (or use the
    keyword arguments of the same meaning); other ``connect_args`` go to the
    driver. ``session`` is a ``boto3.Session``. TLS starts directly, without
    the SSLRequest round trip, when the driver's libpq is version 17 or newer
    (``direct_tls=None``; pass ``True`` or ``False`` to choose). The other
    settings are described in :mod:`sqlalchemy_dsql.settings`; the remaining
    keyword arguments go to ``create_engine``.

    ``pool_size`` and ``max_overflow`` keep Amazon's names but not its
    defaults (5 and 10): left out, the pool keeps 15 connections and opens no
    overflow, the ``auroradsql`` pool's defaults, because overflow
    connections are closed and reopened under a steady load above
    ``pool_size`` (see 'Sizing a pool' in the engine guide).
    """
    if driver not in ("psycopg", "psycopg2"):
        # Amazon's wording and class (ValueError), so that code handling them keeps working.
        raise ConfigurationError(
            f"Unsupported driver: {driver!r}. Use 'psycopg' or 'psycopg2' here, and "
            f"create_async_dsql_engine() for asyncio"
        )
    if dbname is not None and database not in ("postgres", dbname):
        raise ConfigurationError(
            f"database={database!r} and dbname={dbname!r} name the same thing; give one"
        )
    settings = _given(
        region=region,
        port=port,
        schema=schema,
        session=session,
        profile=profile,
        credentials_provider=credentials_provider,
        token_lifetime=token_lifetime,
        sslmode=sslmode,
        sslrootcert=sslrootcert,
        hostaddr=hostaddr,
        direct_tls=direct_tls,
        allow_insecure_tls=allow_insecure_tls,
        application_name=application_name,
        max_connection_age=max_connection_age,
        connection_age_jitter=connection_age_jitter,
        connect_timeout=connect_timeout,
    )
    driver_args = dict(connect_args or {})
    for key, setting in _CONNECTOR_KEYS.items():
        if key in driver_args:
            settings[setting] = driver_args.pop(key)
    if driver_args:
        engine_kwargs["connect_args"] = driver_args
    url = URL.create(f"auroradsql+{driver}", username=user, host=host, database=dbname or database)
    poolclass = engine_kwargs.get("poolclass")
    if poolclass is None or (isinstance(poolclass, type) and issubclass(poolclass, QueuePool)):
        # Only queue pools take these; left out, the auroradsql pool's defaults apply.
        engine_kwargs = {**_given(pool_size=pool_size, max_overflow=max_overflow), **engine_kwargs}
    return create_engine(url, **settings, **engine_kwargs)
