"""TLS towards Aurora DSQL: verify-full by default, for asyncpg and for libpq.

DSQL accepts TLS connections only, and its certificates chain to Amazon Root
CA 1, which is in every system trust store; ``sslrootcert='system'`` (the
default) uses that store, a path uses that PEM file instead (a proxy's CA, the
local emulator's).

``hostaddr`` dials another address while the certificate is still checked
against the endpoint's name, as libpq does; asyncpg has no such option, so
:func:`asyncpg_ssl` pins the name in the context (:class:`VerifyAs`).

Direct TLS (``direct_tls``) starts the TLS handshake at once instead of after
PostgreSQL's SSLRequest exchange, one round trip less per new connection.
libpq does it from version 17 (``sslnegotiation=direct``); with asyncpg it is
off unless asked for.
"""

from __future__ import annotations

import ssl
from typing import Any

from .errors import ConfigurationError
from .settings import ConnectionSettings, SSLMode

__all__ = ["VerifyAs", "asyncpg_ssl", "check_ca_file", "libpq_tls"]

DIRECT_TLS_LIBPQ = 170000  # the first libpq with sslnegotiation=direct


class VerifyAs(ssl.SSLContext):
    """A client context that checks the certificate against a fixed host name.

    Used with ``hostaddr``: the socket goes to one address while the
    certificate must match the DSQL endpoint the token was signed for.
    """

    verify_host: str

    def wrap_bio(self, *args: Any, **kwargs: Any) -> ssl.SSLObject:
        kwargs["server_hostname"] = self.verify_host
        return super().wrap_bio(*args, **kwargs)


def check_ca_file(sslrootcert: str, context: ssl.SSLContext | None = None) -> None:
    """Load ``sslrootcert`` into ``context`` (or a scratch one), failing with advice."""
    if sslrootcert == "system":
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


def asyncpg_ssl(settings: ConnectionSettings) -> ssl.SSLContext | bool:
    """The ``ssl`` argument for ``asyncpg.connect``."""
    if settings.sslmode is SSLMode.DISABLE:
        return False
    if settings.hostaddr:
        pinned = VerifyAs(ssl.PROTOCOL_TLS_CLIENT)
        pinned.verify_host = settings.endpoint.host
        context: ssl.SSLContext = pinned
    else:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = settings.sslmode is SSLMode.VERIFY_FULL
    context.verify_mode = (
        ssl.CERT_NONE if settings.sslmode is SSLMode.REQUIRE else ssl.CERT_REQUIRED
    )
    if settings.sslrootcert == "system":
        context.load_default_certs()
    else:
        check_ca_file(settings.sslrootcert, context)
    if settings.direct_tls:
        # asyncpg sets ALPN only on contexts it builds; direct TLS requires it.
        context.set_alpn_protocols(["postgresql"])
    return context


def libpq_tls(settings: ConnectionSettings, libpq_version: int) -> dict[str, str]:
    """libpq's TLS keywords; direct TLS by default from libpq 17."""
    if settings.sslmode is SSLMode.DISABLE:
        return {"sslmode": "disable"}
    check_ca_file(settings.sslrootcert)
    options = {"sslmode": settings.sslmode.value, "sslrootcert": settings.sslrootcert}
    direct = settings.direct_tls
    if direct is None:
        direct = libpq_version >= DIRECT_TLS_LIBPQ
    if direct:
        if libpq_version < DIRECT_TLS_LIBPQ:
            raise ConfigurationError(
                f"direct_tls=True needs libpq 17 or newer; this driver runs on libpq "
                f"{libpq_version // 10000}: leave direct_tls unset, or install a psycopg "
                f"built on libpq 17 (psycopg[binary] 3.2 or newer)"
            )
        options["sslnegotiation"] = "direct"
    return options
