"""DSQL's quotas as the emulator enforces them: the one place their defaults are written.

:class:`Limits` is read by the proxy's sessions, built by
:class:`~sqlalchemy_dsql.local.LocalDSQL` from its keyword arguments, and
turned into ``dsql-local``'s options (names, defaults and help texts) by the
CLI, so that none of them repeats a number.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

__all__ = ["Limits"]


def _limit(default: float, help_text: str, metavar: str) -> Any:
    return field(default=default, metadata={"help": help_text, "metavar": metavar})


@dataclass(frozen=True, slots=True)
class Limits:
    """DSQL's quotas: per cluster, per connection and per transaction (seconds, rows, bytes).

    The defaults are DSQL's documented quotas; ``lock_timeout_ms`` is the
    emulator's own (how long PostgreSQL may wait for a lock before the wait
    is reported as a conflict, since DSQL never waits).
    """

    max_connection_age: float = _limit(
        3600.0, "connections are closed at this age (DSQL: one hour)", "SECONDS"
    )
    max_transaction_age: float = _limit(300.0, "transaction age limit (DSQL: 5 minutes)", "SECONDS")
    max_rows_per_transaction: int = _limit(3000, "rows one transaction may modify", "ROWS")
    max_connections: int = _limit(10_000, "open connections per cluster", "CONNECTIONS")
    connections_per_second: float = _limit(
        100.0, "sustained rate of new connections per cluster", "RATE"
    )
    connection_burst: int = _limit(
        1000, "new connections allowed in a burst above that rate", "CONNECTIONS"
    )
    lock_timeout_ms: int = _limit(
        50, "a lock wait this long becomes an OC000 conflict (0: wait like PostgreSQL)", "MS"
    )
    max_transaction_bytes: int = _limit(
        10 * 1024 * 1024, "data one transaction may write, judged at COMMIT (DSQL: 10 MiB)", "BYTES"
    )
    max_value_bytes: int = _limit(
        1024 * 1024,
        "a written value whose compressed size is over this is refused (DSQL: 1 MiB)",
        "BYTES",
    )
    max_message_bytes: int = _limit(
        10 * 1024 * 1024,
        "a client message larger than this closes the connection (DSQL: 10 MiB)",
        "BYTES",
    )

    def __post_init__(self) -> None:
        if (
            self.max_connection_age < 1
            or self.max_transaction_age <= 0
            or min(
                self.max_rows_per_transaction,
                self.max_connections,
                self.connection_burst,
                self.max_transaction_bytes,
                self.max_value_bytes,
                self.max_message_bytes,
            )
            < 1
            or self.connections_per_second <= 0
            or self.lock_timeout_ms < 0
        ):
            raise ValueError(
                "limits must be positive: max_connection_age >= 1 s, max_transaction_age > 0, "
                "connections_per_second > 0, max_rows_per_transaction, max_connections, "
                "connection_burst and the byte limits >= 1, and lock_timeout_ms >= 0; got "
                + ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in fields(self))
            )
