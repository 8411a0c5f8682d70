"""ConnectionSettings.from_url: where each setting comes from, and every refusal (no database)."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import make_url

from sqlalchemy_dsql.errors import ConfigurationError
from sqlalchemy_dsql.settings import (
    DEFAULT_MAX_CONNECTION_AGE,
    SETTING_NAMES,
    ConnectionSettings,
    DriverFamily,
    SSLMode,
)

ENDPOINT = "abcdefghijklmnopqrstuvwxyz.dsql.us-east-1.on.aws"
URL = f"auroradsql+asyncpg://admin@{ENDPOINT}/postgres"
# A host that is not a DSQL endpoint (an emulator's, a proxy's): TLS rules are looser.
PROXY = "auroradsql+asyncpg://admin@proxy.internal/postgres?region=us-east-1"


def settings(
    url: str = URL,
    *,
    family: DriverFamily = DriverFamily.ASYNCPG,
    environ: dict[str, str] | None = None,
    **options: Any,
) -> ConnectionSettings:
    made, _ = ConnectionSettings.from_url(make_url(url), options, family, environ or {})
    return made


def refused(
    url: str = URL,
    *,
    family: DriverFamily = DriverFamily.ASYNCPG,
    environ: dict[str, str] | None = None,
    **options: Any,
) -> str:
    with pytest.raises(ConfigurationError) as caught:
        settings(url, family=family, environ=environ, **options)
    return str(caught.value)


class Opaque:
    """An object standing for a session or provider: its repr must never show."""

    def __repr__(self) -> str:
        return "<Opaque holding AKIASECRETLOOKING>"


# -- defaults and sources ------------------------------------------------------------------


def test_defaults() -> None:
    made = settings()
    assert made.endpoint.host == ENDPOINT
    assert made.endpoint.region == "us-east-1"
    assert (made.user, made.database, made.port) == ("admin", "postgres", 5432)
    assert made.hostaddr is None
    assert made.dial == ENDPOINT
    assert made.sslmode is SSLMode.VERIFY_FULL
    assert made.sslrootcert == "system"
    assert made.trust == "the system trust store"
    assert made.direct_tls is None
    assert made.application_name is None
    assert made.schema is None
    assert made.token_lifetime == 900
    assert made.max_connection_age == DEFAULT_MAX_CONNECTION_AGE == 3300
    assert made.connection_age_jitter == 300  # 10 % of the age, at most 300 s
    assert made.connect_timeout == 30
    assert made.allow_insecure_tls is False
    assert made.profile is None
    assert made.session is None


def test_no_user_or_database_means_admin_and_postgres() -> None:
    made = settings(f"auroradsql+asyncpg://{ENDPOINT}")
    assert (made.user, made.database) == ("admin", "postgres")


def test_the_default_jitter_is_a_tenth_of_a_short_age() -> None:
    assert settings(max_connection_age=100).connection_age_jitter == 10


# Each setting with an environment variable: (name, variable, kwarg, URL value, env value, default)
SOURCES = [
    ("port", "PGPORT", 1111, "2222", "3333", 5432),
    ("hostaddr", "PGHOSTADDR", "10.0.0.1", "10.0.0.2", "10.0.0.3", None),
    ("sslrootcert", "PGSSLROOTCERT", "/k.pem", "/u.pem", "/e.pem", "system"),
    ("profile", "AWS_PROFILE", "kw", "url", "env", None),
]


@pytest.mark.parametrize(("name", "variable", "kwarg", "in_url", "in_env", "default"), SOURCES)
def test_precedence_kwargs_then_url_then_environment_then_default(
    name: str, variable: str, kwarg: Any, in_url: str, in_env: str, default: Any
) -> None:
    def parsed(value: Any) -> Any:
        return int(value) if name == "port" else value

    url = f"{URL}?{name}={in_url}"
    env = {variable: in_env}
    assert getattr(settings(environ=env, **{name: kwarg}), name) == parsed(kwarg)
    assert getattr(settings(url, environ=env), name) == parsed(in_url)
    assert getattr(settings(environ=env), name) == parsed(in_env)
    assert getattr(settings(), name) == default
    # A keyword argument and the URL agreeing is fine; two values are refused, not ranked.
    assert getattr(settings(url, environ=env, **{name: parsed(in_url)}), name) == parsed(in_url)
    message = refused(url, environ=env, **{name: kwarg})
    assert f"{name} is given twice" in message
    assert "give it once" in message


def test_sslmode_precedence_towards_a_proxy() -> None:
    env = {"PGSSLMODE": "require"}
    assert settings(f"{PROXY}&sslmode=verify-ca", environ=env).sslmode is SSLMode.VERIFY_CA
    assert settings(PROXY, environ=env).sslmode is SSLMode.REQUIRE
    assert settings(PROXY, environ=env, sslmode="disable").sslmode is SSLMode.DISABLE
    assert settings(PROXY).sslmode is SSLMode.VERIFY_FULL


def test_a_port_after_the_host_counts_as_the_urls() -> None:
    assert settings(f"auroradsql+asyncpg://admin@{ENDPOINT}:6543/postgres").port == 6543
    made = settings(f"auroradsql+asyncpg://admin@{ENDPOINT}:6543/postgres", environ={"PGPORT": "1"})
    assert made.port == 6543


def test_an_empty_environment_variable_is_not_a_value() -> None:
    assert settings(environ={"PGPORT": "", "PGHOSTADDR": ""}).dial == ENDPOINT


def test_the_same_value_twice_is_accepted() -> None:
    assert settings(f"{URL}?port=5433", port=5433).port == 5433
    assert settings(f"{URL}?direct_tls=yes", direct_tls=True).direct_tls is True


def test_url_strings_are_parsed() -> None:
    made = settings(
        f"{URL}?token_lifetime=60&max_connection_age=120.5&connection_age_jitter=0"
        f"&connect_timeout=2.5&direct_tls=on&application_name=app&schema=sales"
    )
    assert made.token_lifetime == 60
    assert (made.max_connection_age, made.connection_age_jitter) == (120.5, 0)
    assert made.connect_timeout == 2.5
    assert made.direct_tls is True
    assert (made.application_name, made.schema) == ("app", "sales")


# -- the Region ------------------------------------------------------------------------------


def test_the_endpoints_region_beats_aws_region() -> None:
    env = {"AWS_REGION": "eu-west-2", "AWS_DEFAULT_REGION": "ap-south-1"}
    assert settings(environ=env).endpoint.region == "us-east-1"


def test_aws_region_names_the_region_of_a_host_that_does_not() -> None:
    url = "auroradsql+asyncpg://admin@proxy.internal/postgres"
    assert settings(url, environ={"AWS_REGION": "eu-west-2"}).endpoint.region == "eu-west-2"
    assert settings(url, environ={"AWS_DEFAULT_REGION": "eu-west-3"}).endpoint.region == (
        "eu-west-3"
    )
    both = {"AWS_REGION": "eu-west-2", "AWS_DEFAULT_REGION": "eu-west-3"}
    assert settings(url, environ=both).endpoint.region == "eu-west-2"


def test_a_bare_cluster_id_takes_the_region_from_the_url_or_the_environment() -> None:
    bare = "auroradsql+asyncpg://admin@abcdefghijklmnopqrstuvwxyz/postgres"
    assert settings(f"{bare}?region=eu-west-1").endpoint.host == (
        "abcdefghijklmnopqrstuvwxyz.dsql.eu-west-1.on.aws"
    )
    assert settings(bare, environ={"AWS_REGION": "eu-west-2"}).endpoint.region == "eu-west-2"
    message = refused(bare)
    assert "looks like a bare cluster id, which needs region=" in message


def test_a_region_that_contradicts_the_endpoint_is_refused() -> None:
    message = refused(f"{URL}?region=eu-west-1")
    assert "does not match the endpoint" in message
    assert "drop region= or fix the host" in message


def test_a_malformed_region_from_the_environment_names_the_variable() -> None:
    message = refused(
        "auroradsql+asyncpg://admin@proxy.internal/postgres", environ={"AWS_REGION": "US-EAST-1"}
    )
    assert "AWS_REGION='US-EAST-1' is not an AWS Region name" in message
    assert "'us-east-1'" in message


def test_a_bad_port_from_the_environment_names_the_variable() -> None:
    assert "PGPORT='postgres' is not a TCP port" in refused(environ={"PGPORT": "postgres"})


# -- credentials sources ------------------------------------------------------------------------


def test_aws_profile_is_the_default_chains_choice() -> None:
    assert settings(environ={"AWS_PROFILE": "dev"}).profile == "dev"


@pytest.mark.parametrize("source", ["session", "credentials_provider"])
def test_aws_profile_is_ignored_beside_a_session_or_provider(source: str) -> None:
    given: dict[str, Any] = {source: Opaque()}
    made = settings(environ={"AWS_PROFILE": "dev"}, **given)
    assert made.profile is None
    assert isinstance(getattr(made, source), Opaque)


@pytest.mark.parametrize(
    "options",
    [
        {"session": Opaque(), "profile": "dev"},
        {"session": Opaque(), "credentials_provider": Opaque()},
        {"credentials_provider": Opaque(), "profile": "dev"},
    ],
)
def test_two_credentials_sources_are_refused(options: dict[str, Any]) -> None:
    assert "pass one credentials source, not" in refused(**options)


def test_a_profile_in_the_url_beside_a_session_is_refused() -> None:
    assert "not session and profile" in refused(f"{URL}?profile=dev", session=Opaque())


def test_objects_are_keyword_arguments_only() -> None:
    message = refused(f"{URL}?session=mine")
    assert "session is an object: pass it as a keyword argument" in message


def test_the_repr_never_shows_a_session_or_provider() -> None:
    for source in ("session", "credentials_provider"):
        given: dict[str, Any] = {source: Opaque()}
        shown = repr(settings(**given))
        assert "Opaque" not in shown
        assert "AKIA" not in shown
        assert source not in shown
        assert ENDPOINT in shown


def test_settings_compare_without_their_objects() -> None:
    assert settings(session=Opaque()) == settings(session=Opaque())


# -- what the URL may carry -----------------------------------------------------------------------


def test_driver_options_are_returned_for_the_driver() -> None:
    _, options = ConnectionSettings.from_url(
        make_url(f"{URL}?command_timeout=5&region=us-east-1"), {}, DriverFamily.ASYNCPG, {}
    )
    assert options == {"command_timeout": "5"}
    _, options = ConnectionSettings.from_url(
        make_url(f"{URL}?keepalives_idle=30&target_session_attrs=read-write"),
        {},
        DriverFamily.LIBPQ,
        {},
    )
    assert options == {"keepalives_idle": "30", "target_session_attrs": "read-write"}


def test_a_driver_option_of_the_other_family_is_unknown() -> None:
    message = refused(f"{URL}?keepalives_idle=30", family=DriverFamily.ASYNCPG)
    assert "unknown URL parameter 'keepalives_idle'" in message
    assert "asyncpg options: command_timeout" in message
    assert "pass anything else to the driver in connect_args" in message
    message = refused(f"{URL}?command_timeout=5", family=DriverFamily.LIBPQ)
    assert "libpq options: client_encoding" in message


def test_every_setting_but_the_objects_is_a_url_parameter() -> None:
    assert set(SETTING_NAMES) >= {"region", "profile", "port", "hostaddr", "sslmode"}
    listed = refused(f"{URL}?nope=1")
    for name in SETTING_NAMES:
        assert (name in listed) is (name not in ("session", "credentials_provider")), name


# -- refusals, each with its advice ---------------------------------------------------------------

PASSWORD = "hunter2-not-a-token"

REFUSALS: list[tuple[str, str, dict[str, Any], tuple[str, ...]]] = [
    # (id, URL, keyword arguments, phrases of the message)
    (
        "password-in-url",
        f"auroradsql+asyncpg://admin:{PASSWORD}@{ENDPOINT}/postgres",
        {},
        ("the URL carries a password", "signs a fresh IAM token", "AWS_PROFILE or profile="),
    ),
    *(
        (
            f"secret-parameter-{name}",
            f"{URL}?{name}={PASSWORD}",
            {},
            (f"the URL parameter {name}= carries a password",),
        )
        for name in ("password", "passfile", "sslpassword", "token", "aws_secret_access_key")
    ),
    *(
        (f"renamed-{old}", f"{URL}?{old}=x", {}, (f"unknown URL parameter '{old}'", new))
        for old, new in (
            ("ssl", "write sslmode instead"),
            ("dbname", "the URL's database"),
            ("host", "the URL's host"),
            ("user", "the URL's user name"),
            ("token_duration_secs", "write token_lifetime instead"),
            ("aws_region", "write region instead"),
            ("aws_profile", "write profile instead"),
            ("sslnegotiation", "write direct_tls instead"),
        )
    ),
    ("no-host", "auroradsql+asyncpg:///postgres", {}, ("the URL names no host",)),
    (
        "malformed-endpoint",
        "auroradsql+asyncpg://admin@abc.dsql.on.aws/postgres",
        {},
        ("is not a valid Aurora DSQL endpoint", "<cluster-id>.dsql.<region>.on.aws"),
    ),
    (
        "endpoint-with-a-typo",
        "auroradsql+asyncpg://admin@abc.dsql.us-east-1.on.aws.com/postgres",
        {},
        ("is not a valid Aurora DSQL endpoint", "aws dsql get-cluster"),
    ),
    (
        "malformed-region",
        f"{URL}?region=useast1",
        {},
        ("region='useast1' is not an AWS Region name", "lower case, dashes, a number"),
    ),
    ("region-not-a-string", URL, {"region": 1}, ("region must be a string, got int",)),
    (
        "given-twice-in-the-url",
        f"{URL}?connect_timeout=1&connect_timeout=2",
        {},
        ("the URL gives connect_timeout 2 times (1, 2); give it once",),
    ),
    (
        "given-in-url-and-kwargs",
        f"{URL}?connect_timeout=1",
        {"connect_timeout": 2},
        ("connect_timeout is given twice, '1' in the URL and 2 as a keyword argument",),
    ),
    (
        "port-after-the-host-and-as-parameter",
        f"auroradsql+asyncpg://admin@{ENDPOINT}:5432/postgres?port=5433",
        {},
        ("the URL gives the port twice, 5432 and port=5433; keep the one after the host",),
    ),
    (
        "several-hosts",
        f"auroradsql+asyncpg://admin@{ENDPOINT},other.internal/postgres",
        {},
        ("names several hosts", "connects to one cluster endpoint"),
    ),
    (
        "other-database",
        f"auroradsql+asyncpg://admin@{ENDPOINT}/app",
        {},
        ("database 'app'", "end the URL with /postgres (or nothing)"),
    ),
    *(
        (f"port-{port}", f"{URL}?port={port}", {}, (f"port='{port}' is not a TCP port",))
        for port in ("0", "70000", "-1", "http")
    ),
    ("port-true", URL, {"port": True}, ("port=True is not a TCP port",)),
    (
        "number-not-a-number",
        f"{URL}?max_connection_age=1h",
        {},
        ("max_connection_age='1h' is not a number of seconds; write e.g. max_connection_age=30",),
    ),
    ("number-not-finite", f"{URL}?connect_timeout=inf", {}, ("must be a finite number",)),
    ("number-nan", f"{URL}?connection_age_jitter=nan", {}, ("must be a finite number",)),
    (
        "token-lifetime-not-whole",
        URL,
        {"token_lifetime": 1.5},
        ("token_lifetime=1.5 must be a whole number of seconds",),
    ),
    (
        "token-lifetime-words",
        f"{URL}?token_lifetime=15m",
        {},
        ("is not a whole number of seconds; write e.g. token_lifetime=900",),
    ),
    (
        "token-lifetime-over-a-week",
        f"{URL}?token_lifetime=604801",
        {},
        ("token lifetime must be between 1 s and one week (604800 s)",),
    ),
    ("token-lifetime-zero", f"{URL}?token_lifetime=0", {}, ("between 1 s and one week",)),
    ("age-zero", f"{URL}?max_connection_age=0", {}, ("max_connection_age must be positive",)),
    (
        "jitter-negative",
        f"{URL}?connection_age_jitter=-1",
        {},
        ("connection_age_jitter must be at least 0 and below max_connection_age",),
    ),
    (
        "jitter-as-long-as-the-age",
        f"{URL}?max_connection_age=60&connection_age_jitter=60",
        {},
        ("below max_connection_age (60.0 s), got 60.0",),
    ),
    ("timeout-zero", f"{URL}?connect_timeout=0", {}, ("connect_timeout must be positive",)),
    (
        "flag-not-a-flag",
        f"{URL}?direct_tls=maybe",
        {},
        ("direct_tls='maybe' is not a yes/no value; write direct_tls=true or false",),
    ),
    (
        "sslmode-prefer",
        f"{URL}?sslmode=prefer",
        {},
        ("sslmode='prefer' is not supported: use 'verify-full'", "'verify-ca', 'require'"),
    ),
    (
        "sslmode-require-towards-dsql",
        f"{URL}?sslmode=require",
        {},
        ("would send the IAM token over a connection whose server is not verified",),
    ),
    (
        "sslmode-verify-ca-towards-dsql",
        f"{URL}?sslmode=verify-ca",
        {},
        ("use sslmode='verify-full'", "allow_insecure_tls=True if you really mean it"),
    ),
    (
        "direct-tls-without-tls",
        f"{PROXY}&sslmode=disable&direct_tls=true",
        {},
        ("direct_tls=True starts TLS at once, and sslmode='disable' forbids it",),
    ),
]


@pytest.mark.parametrize(
    ("url", "options", "phrases"), [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS]
)
def test_refusals_say_what_to_write_instead(
    url: str, options: dict[str, Any], phrases: tuple[str, ...]
) -> None:
    message = refused(url, **options)
    for phrase in phrases:
        assert phrase in message
    assert PASSWORD not in message


def test_a_bad_sslmode_from_the_environment_names_the_variable() -> None:
    assert "PGSSLMODE='allow' is not supported" in refused(environ={"PGSSLMODE": "allow"})


def test_allow_insecure_tls_lets_a_weaker_mode_through() -> None:
    made = settings(f"{URL}?sslmode=require&allow_insecure_tls=true")
    assert made.sslmode is SSLMode.REQUIRE


def test_towards_a_proxy_weaker_modes_need_no_permission() -> None:
    assert settings(f"{PROXY}&sslmode=disable").sslmode is SSLMode.DISABLE


# -- hostaddr for libpq ------------------------------------------------------------------------


def test_numeric_hostaddr() -> None:
    assert settings().numeric_hostaddr() is None
    assert settings(hostaddr="10.1.2.3").numeric_hostaddr() == "10.1.2.3"
    assert settings(hostaddr="::1").numeric_hostaddr() == "::1"
    assert settings(hostaddr="localhost").numeric_hostaddr() == "127.0.0.1"
    with pytest.raises(ConfigurationError, match=r"does not resolve .*pass an IP address"):
        settings(hostaddr="no-such-host.invalid").numeric_hostaddr()
