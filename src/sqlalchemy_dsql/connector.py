"""The one path by which every ``auroradsql`` engine opens a connection.

The dialect makes a :class:`Connector` from its
:class:`~sqlalchemy_dsql.settings.ConnectionSettings` when the engine is
created, and hands every new physical connection to it:

1. a fresh IAM token is signed for the endpoint and user (the async drivers
   sign through aioboto3, so fetching or refreshing credentials never blocks
   the event loop; :mod:`sqlalchemy_dsql.auth`);
2. the driver connects with TLS as the settings say (:mod:`sqlalchemy_dsql.tls`);
3. a refusal becomes an explained
   :class:`~sqlalchemy_dsql.errors.ConnectError`
   (:mod:`sqlalchemy_dsql.diagnosis`);
4. ``schema`` sets ``search_path``; the pool counters count the token and
   the connection.

:meth:`Connector.install` gives the engine's pool its retirement times and
checkout checks (:mod:`sqlalchemy_dsql.pool`) and makes connections lost in
use raise :class:`~sqlalchemy_dsql.errors.ConnectionLost`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import Engine

from .auth import async_token_generator, token_generator
from .diagnosis import ConnectAttempt, explain_lost_connections
from .errors import ConfigurationError
from .pool import PoolCounters, has_lifetime, manage_lifetime
from .settings import ConnectionSettings
from .tls import asyncpg_ssl, libpq_tls

__all__ = ["Connector"]

_log = logging.getLogger("sqlalchemy_dsql.connector")


def _quoted(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _no_password(cparams: dict[str, Any]) -> None:
    if cparams.get("password") is not None:
        raise ConfigurationError(
            "connect_args carries a password; Aurora DSQL has none: the dialect signs a fresh "
            "IAM token for every connection. Remove it and give AWS credentials the usual way "
            "(environment, AWS_PROFILE or profile=, an instance or task role, or session= / "
            "credentials_provider=)"
        )


class Connector:
    """Opens the connections of one engine: a token each, TLS, explained errors, counted."""

    def __init__(self, settings: ConnectionSettings) -> None:
        self.settings = settings
        self.counters = PoolCounters()
        self._attempt = ConnectAttempt(settings)
        self._set_search_path = (
            f"SET search_path = {_quoted(settings.schema)}" if settings.schema else None
        )

    def __repr__(self) -> str:
        return f"<Connector {self.settings.user}@{self.settings.endpoint.host}>"

    # -- what each driver is given ------------------------------------------------

    def asyncpg_arguments(self) -> dict[str, Any]:
        """``asyncpg.connect`` keyword arguments, but for the password."""
        settings = self.settings
        arguments: dict[str, Any] = {
            "host": settings.dial,
            "port": settings.port,
            "user": settings.user,
            "database": settings.database,
            "ssl": asyncpg_ssl(settings),
            "direct_tls": bool(settings.direct_tls),
            "timeout": settings.connect_timeout,
        }
        if settings.application_name is not None:
            arguments["server_settings"] = {"application_name": settings.application_name}
        return arguments

    def libpq_arguments(self, libpq_version: int) -> dict[str, Any]:
        """libpq connection keywords (psycopg, psycopg2), but for the password."""
        settings = self.settings
        arguments: dict[str, Any] = {
            "host": settings.endpoint.host,
            "port": settings.port,
            "user": settings.user,
            "dbname": settings.database,
            # libpq waits whole seconds (and at least 2).
            "connect_timeout": max(2, math.ceil(settings.connect_timeout)),
            **libpq_tls(settings, libpq_version),
        }
        address = settings.numeric_hostaddr()
        if address is not None:
            arguments["hostaddr"] = address
        if settings.application_name is not None:
            arguments["application_name"] = settings.application_name
        return arguments

    # -- opening connections --------------------------------------------------------

    def connect(self, driver_connect: Callable[..., Any], cargs: Any, cparams: Any) -> Any:
        """A new connection from a synchronous driver (psycopg, psycopg2)."""
        _no_password(cparams)
        settings = self.settings
        generator = token_generator(settings.endpoint.region, **settings.credentials_source())
        token = generator.token(settings.endpoint.host, settings.user, settings.token_lifetime)
        self.counters.tokens_minted += 1
        try:
            connection = driver_connect(*cargs, password=token, **cparams)
        except Exception as error:
            explained = self._attempt.explain(error)
            if explained is None:
                raise
            raise explained from error
        if self._set_search_path:
            with connection.cursor() as cursor:
                cursor.execute(self._set_search_path)
            connection.commit()
        self._opened()
        return connection

    def async_creator(
        self, driver_connect: Callable[..., Awaitable[Any]]
    ) -> Callable[..., Awaitable[Any]]:
        """The ``async_creator_fn`` SQLAlchemy's async adapters call to open a connection."""

        async def connect(*cargs: Any, **cparams: Any) -> Any:
            _no_password(cparams)
            settings = self.settings
            generator = async_token_generator(
                settings.endpoint.region, **settings.credentials_source()
            )
            token = await generator.token(
                settings.endpoint.host, settings.user, settings.token_lifetime
            )
            self.counters.tokens_minted += 1
            try:
                connection = await driver_connect(*cargs, password=token, **cparams)
            except Exception as error:
                explained = self._attempt.explain(error)
                if explained is None:
                    raise
                raise explained from error
            if self._set_search_path:
                await connection.execute(self._set_search_path)
                if hasattr(connection, "commit"):  # psycopg opened a transaction for it
                    await connection.commit()
            self._opened()
            return connection

        return connect

    def _opened(self) -> None:
        self.counters.connections_opened += 1
        _log.debug(
            "opened a connection to %s as %s", self.settings.endpoint.host, self.settings.user
        )

    # -- the engine's pool ------------------------------------------------------------

    def install(self, engine: Engine) -> None:
        """Retirement, checkout checks, counters and lost-connection errors for ``engine``."""
        if has_lifetime(engine):  # engine_created runs for the sync and the async dialect
            return
        settings = self.settings
        manage_lifetime(
            engine, self.counters, settings.max_connection_age, settings.connection_age_jitter
        )
        explain_lost_connections(engine, settings.endpoint.host, self.counters)
