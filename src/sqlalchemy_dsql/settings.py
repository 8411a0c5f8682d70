"""How to reach a cluster: one frozen set of connection settings, from a URL and the environment.

Every ``auroradsql`` engine opens its connections from a
:class:`ConnectionSettings`, built once when the engine is made. Each setting
can come from:

1. a dialect keyword argument, ``create_async_engine(url, region="us-east-1")``,
   or a query parameter of the URL, ``...?region=us-east-1`` (the same name;
   given both ways, the two must agree);
2. else the environment variable users already set for libpq or AWS;
3. else the default.

=========================  =====================  ==================================
setting                    environment            default
=========================  =====================  ==================================
``region``                 ``AWS_REGION``,        the Region named by the endpoint
                           ``AWS_DEFAULT_REGION``
``profile``                ``AWS_PROFILE``        the default AWS credential chain
``port``                   ``PGPORT``             5432 (a port in the URL wins)
``hostaddr``               ``PGHOSTADDR``         none: dial the endpoint's name
``sslmode``                ``PGSSLMODE``          ``verify-full``
``sslrootcert``            ``PGSSLROOTCERT``      ``system`` (the system trust store)
``direct_tls``                                    libpq 17+: on; asyncpg: off
``application_name``                              none
``schema``                                        none (the server's ``search_path``)
``token_lifetime``                                900 s
``max_connection_age``                            3300 s (55 minutes)
``connection_age_jitter``                         10 % of the age, at most 300 s
``connect_timeout``                               30 s
``allow_insecure_tls``                            false
=========================  =====================  ==================================

An endpoint's own Region beats ``AWS_REGION``: the variable is the
application's default Region for every AWS service, the endpoint names the
Region of this cluster. ``session`` (a boto3 or aioboto3 session) and
``credentials_provider`` (a botocore credential provider) are objects, so they
are dialect keyword arguments only.

A secret never belongs in a URL: a password, in the URL or in
``connect_args``, is refused with advice, as is an unknown parameter, a
malformed endpoint or Region, and a setting given twice with two values.
Tokens are signed for each connection instead (:mod:`sqlalchemy_dsql.auth`).
"""

from __future__ import annotations

import enum
import ipaddress
import math
import os
import re
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import URL

from .auth import DEFAULT_TOKEN_LIFETIME, Endpoint, check_token_lifetime, resolve_endpoint
from .errors import ConfigurationError

__all__ = [
    "DEFAULT_MAX_CONNECTION_AGE",
    "SETTING_NAMES",
    "ConnectionSettings",
    "DriverFamily",
    "SSLMode",
]

DEFAULT_MAX_CONNECTION_AGE = 55 * 60.0
_MAX_DEFAULT_JITTER = 300.0
DEFAULT_CONNECT_TIMEOUT = 30.0
_DATABASE = "postgres"
_REGION = re.compile(r"^[a-z]{2}(?:-[a-z]+)+-\d+$")


class SSLMode(str, enum.Enum):
    """libpq's names for how much of the server's TLS certificate is checked."""

    VERIFY_FULL = "verify-full"
    VERIFY_CA = "verify-ca"
    REQUIRE = "require"
    DISABLE = "disable"


class DriverFamily(enum.Enum):
    """Which driver options a URL may carry besides the dialect's own settings."""

    ASYNCPG = "asyncpg"
    LIBPQ = "libpq"  # psycopg (sync and async) and psycopg2


def _text(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise ConfigurationError(f"{name} must be a string, got {type(value).__name__} {value!r}")
    return value


def _seconds(name: str, value: Any) -> float:
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise ConfigurationError(
            f"{name}={value!r} is not a number of seconds; write e.g. {name}=30"
        ) from None
    if not math.isfinite(seconds):
        raise ConfigurationError(f"{name}={value!r} must be a finite number of seconds")
    return seconds


def _whole_seconds(name: str, value: Any) -> int:
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise ConfigurationError(f"{name}={value!r} must be a whole number of seconds")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ConfigurationError(
            f"{name}={value!r} is not a whole number of seconds; write e.g. {name}=900"
        ) from None


def _flag(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    lowered = str(value).strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ConfigurationError(f"{name}={value!r} is not a yes/no value; write {name}=true or false")


def _port(name: str, value: Any) -> int:
    try:
        port = int(value)
    except (TypeError, ValueError):
        port = -1
    if isinstance(value, bool) or not 1 <= port <= 65535:
        raise ConfigurationError(f"{name}={value!r} is not a TCP port (1 to 65535)")
    return port


def _sslmode(name: str, value: Any) -> SSLMode:
    try:
        return SSLMode(value)
    except ValueError:
        others = ", ".join(repr(m.value) for m in SSLMode if m is not SSLMode.VERIFY_FULL)
        raise ConfigurationError(
            f"{name}={value!r} is not supported: use 'verify-full' (the default; Aurora DSQL "
            f"requires TLS), or one of {others} towards a proxy or emulator"
        ) from None


def _region(name: str, value: Any) -> str:
    region = _text(name, value).strip()
    if not _REGION.match(region):
        raise ConfigurationError(
            f"{name}={value!r} is not an AWS Region name; write it as AWS does, e.g. "
            f"'us-east-1' or 'eu-west-2' (lower case, dashes, a number at the end)"
        )
    return region


@dataclass(frozen=True, slots=True)
class _Setting:
    parse: Callable[[str, Any], Any]
    environ: tuple[str, ...] = ()
    in_url: bool = True  # False: an object, only as a keyword argument


_SETTINGS: dict[str, _Setting] = {
    "region": _Setting(_region, ("AWS_REGION", "AWS_DEFAULT_REGION")),
    "profile": _Setting(_text, ("AWS_PROFILE",)),
    "port": _Setting(_port, ("PGPORT",)),
    "hostaddr": _Setting(_text, ("PGHOSTADDR",)),
    "sslmode": _Setting(_sslmode, ("PGSSLMODE",)),
    "sslrootcert": _Setting(_text, ("PGSSLROOTCERT",)),
    "direct_tls": _Setting(_flag),
    "application_name": _Setting(_text),
    "schema": _Setting(_text),
    "token_lifetime": _Setting(_whole_seconds),
    "max_connection_age": _Setting(_seconds),
    "connection_age_jitter": _Setting(_seconds),
    "connect_timeout": _Setting(_seconds),
    "allow_insecure_tls": _Setting(_flag),
    "session": _Setting(lambda _, value: value, in_url=False),
    "credentials_provider": _Setting(lambda _, value: value, in_url=False),
}
SETTING_NAMES: tuple[str, ...] = tuple(_SETTINGS)
"""The dialect's own settings: keyword arguments, and URL parameters but for the objects."""

# What else a URL's query may carry, per driver family: options the driver itself takes.
_DRIVER_OPTIONS: dict[DriverFamily, frozenset[str]] = {
    DriverFamily.ASYNCPG: frozenset(
        {
            "command_timeout",
            "statement_cache_size",
            "max_cached_statement_lifetime",
            "max_cacheable_statement_size",
            "prepared_statement_cache_size",
        }
    ),
    DriverFamily.LIBPQ: frozenset(
        {
            "keepalives",
            "keepalives_idle",
            "keepalives_interval",
            "keepalives_count",
            "tcp_user_timeout",
            "options",
            "target_session_attrs",
            "client_encoding",
            "sslcert",
            "sslkey",
            "sslcrl",
            "sslcrldir",
            "sslsni",
            "ssl_min_protocol_version",
            "ssl_max_protocol_version",
            "gssencmode",
        }
    ),
}
# Names that carry a secret, or that other libraries use for one: refused wherever they appear.
_SECRET_NAMES = frozenset(
    {
        "password",
        "passfile",
        "sslpassword",
        "token",
        "aws_secret_access_key",
        "aws_session_token",
        "secret_key",
    }
)
# Names users bring from other PostgreSQL tools, and what this dialect calls them.
_RENAMED = {
    "ssl": "sslmode",
    "dbname": "the URL's database (auroradsql+asyncpg://admin@<endpoint>/postgres)",
    "host": "the URL's host (the cluster endpoint)",
    "user": "the URL's user name (admin@...)",
    "token_duration_secs": "token_lifetime",
    "aws_region": "region",
    "aws_profile": "profile",
    "sslnegotiation": "direct_tls",
}


def _secret_refused(where: str) -> ConfigurationError:
    return ConfigurationError(
        f"{where} carries a password; Aurora DSQL has none: the dialect signs a fresh IAM token "
        f"for every connection. Remove it (write auroradsql+asyncpg://admin@<endpoint>/postgres) "
        f"and give AWS credentials the usual way: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, "
        f"AWS_PROFILE or profile=, an instance or task role, or session= / credentials_provider="
    )


@dataclass(frozen=True, slots=True)
class ConnectionSettings:
    """Everything an engine needs to open a connection to one DSQL endpoint.

    Build it with :meth:`from_url`; every field is checked and resolved
    (environment included) by then, so the connection path never guesses.
    """

    endpoint: Endpoint
    user: str = "admin"
    database: str = _DATABASE
    port: int = 5432
    hostaddr: str | None = None
    sslmode: SSLMode = SSLMode.VERIFY_FULL
    sslrootcert: str = "system"
    direct_tls: bool | None = None  # None: the driver's best (libpq 17+: direct)
    application_name: str | None = None
    schema: str | None = None
    token_lifetime: int = DEFAULT_TOKEN_LIFETIME
    max_connection_age: float = DEFAULT_MAX_CONNECTION_AGE
    connection_age_jitter: float = min(DEFAULT_MAX_CONNECTION_AGE * 0.1, _MAX_DEFAULT_JITTER)
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    allow_insecure_tls: bool = False
    profile: str | None = None
    # Objects that may hold credentials: never shown, never compared.
    session: Any = field(default=None, repr=False, compare=False)
    credentials_provider: Any = field(default=None, repr=False, compare=False)

    @property
    def dial(self) -> str:
        """The address the driver connects to: ``hostaddr``, else the endpoint's name."""
        return self.hostaddr or self.endpoint.host

    @property
    def trust(self) -> str:
        """Where the server's certificate must chain to, in words."""
        if self.sslrootcert == "system":
            return "the system trust store"
        return f"sslrootcert={self.sslrootcert!r}"

    @classmethod
    def from_url(
        cls,
        url: URL,
        options: Mapping[str, Any],
        family: DriverFamily,
        environ: Mapping[str, str] | None = None,
    ) -> tuple[ConnectionSettings, dict[str, str]]:
        """The settings for ``url`` and ``options``, and the URL's driver options.

        ``options`` are dialect keyword arguments (None meaning not given);
        ``environ`` defaults to ``os.environ``.
        """
        env = os.environ if environ is None else environ
        if url.password is not None:
            raise _secret_refused("the URL")
        query = dict(url.query)
        driver_options: dict[str, str] = {}
        for name, raw in query.items():
            if isinstance(raw, tuple):
                raise ConfigurationError(
                    f"the URL gives {name} {len(raw)} times ({', '.join(raw)}); give it once"
                )
            if name in _SECRET_NAMES:
                raise _secret_refused(f"the URL parameter {name}=")
            if name in _DRIVER_OPTIONS[family]:
                driver_options[name] = raw
            elif name not in _SETTINGS or not _SETTINGS[name].in_url:
                raise _unknown_parameter(name, family)
        given: dict[str, Any] = {}
        for name, setting in _SETTINGS.items():
            from_kwargs = options.get(name)
            from_url: Any = query.get(name)
            if name == "port" and url.port is not None:
                if from_url is not None:
                    raise ConfigurationError(
                        f"the URL gives the port twice, {url.port} and port={from_url}; "
                        f"keep the one after the host"
                    )
                from_url = url.port
            if (
                from_kwargs is not None
                and from_url is not None
                and setting.parse(name, from_kwargs) != setting.parse(name, from_url)
            ):
                raise ConfigurationError(
                    f"{name} is given twice, {from_url!r} in the URL and {from_kwargs!r} "
                    f"as a keyword argument; give it once"
                )
            value: Any = from_kwargs if from_kwargs is not None else from_url
            source = name  # what a refusal calls the value: the setting, or its variable
            if value is None and not (name == "profile" and _other_credentials(options)):
                source, value = next(
                    ((var, env[var]) for var in setting.environ if env.get(var)), (name, None)
                )
                if value is not None and name == "region" and url.host:
                    # The endpoint's own Region beats the application's default one.
                    value = _endpoint_region(url.host) or value
            if value is not None:
                given[name] = setting.parse(source, value)
        return cls._resolve(url, given), driver_options

    @classmethod
    def _resolve(cls, url: URL, given: dict[str, Any]) -> ConnectionSettings:
        if not url.host:
            raise ConfigurationError(
                "the URL names no host: write the cluster endpoint, "
                "auroradsql+asyncpg://admin@<cluster-id>.dsql.<region>.on.aws/postgres"
            )
        if "," in url.host:
            raise ConfigurationError(
                f"the URL names several hosts ({url.host}); an auroradsql engine connects to "
                f"one cluster endpoint"
            )
        endpoint = resolve_endpoint(_checked_host(url.host), given.pop("region", None))
        database = url.database or _DATABASE
        if database != _DATABASE:
            raise ConfigurationError(
                f"database {database!r}: Aurora DSQL has a single database, 'postgres'; "
                f"end the URL with /postgres (or nothing)"
            )
        user = url.username or "admin"
        token_lifetime = given.pop("token_lifetime", DEFAULT_TOKEN_LIFETIME)
        check_token_lifetime(token_lifetime)
        age = given.pop("max_connection_age", DEFAULT_MAX_CONNECTION_AGE)
        jitter = given.pop("connection_age_jitter", None)
        if age <= 0:
            raise ConfigurationError(f"max_connection_age must be positive (seconds), got {age}")
        if jitter is None:
            jitter = min(age * 0.1, _MAX_DEFAULT_JITTER)
        if not 0 <= jitter < age:
            raise ConfigurationError(
                f"connection_age_jitter must be at least 0 and below max_connection_age "
                f"({age} s), got {jitter}"
            )
        timeout = given.pop("connect_timeout", DEFAULT_CONNECT_TIMEOUT)
        if timeout <= 0:
            raise ConfigurationError(f"connect_timeout must be positive (seconds), got {timeout}")
        sources = [n for n in ("session", "profile", "credentials_provider") if n in given]
        if len(sources) > 1:
            raise ConfigurationError(
                f"pass one credentials source, not {' and '.join(sources)}: a session, a "
                f"profile or a credentials_provider (AWS_PROFILE counts as a profile)"
            )
        settings = cls(
            endpoint=endpoint,
            user=user,
            database=database,
            token_lifetime=token_lifetime,
            max_connection_age=age,
            connection_age_jitter=jitter,
            connect_timeout=timeout,
            **given,
        )
        settings._check_tls()
        return settings

    def _check_tls(self) -> None:
        if (
            self.sslmode is not SSLMode.VERIFY_FULL
            and self.endpoint.is_dsql
            and not self.allow_insecure_tls
        ):
            raise ConfigurationError(
                f"sslmode={self.sslmode.value!r} towards {self.endpoint.host} would send the IAM "
                f"token over a connection whose server is not verified; use "
                f"sslmode='verify-full' (Amazon Root CA 1 is in the system trust store), or "
                f"pass allow_insecure_tls=True if you really mean it"
            )
        if self.direct_tls and self.sslmode is SSLMode.DISABLE:
            raise ConfigurationError(
                "direct_tls=True starts TLS at once, and sslmode='disable' forbids it; drop one"
            )

    def credentials_source(self) -> dict[str, Any]:
        """The keyword arguments that pick a token generator's credentials."""
        return {
            "session": self.session,
            "profile": self.profile,
            "credentials_provider": self.credentials_provider,
        }

    def numeric_hostaddr(self) -> str | None:
        """``hostaddr`` as libpq needs it: an IP address (a name is resolved here, once)."""
        if self.hostaddr is None:
            return None
        try:
            ipaddress.ip_address(self.hostaddr)
        except ValueError:
            try:
                return socket.gethostbyname(self.hostaddr)
            except OSError as error:
                raise ConfigurationError(
                    f"hostaddr={self.hostaddr!r} does not resolve ({error}); pass an IP address"
                ) from None
        return self.hostaddr


def _other_credentials(options: Mapping[str, Any]) -> bool:
    # AWS_PROFILE is the default chain's choice; an explicit session or provider replaces it.
    return options.get("session") is not None or options.get("credentials_provider") is not None


def _endpoint_region(host: str) -> str | None:
    try:
        return resolve_endpoint(host).region
    except ConfigurationError:
        return None


def _checked_host(host: str) -> str:
    """The host, refused early when it looks like a DSQL endpoint but is not one."""
    name = host.strip().lower().rstrip(".")
    if (".dsql" in name or name.endswith(".on.aws")) and _endpoint_region(name) is None:
        raise ConfigurationError(
            f"{host!r} is not a valid Aurora DSQL endpoint: it is written "
            f"<cluster-id>.dsql.<region>.on.aws, e.g. "
            f"abcdefghijklmnopqrstuvwxyz.dsql.us-east-1.on.aws (copy it from the console or "
            f"`aws dsql get-cluster`)"
        )
    return host


def _unknown_parameter(name: str, family: DriverFamily) -> ConfigurationError:
    if name in _RENAMED:
        instead = f"write {_RENAMED[name]} instead"
    elif name in _SETTINGS:
        instead = f"{name} is an object: pass it as a keyword argument, not in the URL"
    else:
        ours = ", ".join(n for n, s in _SETTINGS.items() if s.in_url)
        driver = ", ".join(sorted(_DRIVER_OPTIONS[family]))
        instead = (
            f"the URL may carry the dialect's settings ({ours}) and these {family.value} "
            f"options: {driver}; pass anything else to the driver in connect_args"
        )
    return ConfigurationError(f"unknown URL parameter {name!r}: {instead}")
