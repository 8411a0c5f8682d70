"""SQLModel on DSQL through a URL alone, sync and async, as its tutorial writes it.

``create_engine(url)`` / ``create_async_engine(url)`` and
``SQLModel.metadata.create_all``: the dialect commits each DDL statement on
its own (DSQL runs one per transaction) and builds the ``index=True``
indexes with ``CREATE INDEX ASYNC``, waiting for them. DSQL enforces foreign
keys (since its 2026-08 release; docs/dsql-evidence.md I18, I38), and so
does the emulator: a hero of a team that does not exist is refused.
"""

# No ``from __future__ import annotations``: SQLModel reads the models' annotations as
# objects, and a string "list['Hero']" is not one it resolves.
from collections.abc import AsyncIterator, Iterator

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlmodel import Field, Relationship, Session, SQLModel, col, create_engine, select
from sqlmodel.ext.asyncio.session import AsyncSession

from sqlalchemy_dsql.local import LocalDSQL

pytestmark = pytest.mark.integration


# The tutorial's models, with table names of their own on the shared emulator.
class Team(SQLModel, table=True):
    __tablename__ = "sqlmodel_team"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(index=True)
    headquarters: str
    heroes: list["Hero"] = Relationship(back_populates="team")


class Hero(SQLModel, table=True):
    __tablename__ = "sqlmodel_hero"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(index=True)
    secret_name: str
    age: int | None = Field(default=None, index=True)
    team_id: int | None = Field(default=None, foreign_key="sqlmodel_team.id")
    team: Team | None = Relationship(back_populates="heroes")


TABLES = [SQLModel.metadata.tables["sqlmodel_team"], SQLModel.metadata.tables["sqlmodel_hero"]]
INDEXES = {"ix_sqlmodel_hero_name", "ix_sqlmodel_hero_age", "ix_sqlmodel_team_name"}


def _indexes(connection: sa.Connection) -> set[str]:
    inspector = sa.inspect(connection)
    return {
        index["name"] or ""
        for table in ("sqlmodel_team", "sqlmodel_hero")
        for index in inspector.get_indexes(table)
    }


@pytest.fixture
def engine(dsql: LocalDSQL) -> Iterator[sa.Engine]:
    engine = create_engine(dsql.url("psycopg"))
    SQLModel.metadata.drop_all(engine, tables=TABLES)  # what an earlier run left
    yield engine
    SQLModel.metadata.drop_all(engine, tables=TABLES)
    engine.dispose()


@pytest.fixture
async def async_engine(dsql: LocalDSQL) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(dsql.url())
    async with engine.begin() as connection:
        await connection.run_sync(SQLModel.metadata.drop_all, tables=TABLES)
    yield engine
    async with engine.begin() as connection:
        await connection.run_sync(SQLModel.metadata.drop_all, tables=TABLES)
    await engine.dispose()


def test_sync_create_engine_create_all_and_session(dsql: LocalDSQL, engine: sa.Engine) -> None:
    assert dsql.statement_log is not None
    mark = len(dsql.statement_log)
    SQLModel.metadata.create_all(engine, tables=TABLES)
    sent = [entry.sql for entry in list(dsql.statement_log)[mark:]]
    assert "CREATE INDEX ASYNC ix_sqlmodel_hero_age ON sqlmodel_hero (age)" in sent
    with engine.connect() as connection:
        assert _indexes(connection) == INDEXES

    with Session(engine) as session:
        preventers = Team(name="Preventers", headquarters="Sharp Tower")
        session.add(Hero(name="Rusty-Man", secret_name="Tommy Sharp", age=48, team=preventers))
        session.add(Hero(name="Deadpond", secret_name="Dive Wilson"))
        session.commit()
        team_id = preventers.id
        assert team_id is not None

    with Session(engine) as session:
        heroes = session.exec(select(Hero).where(Hero.team_id == team_id)).all()
        assert [(h.name, h.age) for h in heroes] == [("Rusty-Man", 48)]
        assert heroes[0].team is not None
        assert heroes[0].team.name == "Preventers"
        assert (
            session.exec(select(Hero).where(col(Hero.team_id).is_(None))).one().name == "Deadpond"
        )

        # The foreign key is enforced: no hero of a team that does not exist.
        session.add(Hero(name="Nobody", secret_name="No One", team_id=team_id + 1_000_000))
        with pytest.raises(sa.exc.IntegrityError, match="violates foreign key constraint"):
            session.commit()
        session.rollback()
        assert len(session.exec(select(Hero)).all()) == 2


async def test_async_engine_and_async_session_crud(async_engine: AsyncEngine) -> None:
    async with async_engine.begin() as connection:
        await connection.run_sync(SQLModel.metadata.create_all, tables=TABLES)
        assert await connection.run_sync(_indexes) == INDEXES

    async with AsyncSession(async_engine) as session:
        team = Team(name="Z-Force", headquarters="Sister Margaret's Bar")
        session.add(team)
        await session.commit()
        await session.refresh(team)
        team_id = team.id
        assert team_id is not None
        session.add(Hero(name="Spider-Boy", secret_name="Pedro Parqueador", team_id=team_id))
        await session.commit()

    async with AsyncSession(async_engine) as session:
        hero = (await session.exec(select(Hero).where(Hero.name == "Spider-Boy"))).one()
        assert hero.team_id == team_id
        hero.age = 16
        session.add(hero)
        await session.commit()
        await session.refresh(hero)
        assert hero.age == 16

        await session.delete(hero)
        await session.commit()
        assert (await session.exec(select(Hero))).all() == []

        # Deleting a team a hero refers to is refused by the foreign key. (The ORM's own
        # session.delete(team) would first set the heroes' team_id to NULL.)
        session.add(Hero(name="Tarantula", secret_name="Natalia Roman-on", team_id=team_id))
        await session.commit()
        with pytest.raises(sa.exc.IntegrityError, match="violates foreign key constraint"):
            await session.exec(sa.delete(Team).where(col(Team.id) == team_id))
        await session.rollback()
        assert (await session.exec(select(Team.name))).all() == ["Z-Force"]
