"""One source for DSQL's quota defaults: Limits, read by the CLI and LocalDSQL."""

from __future__ import annotations

import dataclasses
import inspect

import pytest

from sqlalchemy_dsql.local import Limits, LocalDSQL
from sqlalchemy_dsql.local.cli import _parser


def test_defaults_are_dsqls_quotas() -> None:
    assert Limits() == Limits(
        max_connection_age=3600.0,
        max_transaction_age=300.0,
        max_rows_per_transaction=3000,
        max_connections=10_000,
        connections_per_second=100.0,
        connection_burst=1000,
        lock_timeout_ms=50,
    )


def test_cli_options_come_from_limits() -> None:
    parser = _parser()
    defaults = vars(parser.parse_args([]))
    for limit in dataclasses.fields(Limits):
        assert defaults[limit.name] == limit.default
    text = parser.format_help()
    for limit in dataclasses.fields(Limits):
        assert "--" + limit.name.replace("_", "-") in text
    parsed = parser.parse_args(["--max-rows-per-transaction", "7", "--lock-timeout-ms", "0"])
    assert (parsed.max_rows_per_transaction, parsed.lock_timeout_ms) == (7, 0)


def test_local_dsql_defaults_come_from_limits() -> None:
    parameters = inspect.signature(LocalDSQL).parameters
    for limit in dataclasses.fields(Limits):
        assert parameters[limit.name].default == limit.default
    assert LocalDSQL()._limits == Limits()


@pytest.mark.parametrize(
    "bad",
    [
        {"max_connection_age": 0.5},
        {"max_transaction_age": 0},
        {"max_rows_per_transaction": 0},
        {"max_connections": 0},
        {"connections_per_second": 0},
        {"connection_burst": 0},
        {"lock_timeout_ms": -1},
    ],
)
def test_bad_limits_are_refused_with_the_value(bad: dict[str, float]) -> None:
    ((name, value),) = bad.items()
    with pytest.raises(ValueError, match=f"{name}={value!r}"):
        Limits(**bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="limits must be positive"):
        LocalDSQL(**bad)  # type: ignore[arg-type]
