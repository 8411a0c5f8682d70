"""Engines pointed at an emulator: its endpoint, address, CA and test credentials."""

from __future__ import annotations

import traceback
from collections.abc import Iterable
from typing import Any, Protocol

import aioboto3
import boto3
from botocore.credentials import Credentials
from sqlalchemy import Engine
from sqlalchemy.ext.asyncio import AsyncEngine

from sqlalchemy_dsql import create_async_dsql_engine, create_dsql_engine


class Emulator(Protocol):
    """What these helpers need of an emulator, in this process or spawned."""

    @property
    def endpoint(self) -> str: ...
    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def ca_file(self) -> str: ...
    @property
    def credentials(self) -> Credentials: ...


def aio_session(dsql: Emulator) -> Any:
    return aioboto3.Session(
        aws_access_key_id=dsql.credentials.access_key,
        aws_secret_access_key=dsql.credentials.secret_key,
    )


def boto3_session(dsql: Emulator) -> boto3.Session:
    return boto3.Session(
        aws_access_key_id=dsql.credentials.access_key,
        aws_secret_access_key=dsql.credentials.secret_key,
    )


def async_engine(dsql: Emulator, **kwargs: Any) -> AsyncEngine:
    options: dict[str, Any] = {
        "session": aio_session(dsql),
        "hostaddr": dsql.host,
        "port": dsql.port,
        "sslrootcert": dsql.ca_file,
    }
    options.update(kwargs)
    return create_async_dsql_engine(options.pop("host", dsql.endpoint), **options)


def sync_engine(dsql: Emulator, driver: str = "psycopg", **kwargs: Any) -> Engine:
    options: dict[str, Any] = {
        "session": boto3_session(dsql),
        "hostaddr": dsql.host,
        "port": dsql.port,
        "sslrootcert": dsql.ca_file,
    }
    options.update(kwargs)
    return create_dsql_engine(options.pop("host", dsql.endpoint), "admin", driver, **options)


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
