"""DSQL's quotas as the emulator enforces them: the one place their defaults live.

The CLI's options, :class:`~sqlalchemy_dsql.local.LocalDSQL`'s arguments and
each session read their defaults from :class:`Limits`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Limits:
    """DSQL's quotas: per cluster, per connection and per transaction (seconds, rows, bytes)."""

    max_connection_age: float = 3600.0
    max_transaction_age: float = 300.0
    max_rows_per_transaction: int = 3000
    max_connections: int = 10_000
    connections_per_second: float = 100.0
    connection_burst: int = 1000
    lock_timeout_ms: int = 50
    max_transaction_bytes: int = 10 * 1024 * 1024
    max_message_bytes: int = 10 * 1024 * 1024
