"""Engines on an emulator through its URL, and the checks that no secret shows.

An emulator's ``url()`` carries no secret: the ``auroradsql`` dialect signs a
token per connection with the usual AWS chain, which holds the emulators' test
key pair while the ``aws_test_keys`` fixture (or ``dsql``) is in use.
"""

from __future__ import annotations

import traceback
from collections.abc import Iterable
from typing import Any, Protocol

import aioboto3
import boto3
from botocore.credentials import Credentials
from sqlalchemy import URL, Engine, create_engine, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

# Settings the emulator's URL already carries, which a test may replace (None: leave out).
_URL_QUERY_SETTINGS = ("hostaddr", "sslrootcert")


class Emulator(Protocol):
    """What these helpers need of an emulator, in this process or spawned."""

    @property
    def credentials(self) -> Credentials: ...
    def url(self, driver: str = "asyncpg", user: str = "admin") -> str: ...


def aio_session(dsql: Emulator) -> Any:
    """An aioboto3 session with the test key pair, for tests that pass ``session=``."""
    return aioboto3.Session(
        aws_access_key_id=dsql.credentials.access_key,
        aws_secret_access_key=dsql.credentials.secret_key,
    )


def boto3_session(dsql: Emulator) -> boto3.Session:
    """A boto3 session with the test key pair, for tests that pass ``session=``."""
    return boto3.Session(
        aws_access_key_id=dsql.credentials.access_key,
        aws_secret_access_key=dsql.credentials.secret_key,
    )


def emulator_url(dsql: Emulator, driver: str, options: dict[str, Any]) -> URL:
    """``dsql.url(driver)`` with what ``options`` replaces in it, taken out of ``options``.

    ``user``, ``host``, ``port`` and ``database`` replace the URL's own; ``hostaddr`` and
    ``sslrootcert`` replace its parameters (given twice, a setting would be
    refused). A None value leaves the setting out, to the environment or the
    default.
    """
    url = make_url(dsql.url(driver, user=options.pop("user", "admin")))
    for part in ("host", "port", "database"):
        if part in options:
            # URL.set() would take None for "unchanged"; _replace() is NamedTuple's own.
            url = url._replace(**{part: options.pop(part)})
    for name in _URL_QUERY_SETTINGS:
        if name in options:
            url = url.difference_update_query([name])
            if options[name] is None:
                del options[name]
    return url


def async_engine(dsql: Emulator, driver: str = "asyncpg", **kwargs: Any) -> AsyncEngine:
    """``create_async_engine(dsql.url(driver), **kwargs)``; see :func:`emulator_url`."""
    return create_async_engine(emulator_url(dsql, driver, kwargs), **kwargs)


def sync_engine(dsql: Emulator, driver: str = "psycopg", **kwargs: Any) -> Engine:
    """``create_engine(dsql.url(driver), **kwargs)``; see :func:`emulator_url`."""
    return create_engine(emulator_url(dsql, driver, kwargs), **kwargs)


def secrets_of(dsql: Emulator) -> list[str]:
    """Strings that must never show: any token's signature marker and the secret key."""
    return ["X-Amz-Signature", "X-Amz-Credential", dsql.credentials.secret_key]


def assert_no_secrets(texts: Iterable[str], secrets: Iterable[str]) -> None:
    joined = "\n".join(texts)
    for secret in secrets:
        assert secret not in joined, f"a secret ({secret[:12]}...) leaked"


def exception_texts(error: BaseException) -> list[str]:
    """Everything a user could see of an error: str, repr and the full chained traceback."""
    return [str(error), repr(error), "".join(traceback.format_exception(error))]
