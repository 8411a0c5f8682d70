"""Sequences through the emulator with every driver: the cases Amazon's dialect tests."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Integer,
    MetaData,
    Sequence,
    String,
    Table,
    select,
    text,
)
from sqlalchemy.schema import CreateSequence

from harness.dialect import DRIVERS, Driver
from sqlalchemy_dsql.local import LocalDSQL

pytestmark = pytest.mark.integration


@pytest.fixture(params=DRIVERS)
async def driver(request: pytest.FixtureRequest, dsql: LocalDSQL) -> AsyncIterator[Driver]:
    made = Driver(dsql, request.param)
    yield made
    await made.dispose()


def _name(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


async def test_integer_sequence_is_created_as_bigint(driver: Driver) -> None:
    metadata = MetaData()
    seq = Sequence(_name("int_seq"), data_type=Integer(), start=42, metadata=metadata)
    table = Table(_name("int_seq_t"), metadata, Column("id", Integer, seq), Column("txt", String))

    def check(conn: Connection) -> tuple[str, int]:
        metadata.create_all(conn)
        conn.execute(table.insert().values(txt="first"))
        conn.commit()
        declared = conn.execute(
            text("SELECT data_type FROM information_schema.sequences WHERE sequence_name = :n"),
            {"n": seq.name},
        ).scalar_one()
        value = conn.execute(select(table.c.id)).scalar_one()
        metadata.drop_all(conn)
        conn.commit()
        return declared, value

    assert await driver.run(check) == ("bigint", 42)


async def test_optional_sequence_fills_a_non_key_column(driver: Driver) -> None:
    # SQLAlchemy neither creates nor uses an optional sequence on PostgreSQL: the
    # application creates it, and the column's DEFAULT draws from it.
    metadata = MetaData()
    seq = Sequence(_name("opt_seq"), start=3_000_000_000, optional=True, metadata=metadata)
    table = Table(_name("opt_t"), metadata, Column("id", BigInteger, seq), Column("txt", String))

    def check(conn: Connection) -> list[int]:
        conn.execute(CreateSequence(seq))
        conn.commit()
        table.create(conn)
        conn.commit()
        conn.execute(table.insert().values(txt="a"))
        conn.execute(table.insert().values(txt="b"))
        conn.commit()
        values = list(conn.execute(select(table.c.id).order_by(table.c.id)).scalars())
        table.drop(conn)
        conn.execute(text(f"DROP SEQUENCE {seq.name}"))
        conn.commit()
        return values

    first, second = await driver.run(check)
    assert first >= 3_000_000_000
    assert second > first
