"""The pet clinic walkthrough, asynchronously: ``uv run pet-clinic``.

With ``CLUSTER_ENDPOINT`` set, it runs against that Aurora DSQL cluster:

* ``CLUSTER_ENDPOINT``: ``<cluster-id>.dsql.<region>.on.aws``
* ``CLUSTER_USER``: ``admin`` (the default) or a database role linked to your
  IAM identity; any other role works in the schema ``myschema``, which it must
  be allowed to use (as in Amazon's asyncpg sample)
* ``AWS_REGION``: optional; the endpoint names its own Region
* credentials: the usual AWS chain (environment, profile, SSO, instance role)
* ``PGPORT``, ``PGHOSTADDR``, ``PGSSLROOTCERT``: the standard libpq variables,
  for a tunnel, a proxy or a private CA (default: port 5432, the endpoint's
  address, the system trust store)

Without it, it starts the local emulator (``dsql-local``, an embedded
PostgreSQL 16 behind DSQL's rules, IAM tokens and TLS) and runs there. After
the engine is made, both paths run the same code.

What it does, as in Amazon's synchronous SQLAlchemy walkthrough, but with each
unit of work in :func:`sqlalchemy_dsql.run_transaction` and independent work
run concurrently with ``asyncio.gather`` in separate sessions: drop and
create the tables; insert owners with their pets and vets with their
specialties; read them back and check them; update; delete an owner and their
pets; then let several tasks book the same pet at once, so that optimistic
concurrency conflicts happen and are retried. It prints what ran, the rows,
the timings and the conflicts retried, and exits 1 if any check fails.
"""

from __future__ import annotations

import asyncio
import datetime
import os
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TypeVar

from sqlalchemy import URL, func, select
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import selectinload

from sqlalchemy_dsql import run_transaction, schema
from sqlalchemy_dsql.errors import DSQLError
from sqlalchemy_dsql.retry import RetryEvent, RetryStats

from .models import Base, Owner, Pet, Specialty, Vet

T = TypeVar("T")
CUSTOM_ROLE_SCHEMA = "myschema"
CONTENDERS = 8


class CheckFailed(Exception):
    """What the demo read back is not what it wrote."""


def check(condition: bool, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


@dataclass
class Step:
    name: str
    rows: int
    seconds: float


@dataclass
class Report:
    where: str
    steps: list[Step] = field(default_factory=list)
    stats: RetryStats = field(default_factory=RetryStats)
    conflicts: list[RetryEvent] = field(default_factory=list)

    @contextmanager
    def step(self, name: str) -> Iterator[list[int]]:
        """Time a step; the caller appends the rows it touched to the yielded list."""
        rows: list[int] = []
        started = time.perf_counter()
        yield rows
        self.steps.append(Step(name, sum(rows), time.perf_counter() - started))

    def render(self) -> str:
        width = max(len(s.name) for s in self.steps)
        lines = [f"pet clinic on {self.where}", ""]
        for s in self.steps:
            lines.append(f"  {s.name:<{width}}  {s.rows:>3} rows  {s.seconds * 1000:8.1f} ms")
        total = sum(s.seconds for s in self.steps)
        by_state = ", ".join(f"{k}: {v}" for k, v in sorted(self.stats.retries_by_sqlstate.items()))
        lines += [
            "",
            f"  {self.stats.transactions} transactions, {self.stats.retries} conflicts retried"
            + (f" ({by_state})" if by_state else "")
            + f", {self.stats.gave_up} gave up; {total * 1000:.0f} ms in all",
            "  every check passed",
        ]
        return "\n".join(lines)


class Clinic:
    """The walkthrough's units of work, each run through ``run_transaction``.

    The reads run with ``read_only=True``: no transaction, one round trip per
    statement. A read with ``selectinload`` runs two statements, so two
    snapshots: none of the walkthrough's checks reads while another task writes.
    """

    def __init__(self, engine: AsyncEngine, report: Report) -> None:
        self.engine = engine
        self.sessions = async_sessionmaker(engine, expire_on_commit=False)
        self.report = report

    def _on_retry(self, event: RetryEvent) -> None:
        self.report.conflicts.append(event)

    async def transaction(self, fn: Callable[[AsyncSession], Awaitable[T]]) -> T:
        return await run_transaction(
            self.sessions, fn, stats=self.report.stats, on_retry=self._on_retry
        )

    async def read(self, fn: Callable[[AsyncSession], Awaitable[T]]) -> T:
        # No BEGIN/COMMIT: one round trip per statement, each statement its own snapshot.
        return await run_transaction(
            self.sessions, fn, stats=self.report.stats, on_retry=self._on_retry, read_only=True
        )

    async def add_owner(
        self, name: str, city: str, telephone: str | None, pets: dict[str, datetime.date]
    ) -> Owner:
        async def add(session: AsyncSession) -> Owner:
            owner = Owner(name=name, city=city, telephone=telephone)
            owner.pets = [Pet(name=n, birth_date=born) for n, born in pets.items()]
            session.add(owner)
            return owner

        return await self.transaction(add)

    async def add_specialties(self, *names: str) -> None:
        async def add(session: AsyncSession) -> None:
            session.add_all(Specialty(name=n) for n in names)

        await self.transaction(add)

    async def add_vet(self, name: str, specialties: list[str]) -> Vet:
        async def add(session: AsyncSession) -> Vet:
            chosen = await session.scalars(select(Specialty).where(Specialty.name.in_(specialties)))
            vet = Vet(name=name, specialties=list(chosen))
            session.add(vet)
            return vet

        return await self.transaction(add)

    async def pet_with_owner(self, pet_name: str) -> Pet:
        async def read(session: AsyncSession) -> Pet:
            query = select(Pet).where(Pet.name == pet_name).options(selectinload(Pet.owner))
            return (await session.scalars(query)).one()

        return await self.read(read)

    async def pet(self, pet_id: uuid.UUID) -> Pet:
        async def read(session: AsyncSession) -> Pet:
            return await session.get_one(Pet, pet_id)

        return await self.read(read)

    async def vet_with_specialties(self, name: str) -> Vet:
        async def read(session: AsyncSession) -> Vet:
            query = select(Vet).where(Vet.name == name).options(selectinload(Vet.specialties))
            return (await session.scalars(query)).one()

        return await self.read(read)

    async def rename_pet(self, pet_id: uuid.UUID, name: str) -> None:
        async def rename(session: AsyncSession) -> None:
            pet = await session.get_one(Pet, pet_id)
            pet.name = name

        await self.transaction(rename)

    async def set_telephone(self, owner_id: uuid.UUID, telephone: str) -> None:
        async def update(session: AsyncSession) -> None:
            owner = await session.get_one(Owner, owner_id)
            owner.telephone = telephone

        await self.transaction(update)

    async def add_specialty_to_vet(self, vet_id: uuid.UUID, specialty: str) -> None:
        async def update(session: AsyncSession) -> None:
            vet = await session.get_one(Vet, vet_id, options=[selectinload(Vet.specialties)])
            vet.specialties.append(await session.get_one(Specialty, specialty))

        await self.transaction(update)

    async def delete_owner(self, owner_id: uuid.UUID) -> None:
        async def delete(session: AsyncSession) -> None:
            owner = await session.get_one(Owner, owner_id, options=[selectinload(Owner.pets)])
            await session.delete(owner)  # the pets go with their owner (cascade)

        await self.transaction(delete)

    async def count(self, model: type[Base]) -> int:
        async def read(session: AsyncSession) -> int:
            return int(await session.scalar(select(func.count()).select_from(model)) or 0)

        return await self.read(read)

    async def book_checkup(self, pet_id: uuid.UUID, clerk: int) -> None:
        """Every clerk rewrites the same pet's row: the later commits conflict and retry."""

        async def book(session: AsyncSession) -> None:
            pet = await session.get_one(Pet, pet_id)
            pet.name = f"{pet.name.split(' #')[0]} #{clerk}"

        await self.transaction(book)


async def run_demo(engine: AsyncEngine, where: str) -> Report:
    """The whole walkthrough on ``engine``; raises :class:`CheckFailed` on a wrong read."""
    report = Report(where)
    clinic = Clinic(engine, report)

    with report.step("drop and create 5 tables"):
        await schema.drop_all(engine, Base.metadata)
        await schema.create_all(engine, Base.metadata)

    with report.step("insert 2 owners with pets, concurrently") as rows:
        john, mary = await asyncio.gather(
            clinic.add_owner("John Doe", "Anytown", None, {"Pet-1": datetime.date(2006, 10, 25)}),
            clinic.add_owner(
                "Mary Major", "Anytown", "555-555-0123", {"Pet-2": datetime.date(2021, 7, 23)}
            ),
        )
        rows.append(4)

    with report.step("insert 2 specialties") as rows:
        await clinic.add_specialties("Cats", "Dogs")
        rows.append(2)

    with report.step("insert 2 vets with specialties, concurrently") as rows:
        akua, _ = await asyncio.gather(
            clinic.add_vet("Akua Mansa", ["Dogs"]),
            clinic.add_vet("Carlos Salazar", ["Dogs", "Cats"]),
        )
        rows.append(5)

    with report.step("read pets, owners and vets, concurrently") as rows:
        pet_1, pet_2, akua_read, carlos_read = await asyncio.gather(
            clinic.pet_with_owner("Pet-1"),
            clinic.pet_with_owner("Pet-2"),
            clinic.vet_with_specialties("Akua Mansa"),
            clinic.vet_with_specialties("Carlos Salazar"),
        )
        rows.append(4 + 2 + len(akua_read.specialties) + len(carlos_read.specialties))
        check(pet_1.birth_date == datetime.date(2006, 10, 25), f"Pet-1 born {pet_1.birth_date}")
        check(pet_1.owner.name == "John Doe", f"Pet-1's owner is {pet_1.owner.name}")
        check(pet_1.owner.telephone is None, "John Doe has no telephone")
        check(pet_2.owner.telephone == "555-555-0123", f"Mary's phone: {pet_2.owner.telephone}")
        check([s.name for s in akua_read.specialties] == ["Dogs"], "Akua Mansa treats dogs")
        check(
            [s.name for s in carlos_read.specialties] == ["Cats", "Dogs"],
            "Carlos Salazar treats cats and dogs",
        )

    with report.step("update an owner, a pet and a vet, concurrently") as rows:
        await asyncio.gather(
            clinic.set_telephone(john.id, "555-555-0199"),
            clinic.rename_pet(pet_2.id, "Pet-2b"),
            clinic.add_specialty_to_vet(akua.id, "Cats"),
        )
        rows.append(3)
        pet_1, pet_2, akua_read = await asyncio.gather(
            clinic.pet_with_owner("Pet-1"),
            clinic.pet_with_owner("Pet-2b"),
            clinic.vet_with_specialties("Akua Mansa"),
        )
        check(pet_1.owner.telephone == "555-555-0199", "John Doe's new telephone")
        check(pet_2.owner.id == mary.id, "Pet-2b still belongs to Mary Major")
        check([s.name for s in akua_read.specialties] == ["Cats", "Dogs"], "Akua now treats cats")

    with report.step(f"{CONTENDERS} clerks book the same pet at once") as rows:
        await asyncio.gather(*(clinic.book_checkup(pet_2.id, n) for n in range(CONTENDERS)))
        rows.append(CONTENDERS)
        booked = await clinic.pet(pet_2.id)
        check(
            booked.name in {f"Pet-2b #{n}" for n in range(CONTENDERS)},
            f"the pet's name after the bookings: {booked.name}",
        )

    with report.step("delete an owner and their pets") as rows:
        await clinic.delete_owner(john.id)
        owners, pets, vets = await asyncio.gather(
            clinic.count(Owner), clinic.count(Pet), clinic.count(Vet)
        )
        rows.append(2)
        check((owners, pets, vets) == (1, 1, 2), f"left: {owners} owners, {pets} pets, {vets} vets")
    return report


def _engine_from_environment(endpoint: str) -> AsyncEngine:
    # A URL alone: the dialect reads the Region, PGPORT, PGHOSTADDR and PGSSLROOTCERT
    # from the environment and signs a token per connection with the AWS chain.
    user = os.environ.get("CLUSTER_USER", "admin")
    url = URL.create("auroradsql+asyncpg", username=user, host=endpoint, database="postgres")
    if user != "admin":
        return create_async_engine(url, schema=CUSTOM_ROLE_SCHEMA)
    return create_async_engine(url)


# What would pick other credentials than the emulator's test key pair from the chain.
_OTHER_CREDENTIALS = (
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
)


@contextmanager
def _environment(variables: dict[str, str]) -> Iterator[None]:
    """``variables`` in ``os.environ``, without :data:`_OTHER_CREDENTIALS`, for the block."""
    saved = {name: os.environ.get(name) for name in [*variables, *_OTHER_CREDENTIALS]}
    for name in _OTHER_CREDENTIALS:
        os.environ.pop(name, None)
    os.environ.update(variables)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextmanager
def engine_factory() -> Iterator[tuple[Callable[[], AsyncEngine], str]]:
    """Make engines as the module documentation says, and say where they point.

    Without ``CLUSTER_ENDPOINT`` the local emulator runs for the length of the
    block, with its test key pair in this process's environment (as after
    ``dsql-local``'s printout), and engines come from its URL. The demo, the
    FastAPI app and the aiohttp app all start here.
    """
    if endpoint := os.environ.get("CLUSTER_ENDPOINT"):
        user = os.environ.get("CLUSTER_USER", "admin")
        yield (lambda: _engine_from_environment(endpoint)), f"Aurora DSQL at {endpoint} as {user}"
        return
    from sqlalchemy_dsql.local import LocalDSQL  # the "local" extra

    print("CLUSTER_ENDPOINT is not set: starting the local emulator (dsql-local) ...", flush=True)
    with LocalDSQL() as dsql:
        environ = dsql.environ()
        key_pair = {name: environ[name] for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
        with _environment(key_pair):
            url = dsql.url()
            yield (lambda: create_async_engine(url)), f"the local emulator ({dsql.endpoint})"


async def _run() -> Report:
    with engine_factory() as (make_engine, where):
        engine = make_engine()
        try:
            return await run_demo(engine, where)
        finally:
            await engine.dispose()


def main() -> int:
    try:
        report = asyncio.run(_run())
    except CheckFailed as failure:
        print(f"pet-clinic: check failed: {failure}", file=sys.stderr)
        return 1
    except DSQLError as error:  # configuration, connection, retries: the message says what to do
        print(f"pet-clinic: {error}", file=sys.stderr)
        return 2
    print(report.render())
    return 0


if __name__ == "__main__":
    sys.exit(main())
