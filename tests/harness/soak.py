"""What the fault-injection soak (``test_soak.py``) is built from.

- :class:`ControlledEmulator`: ``dsql-local`` in a process of its own (so that
  its proxy does not share the client's GIL, as in the engine load test), with
  a control channel the spawned CLI lacks: kill sessions, change the injected
  latency, read the emulator's counters; the child process is
  ``soak_emulator.py`` next to this module.
- :class:`SecretWatch`: a logging handler that reads every record it is given
  and notes any that contains a secret, without keeping the records.
- The soak's own two tables (a clinic-wide booking counter, the hot row, and
  one row per booking) and :class:`SoakClinic`, the pet clinic's service with
  the operations the soak needs on top of the demo's.
- :class:`Ledger`: what the application was told about each write, and
  :func:`verify`, which holds the database to it at the end.
"""

from __future__ import annotations

import datetime
import enum
import json
import logging
import subprocess
import sys
import tempfile
import threading
import traceback
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from async_pet_clinic.clinic import Clinic, Report
from async_pet_clinic.models import Owner, Pet, Specialty, Vet, vet_specialty
from botocore.credentials import Credentials
from sqlalchemy import String, Uuid, make_url, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, selectinload

from sqlalchemy_dsql import RetryPolicy, run_transaction
from sqlalchemy_dsql.local.tokens import fixed_test_credentials
from sqlalchemy_dsql.retry import RetryEvent

T = TypeVar("T")
# Run as a script, so that the emulator does not share the GIL of the test process.
_CHILD = Path(__file__).with_name("soak_emulator.py")

# -- the emulator, in a child process we can steer ----------------------------


class ControlledEmulator:
    """``dsql-local`` in a child process that kills sessions and changes latency on request.

    Has what :func:`harness.engine.async_engine` needs (:meth:`url` and
    ``credentials``). Requests go over the child's stdin
    and stdout, one JSON line each way; they are answered in well under a
    millisecond, so calling them from the event loop through a thread is cheap.
    """

    def __init__(self, **options: Any) -> None:
        self._options = options
        self._lock = threading.Lock()
        self._process: subprocess.Popen[str] | None = None
        # Closed in __exit__, after the child's last words have been read.
        self._stderr = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115
        self.stderr_text = ""
        self.endpoint = self.host = self.region = self.ca_file = ""
        self.port = 0
        self._url = ""
        self.credentials: Credentials = fixed_test_credentials()

    def __enter__(self) -> ControlledEmulator:
        self._process = subprocess.Popen(
            [sys.executable, str(_CHILD), json.dumps(self._options)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
        )
        assert self._process.stdout is not None
        banner = self._process.stdout.readline()
        if not banner:
            self._process.wait(30)
            self._stderr.seek(0)
            raise RuntimeError(f"the soak's emulator did not start:\n{self._stderr.read()}")
        ready = json.loads(banner)
        self.endpoint, self.host, self.port = ready["endpoint"], ready["host"], ready["port"]
        self.region, self.ca_file = ready["region"], ready["ca_file"]
        self._url = ready["url"]
        return self

    def url(self, driver: str = "asyncpg", user: str = "admin") -> str:
        """The child's ``LocalDSQL.url(driver, user)``: no secret, the test key pair signs."""
        url = make_url(self._url).set(drivername=f"auroradsql+{driver}", username=user)
        return url.render_as_string(hide_password=False)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        process = self._process
        if process is None:
            return
        assert process.stdin is not None
        try:
            process.stdin.close()  # the child stops when its stdin ends
            process.wait(30)
        except (OSError, subprocess.TimeoutExpired):
            process.kill()
            process.wait()
        self._stderr.seek(0)
        self.stderr_text = self._stderr.read()
        self._stderr.close()

    def request(self, **command: Any) -> dict[str, Any]:
        process = self._process
        assert process is not None
        assert process.stdin is not None
        assert process.stdout is not None
        with self._lock:
            process.stdin.write(json.dumps(command) + "\n")
            process.stdin.flush()
            answer = process.stdout.readline()
        if not answer:
            raise RuntimeError(f"the soak's emulator died (exit code {process.poll()})")
        reply: dict[str, Any] = json.loads(answer)
        if "error" in reply:
            raise RuntimeError(f"the soak's emulator refused {command}: {reply['error']}")
        return reply

    def kill_random(self, sessions: int) -> int:
        """Close up to ``sessions`` open sessions, chosen at random; returns how many."""
        return int(self.request(op="kill", sessions=sessions)["killed"])

    def kill_all(self) -> int:
        return int(self.request(op="kill", sessions=None)["killed"])

    def set_latency(self, latency_ms: float) -> None:
        self.request(op="latency", ms=latency_ms)

    def state(self) -> dict[str, Any]:
        """``{"totals": LocalDSQL.totals(), "open_sessions": n}``."""
        return self.request(op="state")


# -- secrets in logs ------------------------------------------------------------


class SecretWatch(logging.Handler):
    """Reads every record (message, exception, stack) and notes those with a secret in them.

    Records are counted per logger and level, not kept: at DEBUG the soak logs
    millions of lines.
    """

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__(logging.DEBUG)
        self.secrets = list(secrets)
        self.counts: Counter[str] = Counter()
        self.warnings: Counter[str] = Counter()
        self.leaks: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if record.exc_info:
            text += "".join(traceback.format_exception(*record.exc_info))
        if record.stack_info:
            text += record.stack_info
        self.counts[record.name] += 1
        if record.levelno >= logging.WARNING:
            self.warnings[f"{record.name} {record.levelname}: {text.splitlines()[0][:120]}"] += 1
        if any(secret in text for secret in self.secrets) and len(self.leaks) < 5:
            self.leaks.append(f"{record.name} {record.levelname}: {text[:300]}")


# -- the soak's own tables and service operations ---------------------------------


class SoakBase(DeclarativeBase):
    """Its own metadata: the pet clinic's ``Base.metadata`` stays as the demo defines it."""


class VisitCounter(SoakBase):
    """The clinic-wide count of booked visits: one row that every clerk updates."""

    __tablename__ = "soak_visit_counter"

    name: Mapped[str] = mapped_column(String(30), primary_key=True)
    booked: Mapped[int]


class Visit(SoakBase):
    """One booked visit; its key is made by the application, so its fate can be looked up."""

    __tablename__ = "soak_visit"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    pet_id: Mapped[uuid.UUID] = mapped_column(Uuid)


HOT_ROW = "visits"
BIRTH_DATE = datetime.date(2020, 2, 29)


class Abandoned(Exception):
    """The application gives up on a registration after writing it (it must be rolled back)."""


class SoakClinic(Clinic):
    """The pet clinic's service, plus what the soak needs: the booking counter, failing writes.

    Every unit of work still goes through ``Clinic.transaction``, that is
    ``run_transaction`` with the report's stats (and ``policy``, if given).
    ``on_retry`` sees every retry.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        report: Report,
        on_retry: Callable[[RetryEvent], object],
        policy: RetryPolicy | None = None,
    ) -> None:
        super().__init__(engine, report)
        self._observe_retry = on_retry
        self._policy = policy

    def _on_retry(self, event: RetryEvent) -> None:
        # The demo keeps every event; over ten minutes that would keep every error
        # (and its frames) alive, so the soak only looks at them.
        self._observe_retry(event)

    async def transaction(self, fn: Callable[[AsyncSession], Awaitable[T]]) -> T:
        if self._policy is None:
            return await super().transaction(fn)
        result: T = await run_transaction(
            self.sessions, fn, stats=self.report.stats, on_retry=self._on_retry, policy=self._policy
        )
        return result

    async def add_pet(self, owner_id: uuid.UUID, name: str) -> uuid.UUID:
        async def add(session: AsyncSession) -> uuid.UUID:
            owner = await session.get_one(Owner, owner_id)
            pet = Pet(name=name, birth_date=BIRTH_DATE, owner_id=owner.id)
            session.add(pet)
            await session.flush()
            key: uuid.UUID = pet.id
            return key

        return await self.transaction(add)

    async def owner_with_pets(self, owner_id: uuid.UUID) -> Owner:
        async def read(session: AsyncSession) -> Owner:
            return await session.get_one(Owner, owner_id, options=[selectinload(Owner.pets)])

        return await self.transaction(read)

    async def book_visit(self, visit_id: uuid.UUID, pet_id: uuid.UUID) -> tuple[int, int]:
        """Count the visit on the hot row and record it: both or neither.

        Returns the count this booking wrote, and how many attempts it took.
        """
        attempts = 0

        async def book(session: AsyncSession) -> tuple[int, int]:
            nonlocal attempts
            attempts += 1
            counter = await session.get_one(VisitCounter, HOT_ROW)
            counter.booked += 1  # read, then write what was read: conflicts must be retried
            session.add(Visit(id=visit_id, pet_id=pet_id))
            return counter.booked, attempts

        result: tuple[int, int] = await self.transaction(book)
        return result

    async def register_then_abandon(self, name: str, pets: list[str]) -> None:
        """Write an owner and pets, send them to the server, then give up: nothing may remain."""

        async def register(session: AsyncSession) -> None:
            owner = Owner(name=name, city="Nowhere")
            owner.pets = [Pet(name=p, birth_date=BIRTH_DATE) for p in pets]
            session.add(owner)
            await session.flush()
            raise Abandoned(f"registration of {name} abandoned after its rows were written")

        await self.transaction(register)

    async def register_with_existing_specialty(self, name: str, specialty: str) -> None:
        """An owner and a specialty that already exists: the unique violation undoes both."""

        async def register(session: AsyncSession) -> None:
            session.add(Owner(name=name, city="Elsewhere"))
            session.add(Specialty(name=specialty))
            await session.flush()

        await self.transaction(register)

    async def snapshot(self) -> Snapshot:
        """Every row the soak wrote, read in one transaction at the end."""

        async def read(session: AsyncSession) -> Snapshot:
            owners = (await session.execute(select(Owner.id, Owner.name, Owner.telephone))).all()
            pets = (await session.execute(select(Pet.id, Pet.name, Pet.owner_id))).all()
            vets = (await session.execute(select(Vet.id, Vet.name))).all()
            links = (await session.execute(select(vet_specialty))).all()
            visits = (await session.scalars(select(Visit.id))).all()
            booked = (await session.get_one(VisitCounter, HOT_ROW)).booked
            return Snapshot(
                owners={row.id: (row.name, row.telephone) for row in owners},
                pets={row.id: (row.name, row.owner_id) for row in pets},
                vets={row.id: row.name for row in vets},
                links={(row.vet_id, row.specialty_name) for row in links},
                visits=set(visits),
                booked=booked,
            )

        result: Snapshot = await self.transaction(read)
        return result


# -- the ledger ----------------------------------------------------------------------


class Outcome(enum.Enum):
    COMMITTED = "committed"  # run_transaction returned
    FAILED = "failed"  # it raised an error that says nothing was committed
    UNKNOWN = "unknown"  # ConnectionLost(during_commit=True): either may be true


@dataclass
class Possible:
    """A column only its owning task writes, one write at a time: the values it may hold.

    A committed write leaves one possibility; a write whose outcome is unknown
    adds one; a failed write adds none.
    """

    values: set[str | None]

    def record(self, value: str, outcome: Outcome) -> None:
        if outcome is Outcome.COMMITTED:
            self.values = {value}
        elif outcome is Outcome.UNKNOWN:
            self.values.add(value)

    @property
    def certain(self) -> str | None:
        return next(iter(self.values)) if len(self.values) == 1 else None


@dataclass
class OwnerState:
    telephone: Possible
    pets: set[uuid.UUID] = field(default_factory=set)  # committed
    maybe_pets: set[str] = field(default_factory=set)  # names of pets inserted with outcome unknown


@dataclass
class PetState:
    owner_id: uuid.UUID
    name: Possible


@dataclass
class VetState:
    name: str
    links: set[str]  # committed
    maybe_links: set[str] = field(default_factory=set)  # outcome unknown


@dataclass
class Desk:
    """What one worker knows it has written: the rows it alone may change or read back."""

    owners: dict[uuid.UUID, OwnerState] = field(default_factory=dict)
    pets: dict[uuid.UUID, PetState] = field(default_factory=dict)
    vets: dict[uuid.UUID, VetState] = field(default_factory=dict)


@dataclass
class Insert:
    """An insert, by the unique name the application gave it (and its key once known)."""

    outcome: Outcome
    key: uuid.UUID | None = None
    pets: dict[str, uuid.UUID | None] = field(default_factory=dict)  # name: key if committed
    owner_key: uuid.UUID | None = None  # a pet added to an existing owner
    specialties: list[str] = field(default_factory=list)  # a vet's first specialties


@dataclass
class Ledger:
    """What the application was told about each write, and everything the desks know."""

    owners: dict[str, Insert] = field(default_factory=dict)  # owner name: its registration
    pets: dict[str, Insert] = field(default_factory=dict)  # pet name: add_pet of that name
    vets: dict[str, Insert] = field(default_factory=dict)
    links: dict[tuple[uuid.UUID, str], Outcome] = field(default_factory=dict)
    visits: dict[uuid.UUID, Outcome] = field(default_factory=dict)
    desks: list[Desk] = field(default_factory=list)
    updates: Counter[Outcome] = field(default_factory=Counter)


@dataclass
class Snapshot:
    owners: dict[uuid.UUID, tuple[str, str | None]]  # id: (name, telephone)
    pets: dict[uuid.UUID, tuple[str, uuid.UUID]]  # id: (name, owner id)
    vets: dict[uuid.UUID, str]
    links: set[tuple[uuid.UUID, str]]
    visits: set[uuid.UUID]
    booked: int


@dataclass
class Verdict:
    """What :func:`verify` found: mismatches (must be none) and what it checked."""

    problems: list[str] = field(default_factory=list)
    writes_verified: int = 0
    unknown_landed: int = 0
    unknown_absent: int = 0

    def fail(self, problem: str) -> None:
        if len(self.problems) < 50:
            self.problems.append(problem)

    def unknown(self, landed: bool) -> None:
        if landed:
            self.unknown_landed += 1
        else:
            self.unknown_absent += 1


def verify(ledger: Ledger, db: Snapshot, seeded_owners: set[str]) -> Verdict:
    """Hold the database to the ledger: committed writes present, failed ones absent.

    A write whose outcome is unknown may be either, but whole: an owner is there
    with all the pets registered with it, or none of them. Nothing is in the
    database that no write put there, and nothing is there twice.
    """
    verdict = Verdict()
    owner_by_name: dict[str, uuid.UUID] = {}
    for key, (name, _) in db.owners.items():
        if name in owner_by_name:
            verdict.fail(f"owner {name} is in the database twice: a write applied twice")
        owner_by_name[name] = key
    pet_by_name: dict[str, tuple[uuid.UUID, uuid.UUID]] = {}
    for key, (name, owner) in db.pets.items():
        if name in pet_by_name:
            verdict.fail(f"pet {name} is in the database twice: a write applied twice")
        pet_by_name[name] = (key, owner)
    vet_by_name = {name: key for key, name in db.vets.items()}
    links_of: dict[uuid.UUID, set[str]] = {}
    for vet_key, specialty in db.links:
        links_of.setdefault(vet_key, set()).add(specialty)

    # Owners, with the pets registered with them.
    for name, insert in ledger.owners.items():
        verdict.writes_verified += 1
        owner_found = owner_by_name.get(name)
        pets_found = {p: pet_by_name.get(p) for p in insert.pets}
        if insert.outcome is Outcome.COMMITTED:
            if owner_found != insert.key:
                verdict.fail(f"committed owner {name} ({insert.key}) is not in the database")
            for pet_name, pet_key in insert.pets.items():
                if pet_key not in db.pets or db.pets[pet_key][1] != insert.key:
                    verdict.fail(f"committed pet {pet_name} ({pet_key}) of owner {name} is missing")
        elif insert.outcome is Outcome.FAILED:
            if owner_found is not None or any(pets_found.values()):
                verdict.fail(f"owner {name}, whose registration failed, is in the database")
        else:
            parts = [owner_found is not None] + [p is not None for p in pets_found.values()]
            if any(parts) and not all(parts):
                verdict.fail(f"owner {name} (outcome unknown) is in the database only in part")
            if owner_found is not None and any(
                p is not None and p[1] != owner_found for p in pets_found.values()
            ):
                verdict.fail(f"the pets of owner {name} (outcome unknown) have another owner")
            verdict.unknown(owner_found is not None)

    # Pets added to an existing owner.
    for name, insert in ledger.pets.items():
        verdict.writes_verified += 1
        pet_found = pet_by_name.get(name)
        if insert.outcome is Outcome.COMMITTED:
            if insert.key not in db.pets or db.pets[insert.key][1] != insert.owner_key:
                verdict.fail(f"committed pet {name} ({insert.key}) is not in the database")
        elif insert.outcome is Outcome.FAILED:
            if pet_found is not None:
                verdict.fail(f"pet {name}, whose insert failed, is in the database")
        else:
            if pet_found is not None and pet_found[1] != insert.owner_key:
                verdict.fail(f"pet {name} (outcome unknown) belongs to another owner")
            verdict.unknown(pet_found is not None)

    # Vets with their first specialties, and specialties added later (many-to-many).
    for name, insert in ledger.vets.items():
        verdict.writes_verified += 1
        vet_found = vet_by_name.get(name)
        if insert.outcome is Outcome.COMMITTED and vet_found != insert.key:
            verdict.fail(f"committed vet {name} ({insert.key}) is not in the database")
        elif insert.outcome is Outcome.FAILED and vet_found is not None:
            verdict.fail(f"vet {name}, whose insert failed, is in the database")
        elif insert.outcome is Outcome.UNKNOWN:
            if vet_found is not None and links_of.get(vet_found, set()) != set(insert.specialties):
                verdict.fail(f"vet {name} (outcome unknown) has other specialties")
            verdict.unknown(vet_found is not None)
    for link, outcome in ledger.links.items():
        verdict.writes_verified += 1
        linked = link in db.links
        if outcome is Outcome.COMMITTED and not linked:
            verdict.fail(f"committed specialty {link[1]} of vet {link[0]} is missing")
        elif outcome is Outcome.FAILED and linked:
            verdict.fail(f"specialty {link[1]} of vet {link[0]}, whose insert failed, is there")
        elif outcome is Outcome.UNKNOWN:
            verdict.unknown(linked)

    # Updates: each row holds a value its task may have left there; each vet has the
    # specialties it was committed with, and maybe those whose outcome is unknown.
    for desk in ledger.desks:
        for vet_key, vet in desk.vets.items():
            specialties = links_of.get(vet_key, set())
            if not vet.links <= specialties <= vet.links | vet.maybe_links:
                verdict.fail(
                    f"vet {vet.name} has specialties {specialties}; committed {vet.links}, "
                    f"maybe {vet.maybe_links}"
                )
        for pet_key, pet in desk.pets.items():
            if pet_key in db.pets and db.pets[pet_key][0] not in pet.name.values:
                verdict.fail(
                    f"pet {pet_key} is named {db.pets[pet_key][0]}, not one of {pet.name.values}"
                )
        for owner_key, owner_state in desk.owners.items():
            telephone = owner_state.telephone.values
            if owner_key in db.owners and db.owners[owner_key][1] not in telephone:
                verdict.fail(
                    f"owner {owner_key}'s telephone is {db.owners[owner_key][1]}, "
                    f"not one of {telephone}"
                )
    verdict.writes_verified += sum(ledger.updates.values())

    # Nothing that no write put there.
    known_owners = {n for n, i in ledger.owners.items() if i.outcome is not Outcome.FAILED}
    for name in owner_by_name:
        if name not in known_owners and name not in seeded_owners:
            verdict.fail(f"owner {name} is in the database, but no registration of it succeeded")
    known_pets = {key for desk in ledger.desks for key in desk.pets}
    maybe_pets = {n for n, i in ledger.pets.items() if i.outcome is Outcome.UNKNOWN} | {
        pet for i in ledger.owners.values() if i.outcome is Outcome.UNKNOWN for pet in i.pets
    }
    for key, (name, owner) in db.pets.items():
        seeded = owner in db.owners and db.owners[owner][0] in seeded_owners
        if key not in known_pets and name not in maybe_pets and not seeded:
            verdict.fail(f"pet {name} ({key}) is in the database, but no write of it succeeded")
    known_vets = {n for n, i in ledger.vets.items() if i.outcome is not Outcome.FAILED}
    known_links = {link for link, outcome in ledger.links.items() if outcome is not Outcome.FAILED}
    for name, key in vet_by_name.items():
        if name not in known_vets:
            verdict.fail(f"vet {name} is in the database, but no write of it succeeded")
        else:
            known_links |= {(key, s) for s in ledger.vets[name].specialties}
    for link in db.links - known_links:
        verdict.fail(f"vet_specialty {link} is in the database, but no write of it succeeded")

    # The hot row: one booking row per counted visit, nothing lost, nothing doubled.
    committed = {v for v, o in ledger.visits.items() if o is Outcome.COMMITTED}
    unknown = {v for v, o in ledger.visits.items() if o is Outcome.UNKNOWN}
    verdict.writes_verified += len(ledger.visits)
    if missing := committed - db.visits:
        verdict.fail(f"{len(missing)} committed bookings are missing")
    if extra := db.visits - committed - unknown:
        verdict.fail(f"{len(extra)} bookings are in the database that no booking committed")
    for visit in unknown:
        verdict.unknown(visit in db.visits)
    if db.booked != len(db.visits):
        verdict.fail(f"the counter says {db.booked} visits, the database holds {len(db.visits)}")
    return verdict
