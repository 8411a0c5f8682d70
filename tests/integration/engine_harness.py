"""Engines pointed at an emulator: its endpoint, address, CA and test credentials."""

from __future__ import annotations

import traceback
from collections.abc import Iterable
from typing import Any

import aioboto3
import boto3
from sqlalchemy import Engine
from sqlalchemy.ext.asyncio import AsyncEngine

from sqlalchemy_dsql import create_async_dsql_engine, create_dsql_engine
from sqlalchemy_dsql.local import LocalDSQL


def aio_session(dsql: LocalDSQL) -> Any:
    return aioboto3.Session(
        aws_access_key_id=dsql.credentials.access_key,
        aws_secret_access_key=dsql.credentials.secret_key,
    )


def boto3_session(dsql: LocalDSQL) -> boto3.Session:
    return boto3.Session(
        aws_access_key_id=dsql.credentials.access_key,
        aws_secret_access_key=dsql.credentials.secret_key,
    )


def async_engine(dsql: LocalDSQL, **kwargs: Any) -> AsyncEngine:
    options: dict[str, Any] = {
        "session": aio_session(dsql),
        "hostaddr": dsql.host,
        "port": dsql.port,
        "sslrootcert": dsql.ca_file,
    }
    options.update(kwargs)
    return create_async_dsql_engine(options.pop("host", dsql.endpoint), **options)


def sync_engine(dsql: LocalDSQL, driver: str = "psycopg", **kwargs: Any) -> Engine:
    options: dict[str, Any] = {
        "session": boto3_session(dsql),
        "hostaddr": dsql.host,
        "port": dsql.port,
        "sslrootcert": dsql.ca_file,
    }
    options.update(kwargs)
    return create_dsql_engine(options.pop("host", dsql.endpoint), "admin", driver, **options)


def secrets_of(dsql: LocalDSQL) -> list[str]:
    """Strings that must never show: any token's signature marker and the secret key."""
    return ["X-Amz-Signature", "X-Amz-Credential", dsql.credentials.secret_key]


def assert_no_secrets(texts: Iterable[str], secrets: Iterable[str]) -> None:
    joined = "\n".join(texts)
    for secret in secrets:
        assert secret not in joined, f"a secret ({secret[:12]}...) leaked"


def exception_texts(error: BaseException) -> list[str]:
    """Everything a user could see of an error: str, repr and the full chained traceback."""
    return [str(error), repr(error), "".join(traceback.format_exception(error))]
