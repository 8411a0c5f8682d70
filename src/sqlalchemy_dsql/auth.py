"""Aurora DSQL endpoints and IAM authentication tokens.

DSQL has no passwords: a client sends a short-lived IAM token, a SigV4
presigned URL that botocore computes locally (no network call), for the action
``DbConnectAdmin`` when it logs in as ``admin`` and ``DbConnect`` for any other
role. Creating a boto3 session and client costs tens of milliseconds, so a
generator is made once per (region, credentials source) and keeps its client;
a token from a reused client costs well under a millisecond.

:func:`resolve_endpoint` turns a full endpoint
(``<cluster-id>.dsql.<region>.on.aws``) or a bare cluster id plus a region
into the host name tokens are signed for.

:class:`TokenGenerator` signs with boto3 (for synchronous drivers);
:class:`AsyncTokenGenerator` signs with aioboto3, so that refreshing temporary
credentials (STS, SSO, instance metadata: network calls) never blocks the
event loop. Use :func:`token_generator` / :func:`async_token_generator` to get
the shared instance for a credentials source.

Credentials come from one source per generator: a boto3/aioboto3 session, a
profile name, a botocore credential provider (``credentials_provider``, what
Amazon's connector calls ``custom_credentials_provider``), or the default
chain. A synchronous botocore provider given to the async generator is loaded
in a worker thread, so it cannot block the loop either.

Tokens and secret keys never appear in the reprs or error messages of these
classes. botocore logs the canonical request and the signature of every SigV4
signing at DEBUG level, and for a DSQL token those lines are the token itself:
importing this module installs a filter on the ``botocore.auth`` logger that
blanks them.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import re
from dataclasses import dataclass
from typing import Any

from .errors import ConfigurationError

__all__ = [
    "DEFAULT_TOKEN_LIFETIME",
    "AsyncTokenGenerator",
    "Endpoint",
    "TokenGenerator",
    "action_for",
    "async_token_generator",
    "resolve_endpoint",
    "token_generator",
]


class _RedactSigning(logging.Filter):
    """Blank botocore's signing debug lines, from which a presigned token can be rebuilt."""

    _SECRET_LINES = ("CanonicalRequest:", "StringToSign:", "Signature:")

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str) and record.msg.startswith(self._SECRET_LINES):
            record.msg = record.msg.split(":", 1)[0] + ": (redacted by sqlalchemy_dsql)"
            record.args = ()
        return True


def _install_redaction() -> None:
    signing_log = logging.getLogger("botocore.auth")
    if not any(isinstance(f, _RedactSigning) for f in signing_log.filters):
        signing_log.addFilter(_RedactSigning())


_install_redaction()

DEFAULT_TOKEN_LIFETIME = 900  # seconds; a token is only checked when a connection opens
_MAX_TOKEN_LIFETIME = 7 * 24 * 3600
_DSQL_HOST = re.compile(
    r"^(?P<cluster>[a-z0-9]+)\.dsql(?:-[a-z0-9]+)?\.(?P<region>[a-z]{2}(?:-[a-z]+)+-\d+)\.on\.aws$"
)
# Cluster ids are 26 lowercase letters and digits; allow some slack, not a host name.
_CLUSTER_ID = re.compile(r"^[a-z0-9]{20,40}$")


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A DSQL cluster's host name and region."""

    host: str
    region: str

    @property
    def is_dsql(self) -> bool:
        """Whether ``host`` is an Aurora DSQL endpoint (as opposed to a proxy or emulator)."""
        return _DSQL_HOST.match(self.host) is not None


def resolve_endpoint(host: str, region: str | None = None) -> Endpoint:
    """The endpoint for ``host``: a full DSQL endpoint, or a bare cluster id plus ``region``.

    The region is read from a DSQL endpoint when not given. Any other host
    name (a local emulator's, say) needs ``region``.
    """
    name = host.strip().lower().rstrip(".")
    if not name:
        raise ConfigurationError(
            "the DSQL host is empty: pass the cluster endpoint "
            "(<cluster-id>.dsql.<region>.on.aws) or a cluster id with region="
        )
    match = _DSQL_HOST.match(name)
    if match is not None:
        own = match["region"]
        if region is not None and region != own:
            raise ConfigurationError(
                f"region {region!r} does not match the endpoint {name!r}, which is in {own!r}; "
                f"drop region= or fix the host"
            )
        return Endpoint(name, own)
    if region is None:
        if _CLUSTER_ID.match(name):
            raise ConfigurationError(
                f"{name!r} looks like a bare cluster id, which needs region=...; or pass the "
                f"full endpoint {name}.dsql.<region>.on.aws"
            )
        raise ConfigurationError(
            f"cannot read an AWS region from host {name!r} (not a *.dsql.<region>.on.aws "
            f"endpoint); pass region="
        )
    if _CLUSTER_ID.match(name):
        return Endpoint(f"{name}.dsql.{region}.on.aws", region)
    return Endpoint(name, region)


def action_for(user: str) -> str:
    """The IAM action a token for ``user`` must carry."""
    return "DbConnectAdmin" if user == "admin" else "DbConnect"


def check_token_lifetime(expires_in: int) -> None:
    if not 1 <= expires_in <= _MAX_TOKEN_LIFETIME:
        raise ConfigurationError(
            f"token lifetime must be between 1 s and one week ({_MAX_TOKEN_LIFETIME} s), "
            f"got {expires_in}"
        )


def _no_credentials(region: str) -> ConfigurationError:
    return ConfigurationError(
        f"no AWS credentials found to sign a DSQL token in {region}: set AWS_ACCESS_KEY_ID and "
        f"AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN), AWS_PROFILE, or pass session= / profile="
    )


def _unknown_profile(error: Exception) -> ConfigurationError:
    profile = getattr(error, "kwargs", {}).get("profile", "?")
    return ConfigurationError(
        f"the AWS profile {profile!r} (profile= or AWS_PROFILE) is not in the AWS config or "
        f"credentials file (~/.aws/config, ~/.aws/credentials, or AWS_CONFIG_FILE / "
        f"AWS_SHARED_CREDENTIALS_FILE): check its name, create it (aws configure --profile "
        f"{profile}), or pass session= instead"
    )


class _Generator:
    """What both generators share: the credentials source, the count, a safe repr."""

    def __init__(
        self,
        region: str,
        *,
        session: Any = None,
        profile: str | None = None,
        credentials_provider: Any = None,
    ) -> None:
        given = [
            name
            for name, value in (
                ("session", session),
                ("profile", profile),
                ("credentials_provider", credentials_provider),
            )
            if value is not None
        ]
        if len(given) > 1:
            raise ConfigurationError(
                f"pass one credentials source, not {' and '.join(given)}: a session, a profile "
                f"or a credentials_provider"
            )
        self.region = region
        self._session = session
        self._profile = profile
        self._provider = credentials_provider
        self._client: Any = None
        self.minted = 0

    def __repr__(self) -> str:
        if self._profile:
            source = f"profile={self._profile!r}"
        elif self._provider is not None:
            source = f"provider={type(self._provider).__name__}"
        else:
            source = "session" if self._session else "default"
        return f"<{type(self).__name__} region={self.region!r} credentials={source}>"


def _signer(client: Any, user: str) -> Any:
    if user == "admin":
        return client.generate_db_connect_admin_auth_token
    return client.generate_db_connect_auth_token


class TokenGenerator(_Generator):
    """Signs DSQL tokens with one reused boto3 client (synchronous drivers)."""

    def token(self, host: str, user: str, expires_in: int = DEFAULT_TOKEN_LIFETIME) -> str:
        """A fresh token for ``user`` at ``host``."""
        check_token_lifetime(expires_in)
        from botocore.exceptions import NoCredentialsError

        client = self._client or self._make_client()
        try:
            token = str(_signer(client, user)(host, self.region, expires_in))
        except NoCredentialsError:
            # A client keeps the credentials it found when made, none here: the next
            # connection makes a new one, which looks again (a role or a key set later).
            self._client = None
            raise _no_credentials(self.region) from None
        self.minted += 1
        return token

    def _make_client(self) -> Any:
        import boto3
        from botocore.exceptions import ProfileNotFound

        session = self._session
        try:
            if session is None:
                botocore_session = None
                if self._provider is not None:
                    import botocore.session

                    botocore_session = botocore.session.Session()
                    _put_first(botocore_session, self._provider)
                session = boto3.Session(
                    profile_name=self._profile, botocore_session=botocore_session
                )
            self._client = session.client("dsql", region_name=self.region)
        except ProfileNotFound as error:
            raise _unknown_profile(error) from None
        return self._client


class AsyncTokenGenerator(_Generator):
    """Signs DSQL tokens with one reused aioboto3 client; never blocks the event loop.

    The client belongs to the event loop that first used the generator; call
    :meth:`close` (or use :func:`async_token_generator`, which keeps one per
    loop) when the loop is done with it.
    """

    def __init__(self, region: str, **credentials_source: Any) -> None:
        super().__init__(region, **credentials_source)
        self._exit_stack = contextlib.AsyncExitStack()
        self._lock = asyncio.Lock()
        self.loop: asyncio.AbstractEventLoop | None = None

    async def token(self, host: str, user: str, expires_in: int = DEFAULT_TOKEN_LIFETIME) -> str:
        """A fresh token for ``user`` at ``host``, signed without blocking the loop."""
        check_token_lifetime(expires_in)
        from botocore.exceptions import NoCredentialsError

        client = self._client or await self._make_client()
        try:
            token = str(await _signer(client, user)(host, self.region, expires_in))
        except NoCredentialsError:
            # As in TokenGenerator.token: the next connection looks for credentials again.
            async with self._lock:
                if self._client is client:
                    await self.close()
            raise _no_credentials(self.region) from None
        self.minted += 1
        return token

    async def close(self) -> None:
        self._client = None
        await self._exit_stack.aclose()

    async def _make_client(self) -> Any:
        async with self._lock:
            if self._client is None:
                import aioboto3
                from botocore.exceptions import ProfileNotFound

                session = self._session
                try:
                    if session is None:
                        botocore_session = None
                        if self._provider is not None:
                            from aiobotocore.session import AioSession

                            botocore_session = AioSession()
                            _put_first(botocore_session, _async_provider(self._provider))
                        session = aioboto3.Session(
                            profile_name=self._profile, botocore_session=botocore_session
                        )
                    self._client = await self._exit_stack.enter_async_context(
                        session.client("dsql", region_name=self.region)
                    )
                except ProfileNotFound as error:
                    raise _unknown_profile(error) from None
            return self._client


def _put_first(botocore_session: Any, provider: Any) -> None:
    """Make ``provider`` the first place the session looks for credentials."""
    resolver = botocore_session.get_component("credential_provider")
    resolver.providers.insert(0, provider)


def _async_provider(provider: Any) -> Any:
    """``provider`` as aiobotocore needs it: a coroutine ``load``.

    An aiobotocore provider is used as is; a synchronous botocore one is loaded,
    and its credentials refreshed, in a worker thread.
    """
    if inspect.iscoroutinefunction(provider.load):
        return provider
    from aiobotocore.credentials import AioCredentials, AioRefreshableCredentials
    from botocore.credentials import CredentialProvider

    class ThreadedProvider(CredentialProvider):
        METHOD = CANONICAL_NAME = f"threaded-{getattr(provider, 'METHOD', 'custom')}"

        async def load(self) -> Any:
            credentials = await asyncio.to_thread(provider.load)
            if credentials is None:
                return None

            async def metadata() -> dict[str, Any]:
                frozen = await asyncio.to_thread(credentials.get_frozen_credentials)
                return {
                    "access_key": frozen.access_key,
                    "secret_key": frozen.secret_key,
                    "token": frozen.token,
                    "expiry_time": credentials._expiry_time.isoformat(),
                }

            if getattr(credentials, "_expiry_time", None) is None:
                frozen = await asyncio.to_thread(credentials.get_frozen_credentials)
                return AioCredentials(frozen.access_key, frozen.secret_key, frozen.token)
            return AioRefreshableCredentials.create_from_metadata(
                await metadata(), refresh_using=metadata, method=self.METHOD
            )

    return ThreadedProvider()


_generators: dict[tuple[Any, ...], TokenGenerator] = {}
_async_generators: dict[tuple[Any, ...], AsyncTokenGenerator] = {}


def token_generator(
    region: str,
    *,
    session: Any = None,
    profile: str | None = None,
    credentials_provider: Any = None,
) -> TokenGenerator:
    """The shared :class:`TokenGenerator` for this region and credentials source."""
    # The cached generator keeps the session/provider alive, so its id stays unique.
    key = (region, id(session), profile, id(credentials_provider))
    generator = _generators.get(key)
    if generator is None:
        generator = _generators[key] = TokenGenerator(
            region, session=session, profile=profile, credentials_provider=credentials_provider
        )
    return generator


def async_token_generator(
    region: str,
    *,
    session: Any = None,
    profile: str | None = None,
    credentials_provider: Any = None,
) -> AsyncTokenGenerator:
    """The shared :class:`AsyncTokenGenerator` for this region, credentials source and loop."""
    loop = asyncio.get_running_loop()
    key = (region, id(session), profile, id(credentials_provider), id(loop))
    generator = _async_generators.get(key)
    # A closed loop's id can be reused by a new one; its client must not be.
    if generator is None or generator.loop is not loop:
        # Test suites run a loop per test: forget the generators of loops that are gone.
        for stale in [k for k, g in _async_generators.items() if g.loop and g.loop.is_closed()]:
            del _async_generators[stale]
        generator = AsyncTokenGenerator(
            region, session=session, profile=profile, credentials_provider=credentials_provider
        )
        generator.loop = loop
        _async_generators[key] = generator
    return generator
