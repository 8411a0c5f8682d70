"""What the pet clinic's tests share: the tables, the writes, the 409, the environments."""

from __future__ import annotations

import datetime
import os
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from sqlalchemy_dsql import RetryPolicy
from sqlalchemy_dsql.local import LocalDSQL

OC000 = "change conflicts with another transaction (OC000)"
POLICY = RetryPolicy(max_attempts=3, base_delay=0.001, max_delay=0.005)
TABLES = ["vet_specialty", "pet", "owner", "vet", "specialty"]  # children first
TOMORROW = (datetime.date.today() + datetime.timedelta(days=1)).isoformat()
CONFLICT = {
    "error": "conflict",
    "detail": (
        "the transaction conflicted with concurrent transactions and was rolled back; "
        f"gave up after {POLICY.max_attempts} attempts (SQLSTATE OC000). The request can "
        "be sent again."
    ),
    "attempts": POLICY.max_attempts,
    "sqlstate": "OC000",
}
# Every write endpoint, with a body; {owner}, {pet} and {vet} are keys of the seeded rows.
WRITES = [
    (
        "POST",
        "/owners",
        {
            "name": "Anne",
            "city": "Othertown",
            "pets": [{"name": "Tom", "birth_date": "2006-10-25"}],
        },
    ),
    ("PATCH", "/owners/{owner}", {"telephone": "555-555-0123"}),
    ("DELETE", "/owners/{owner}", None),
    ("POST", "/owners/{owner}/pets", {"name": "Bella", "birth_date": "2024-03-01"}),
    ("PATCH", "/pets/{pet}", {"name": "Max"}),
    ("DELETE", "/pets/{pet}", None),
    ("POST", "/specialties", {"name": "Birds"}),
    ("POST", "/vets", {"name": "Carlos Salazar", "specialties": ["Cats", "Dogs"]}),
    ("PATCH", "/vets/{vet}", {"specialties": ["Cats"]}),
    ("DELETE", "/vets/{vet}", None),
]
WRITE_IDS = [f"{method} {path}" for method, path, _ in WRITES]

Snapshot = dict[str, list[tuple[Any, ...]]]


async def empty_tables(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        for table in TABLES:
            await conn.execute(text(f"DELETE FROM {table}"))


async def snapshot(engine: AsyncEngine) -> Snapshot:
    """Every row of the clinic's tables."""
    async with engine.connect() as conn:
        return {
            table: sorted(map(tuple, await conn.execute(text(f"SELECT * FROM {table}"))), key=repr)
            for table in TABLES
        }


def effect(before: Snapshot, after: Snapshot) -> dict[str, int]:
    """Rows added (or removed, negative) per table, and rows changed in place, ``"changed"``.

    A unit of work that took effect twice adds twice the rows.
    """
    counts = {table: len(after[table]) - len(before[table]) for table in TABLES}
    counts["changed"] = sum(
        len(set(map(repr, after[t])) - set(map(repr, before[t]))) for t in TABLES
    )
    return counts


def clean_environment(**variables: str) -> dict[str, str]:
    """This process's environment without any AWS or libpq settings, plus ``variables``."""
    kept = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "PG", "CLUSTER_"))}
    return {**kept, **variables}


def cluster_environment(dsql: LocalDSQL, **extra: str) -> dict[str, str]:
    """The environment that points ``pet-clinic`` (and its migrations) at ``dsql`` as a cluster."""
    variables = {
        "CLUSTER_ENDPOINT": dsql.endpoint,
        "AWS_REGION": dsql.region,
        "AWS_ACCESS_KEY_ID": dsql.credentials.access_key,
        "AWS_SECRET_ACCESS_KEY": dsql.credentials.secret_key,
        "PGPORT": str(dsql.port),
        "PGHOSTADDR": dsql.host,
        "PGSSLROOTCERT": dsql.ca_file,
    }
    return clean_environment(**{**variables, **extra})
