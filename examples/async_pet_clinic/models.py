"""The pet clinic's tables: owners and their pets, vets and their specialties.

Primary keys are UUIDs made by the server (``gen_random_uuid()``): DSQL has
no ``SERIAL``, and random keys spread writes across its storage instead of
piling them onto the end of one index. Foreign keys are real constraints.
"""

from __future__ import annotations

import datetime
import uuid

from sqlalchemy import Boolean, Column, Date, ForeignKey, String, Table, Uuid, func, select, true
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class Base(DeclarativeBase):
    pass


def _uuid_key() -> Mapped[uuid.UUID]:
    return mapped_column(Uuid, primary_key=True, server_default=func.gen_random_uuid())


class Owner(Base):
    __tablename__ = "owner"

    id: Mapped[uuid.UUID] = _uuid_key()
    name: Mapped[str] = mapped_column(String(30))
    city: Mapped[str] = mapped_column(String(80))
    telephone: Mapped[str | None] = mapped_column(String(20), default=None)

    pets: Mapped[list[Pet]] = relationship(
        back_populates="owner", cascade="all, delete-orphan", order_by="Pet.name"
    )


class Pet(Base):
    __tablename__ = "pet"

    id: Mapped[uuid.UUID] = _uuid_key()
    name: Mapped[str] = mapped_column(String(30))
    birth_date: Mapped[datetime.date] = mapped_column(Date)
    owner_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("owner.id"), index=True)

    owner: Mapped[Owner] = relationship(back_populates="pets")


vet_specialty = Table(
    "vet_specialty",
    Base.metadata,
    Column("vet_id", ForeignKey("vet.id"), primary_key=True),
    Column("specialty_name", ForeignKey("specialty.name"), primary_key=True),
)


class Specialty(Base):
    __tablename__ = "specialty"

    name: Mapped[str] = mapped_column(String(80), primary_key=True)

    vets: Mapped[list[Vet]] = relationship(
        secondary=vet_specialty, back_populates="specialties", order_by="Vet.name"
    )


class Vet(Base):
    __tablename__ = "vet"

    id: Mapped[uuid.UUID] = _uuid_key()
    name: Mapped[str] = mapped_column(String(30))
    # Added by the second migration (migrations/versions/): a NOT NULL column with a
    # server default, which DSQL cannot add in one ALTER TABLE.
    accepting_patients: Mapped[bool] = mapped_column(Boolean, server_default=true())

    specialties: Mapped[list[Specialty]] = relationship(
        secondary=vet_specialty, back_populates="vets", order_by="Specialty.name"
    )


async def specialties_named(
    session: AsyncSession, names: list[str]
) -> tuple[list[Specialty], list[str]]:
    """The named specialties in the order named, and the names that have none."""
    if not names:
        return [], []
    query = select(Specialty).where(Specialty.name.in_(names))
    found = {specialty.name: specialty for specialty in await session.scalars(query)}
    return [found[n] for n in names if n in found], [n for n in names if n not in found]
