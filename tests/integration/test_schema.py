"""sqlalchemy_dsql.schema: create_all / drop_all through the emulator, async and sync."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    Connection,
    ForeignKey,
    ForeignKeyConstraint,
    Identity,
    Index,
    Integer,
    MetaData,
    Sequence,
    String,
    Table,
    Uuid,
    exc,
    func,
    insert,
    inspect,
    nulls_first,
    select,
    text,
)
from sqlalchemy.ext.asyncio import AsyncEngine

from harness.dialect import Driver
from sqlalchemy_dsql import schema
from sqlalchemy_dsql.errors import AsyncJobFailed
from sqlalchemy_dsql.local import LocalDSQL

pytestmark = pytest.mark.integration


def clinic(prefix: str) -> MetaData:
    """FKs, a composite key, an identity, a sequence and every index option."""
    metadata = MetaData()
    owner = Table(
        f"{prefix}_owner",
        metadata,
        Column("id", BigInteger, primary_key=True),  # the autoincrement key: an identity
        Column("name", String(80), nullable=False),
        Column("email", String(200)),
        Column("city", String(80)),
        CheckConstraint("length(name) > 0", name=f"{prefix}_owner_name_nonempty"),
    )
    specialty = Table(
        f"{prefix}_specialty",
        metadata,
        Column("id", Uuid, primary_key=True, server_default=func.gen_random_uuid()),
        Column("name", String(80), nullable=False, unique=True),
    )
    vet = Table(
        f"{prefix}_vet",
        metadata,
        Column("id", BigInteger, Identity(cache=1), primary_key=True),
        Column("badge", BigInteger, Sequence(f"{prefix}_badge_seq", cache=65536)),
        Column("name", String(80)),
    )
    Table(
        f"{prefix}_vet_specialty",
        metadata,
        Column("vet_id", ForeignKey(vet.c.id), primary_key=True),
        Column("specialty_id", ForeignKey(specialty.c.id), primary_key=True),
    )
    pet = Table(
        f"{prefix}_pet",
        metadata,
        Column("owner_id", ForeignKey(owner.c.id), primary_key=True),
        Column("number", Integer, primary_key=True, autoincrement=False),
        Column("name", String(80)),
        Column("kind", String(20)),
    )
    Table(
        f"{prefix}_visit",
        metadata,
        Column("id", Uuid, primary_key=True, server_default=func.gen_random_uuid()),
        Column("owner_id", BigInteger, nullable=False),
        Column("pet_number", Integer, nullable=False),
        Column("note", String(200)),
        ForeignKeyConstraint(["owner_id", "pet_number"], [pet.c.owner_id, pet.c.number]),
    )
    Index(
        f"{prefix}_owner_email",
        owner.c.email,
        unique=True,
        auroradsql_include=["name"],
        auroradsql_nulls_not_distinct=True,
    )
    Index(
        f"{prefix}_owner_city", nulls_first(owner.c.city), postgresql_where=owner.c.city.isnot(None)
    )
    Index(f"{prefix}_owner_lower_name", func.lower(owner.c.name))
    Index(f"{prefix}_pet_kind", pet.c.kind, pet.c.name)
    return metadata


@pytest.fixture
async def asyncpg_driver(dsql: LocalDSQL) -> AsyncIterator[Driver]:
    made = Driver(dsql, "asyncpg")
    yield made
    await made.dispose()


async def test_create_all_and_drop_all_async(asyncpg_driver: Driver) -> None:
    metadata = clinic("sa")
    engine = asyncpg_driver.engine
    assert isinstance(engine, AsyncEngine)
    await schema.drop_all(engine, metadata)
    await schema.create_all(engine, metadata)
    # Idempotent: a second run finds everything in place.
    await schema.create_all(engine, metadata)

    def check(conn: Connection) -> None:
        inspector = inspect(conn)
        names = set(inspector.get_table_names())
        assert {t.name for t in metadata.sorted_tables} <= names
        indexes = {i["name"] for i in inspector.get_indexes("sa_owner")}
        assert {"sa_owner_email", "sa_owner_city", "sa_owner_lower_name"} <= indexes
        identity = {c["name"]: c.get("identity") for c in inspector.get_columns("sa_owner")}["id"]
        assert identity is not None
        assert identity["cache"] == 65536
        vet_identity = {c["name"]: c.get("identity") for c in inspector.get_columns("sa_vet")}
        assert vet_identity["id"]["cache"] == 1
        assert inspector.has_sequence("sa_badge_seq")
        pet_pk = inspector.get_pk_constraint("sa_pet")["constrained_columns"]
        assert pet_pk == ["owner_id", "number"]
        pet_columns = {c["name"]: c for c in inspector.get_columns("sa_pet")}
        assert pet_columns["number"].get("identity") is None
        conn.commit()  # end the inspector's read transaction
        with conn.begin():
            owner_id = conn.execute(
                insert(metadata.tables["sa_owner"]).values(name="Ana").returning(text("id"))
            ).scalar_one()
            conn.execute(
                insert(metadata.tables["sa_pet"]).values(owner_id=owner_id, number=1, name="Rex")
            )
        with conn.begin():
            badge = conn.execute(select(func.nextval("sa_badge_seq"))).scalar_one()
        assert badge >= 1

    await asyncpg_driver.run(check)
    await schema.drop_all(engine, metadata)

    def gone(conn: Connection) -> set[str]:
        return set(inspect(conn).get_table_names()) & {t.name for t in metadata.sorted_tables}

    assert await asyncpg_driver.run(gone) == set()


@pytest.mark.parametrize("name", ["psycopg", "psycopg2"])
async def test_create_all_and_drop_all_sync(dsql: LocalDSQL, name: str) -> None:
    driver = Driver(dsql, name)
    metadata = clinic(f"s_{name}")
    try:
        engine = driver.engine
        assert not isinstance(engine, AsyncEngine)
        schema.drop_all_sync(engine, metadata)
        schema.create_all_sync(engine, metadata)
        with engine.connect() as conn:
            assert {t.name for t in metadata.sorted_tables} <= set(inspect(conn).get_table_names())
        schema.drop_all_sync(engine, metadata)
    finally:
        await driver.dispose()


async def test_failed_unique_build_names_the_index(asyncpg_driver: Driver) -> None:
    metadata = MetaData()
    table = Table(
        "dup_people",
        metadata,
        Column("id", Uuid, primary_key=True, server_default=func.gen_random_uuid()),
        Column("email", String(100)),
    )
    engine = asyncpg_driver.engine
    assert isinstance(engine, AsyncEngine)
    await schema.drop_all(engine, metadata)
    await schema.create_all(engine, metadata)
    async with engine.begin() as conn:
        await conn.execute(insert(table), [{"email": "same@x"}, {"email": "same@x"}])
    Index("dup_people_email", table.c.email, unique=True)
    with pytest.raises(AsyncJobFailed, match='index "dup_people_email"') as caught:
        await schema.create_all(engine, metadata)
    assert caught.value.object_name == "dup_people_email"
    assert "failed" in str(caught.value)
    await schema.drop_all(engine, metadata)


async def test_compile_errors_stop_everything_before_it_starts(asyncpg_driver: Driver) -> None:
    metadata = MetaData()
    Table("never_first", metadata, Column("id", Uuid, primary_key=True))
    second = Table(
        "never_second", metadata, Column("id", Uuid, primary_key=True), Column("n", Integer)
    )
    Index("never_desc", second.c.n.desc())
    engine = asyncpg_driver.engine
    assert isinstance(engine, AsyncEngine)
    with pytest.raises(exc.CompileError, match="DESC"):
        await schema.create_all(engine, metadata)

    def tables(conn: Connection) -> set[str]:
        return set(inspect(conn).get_table_names()) & {"never_first", "never_second"}

    assert await asyncpg_driver.run(tables) == set()


def test_schema_functions_refuse_other_dialects() -> None:
    from sqlalchemy import create_engine

    engine = create_engine("sqlite://")
    with pytest.raises(exc.ArgumentError, match="auroradsql"):
        schema.create_all_sync(engine, MetaData())
