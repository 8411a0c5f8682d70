"""The pet clinic under faults: a soak that holds every write to what the application was told.

For ``DSQL_RELIABILITY_SOAK_SECONDS`` (default 60; ``nox -s soak -- --duration
600`` for ten minutes), 100 tasks run the pet clinic's service
(``async_pet_clinic.clinic.Clinic``, every unit of work in ``run_transaction``)
through ``create_async_dsql_engine`` against ``dsql-local`` in its own process,
while

- the emulator closes every connection after 4 s and the engine retires its
  connections after 1.5-2.5 s;
- random sessions are killed every fraction of a second, and now and then all of
  them at once;
- the emulator's latency jumps from 1 ms to 20-100 ms for up to 1.5 s every few
  seconds;
- ten of the tasks are clerks that all increment one counter row (the hot row)
  in read-modify-write transactions, so OCC conflicts happen all the time (they
  retry patiently, as an application that knows its row is hot would; every
  other operation uses the default ``RetryPolicy``).

90 tasks each work on their own owners, pets and vets (so that the outcome of
every write can be told): register owners with pets, add pets, rename pets, set
telephones (declared idempotent, so a lost COMMIT is retried), add vets and
specialties (the many-to-many table), read them back by key and by
relationship and check what they read, and now and then make a write that must
fail: a registration abandoned by the application after its rows were sent,
and one that breaks a unique key.

Every write carries a name (or key) the application made, and goes into a
ledger with what the application saw: committed (``run_transaction``
returned), failed (it raised the error the operation is designed to raise), or
outcome unknown (``ConnectionLost`` with ``during_commit=True``, the retry
layer's way of saying so). At the end the database must hold every committed
write, no failed one, each outcome-unknown one whole or not at all, nothing
else, nothing twice; the hot row must equal the number of booking rows, which
must include every committed booking. Any other error reaching the application
fails the test, as does any token or secret key in a log record (the
``sqlalchemy``, ``sqlalchemy_dsql`` and botocore loggers at DEBUG), a repr or an
error, and any error logged behind the application's back.
Connections must be retired, and every connection opened or dropped must show in
the engine's counters. The test prints its figures.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import logging
import os
import random
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import pytest
from async_pet_clinic.clinic import Report
from async_pet_clinic.models import Base
from sqlalchemy import Engine, event, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

from harness.engine import assert_no_secrets, async_engine, exception_texts, secrets_of, sync_engine
from harness.soak import (
    BIRTH_DATE,
    HOT_ROW,
    Abandoned,
    ControlledEmulator,
    Desk,
    Insert,
    Ledger,
    Outcome,
    OwnerState,
    PetState,
    Possible,
    SecretWatch,
    Snapshot,
    SoakBase,
    SoakClinic,
    VetState,
    VisitCounter,
    verify,
)
from sqlalchemy_dsql import RetryPolicy, pool_counters, schema
from sqlalchemy_dsql.errors import ConnectionLost
from sqlalchemy_dsql.local import LocalDSQL
from sqlalchemy_dsql.retry import RetryEvent

pytestmark = pytest.mark.reliability

T = TypeVar("T")
SOAK_SECONDS = float(os.environ.get("DSQL_RELIABILITY_SOAK_SECONDS", "60"))
SERVER_MAX_AGE = 4.0
ENGINE_MAX_AGE = 2.5  # minus up to ENGINE_AGE_JITTER: retired well before the server closes
ENGINE_AGE_JITTER = 1.0
TASKS = 100
CLERKS = 10  # of the TASKS, the ones on the hot row; more would queue on it without end
POOL_SIZE = 30
BASE_LATENCY_MS = 1.0
DESK_PAUSE = (0.1, 0.9)  # seconds between two operations of a desk task
CLERK_PAUSE = (0.1, 1.0)  # and of a clerk
# The clerks know their row is hot: they retry more patiently than the default (as the
# hot-row test in tests/integration/test_retry.py does). On a loaded two-core machine a
# booking can take 20 attempts and 15 s; giving up there would say nothing about faults.
HOT_ROW_POLICY = RetryPolicy(max_attempts=200, deadline=None)
SPECIALTIES = [f"specialty {n:02d}" for n in range(40)]
SEED_OWNER = "seed owner"
# Operations of the 90 desk tasks, and how often each is picked.
WEIGHTS = {
    "register owner": 12,
    "add pet": 10,
    "rename pet": 12,
    "set telephone": 8,
    "add vet": 4,
    "add specialty to vet": 8,
    "read pet by key": 12,
    "read owner and pets": 10,
    "read vet and specialties": 8,
    "read pet and owner by name": 4,
    "abandoned registration": 3,
    "registration breaking a unique key": 3,
}
NEEDS_PETS = {"rename pet", "read pet by key", "read pet and owner by name"}
NEEDS_VETS = {"add specialty to vet", "read vet and specialties"}


@pytest.fixture(scope="module")
def emulator(aws_test_keys: None) -> Iterator[ControlledEmulator]:
    """``dsql-local`` in its own process, closing every connection after SERVER_MAX_AGE s."""
    controlled = ControlledEmulator(
        max_connection_age=SERVER_MAX_AGE, latency_ms=BASE_LATENCY_MS, second_opinion=False
    )
    with controlled:
        yield controlled
    # What the emulator printed (its own warnings) must not show a token either.
    assert_no_secrets([controlled.stderr_text], secrets_of(controlled))


@contextlib.contextmanager
def watching_logs(watch: SecretWatch) -> Iterator[None]:
    """Send every record of SQLAlchemy, this package and botocore, at DEBUG, to ``watch`` only.

    They do not propagate to pytest's capture for the run: at DEBUG that would
    be gigabytes over ten minutes. asyncio's records (a task's exception never
    retrieved) go to ``watch`` as well, at their usual level.
    """
    saved = []
    # botocore logs each signing at DEBUG (sqlalchemy_dsql.auth filters what would leak).
    for name in ("sqlalchemy", "sqlalchemy_dsql", "botocore", "aiobotocore", "aioboto3"):
        logger = logging.getLogger(name)
        saved.append((logger, logger.level, logger.propagate))
        logger.setLevel(logging.DEBUG)
        logger.propagate = False
        logger.addHandler(watch)
    asyncio_logger = logging.getLogger("asyncio")
    asyncio_logger.addHandler(watch)
    try:
        yield
    finally:
        asyncio_logger.removeHandler(watch)
        for logger, level, propagate in saved:
            logger.removeHandler(watch)
            logger.setLevel(level)
            logger.propagate = propagate


class Soak:
    """The workload, the faults, and what the application saw."""

    def __init__(
        self, engine: AsyncEngine, emulator: ControlledEmulator, secrets: list[str]
    ) -> None:
        self.engine = engine
        self.emulator = emulator
        self.secrets = secrets
        self.report = Report("the soak's emulator")
        self.clinic = SoakClinic(engine, self.report, self._on_retry)
        # Setting a telephone number is safe to repeat: a lost COMMIT is retried.
        self.idempotent = SoakClinic(
            engine, self.report, self._on_retry, RetryPolicy(idempotent=True)
        )
        self.front_desk = SoakClinic(engine, self.report, self._on_retry, HOT_ROW_POLICY)
        self.ledger = Ledger()
        self.names = itertools.count()
        self.operations: Counter[str] = Counter()
        self.outcomes: Counter[str] = Counter()
        self.unknown_by_kind: Counter[str] = Counter()
        self.durations: list[float] = []
        self.counts_written: set[int] = set()
        self.booking_attempts: list[int] = []
        self.slowest: dict[str, float] = {}
        self.retries: Counter[str] = Counter()
        self.max_attempts = 0
        self.lost_commits_retried = 0
        self.unexpected: list[str] = []
        self.unexpected_count = 0
        self.check_failures: list[str] = []
        self.leaks: list[str] = []
        self.texts_checked = 0
        self.killed = 0
        self.kill_alls = 0
        self.spikes = 0
        self.seed_pet = uuid.uuid4()
        self.workload_over = asyncio.Event()

    # -- bookkeeping ------------------------------------------------------------

    def _name(self, prefix: str) -> str:
        return f"{prefix}{next(self.names)}"

    def inspect(self, *texts: str) -> None:
        self.texts_checked += len(texts)
        joined = "\n".join(texts)
        for secret in self.secrets:
            if secret in joined and len(self.leaks) < 5:
                self.leaks.append(joined[:500])

    def _on_retry(self, retry: RetryEvent) -> None:
        self.retries[retry.sqlstate] += 1
        if isinstance(retry.error, ConnectionLost) and retry.error.during_commit:
            self.lost_commits_retried += 1  # only the telephone updates are idempotent
        self.max_attempts = max(self.max_attempts, retry.attempt + 1)
        self.inspect(*exception_texts(retry.error))

    def _unexpected(self, kind: str, error: BaseException) -> None:
        self.unexpected_count += 1
        if len(self.unexpected) < 10:
            self.unexpected.append(f"{kind}: {exception_texts(error)[2]}")

    def _took(self, kind: str, started: float) -> None:
        seconds = time.monotonic() - started
        self.durations.append(seconds)
        self.slowest[kind] = max(self.slowest.get(kind, 0.0), seconds)

    def check(self, condition: bool, problem: str) -> None:
        if not condition and len(self.check_failures) < 50:
            self.check_failures.append(problem)

    async def _call(
        self,
        kind: str,
        work: Awaitable[T],
        fails_with: type[BaseException] | None = None,
        idempotent: bool = False,
    ) -> tuple[Outcome, T | None]:
        """Run one operation; classify what came back; anything not foreseen is noted.

        ``fails_with``: the operation is designed to fail with that error, and only
        that. ``idempotent``: its policy retries a lost COMMIT, so no outcome is unknown.
        """
        self.operations[kind] += 1
        started = time.monotonic()
        try:
            value = await work
        except Exception as error:
            self._took(kind, started)
            self.inspect(*exception_texts(error))
            if fails_with is not None and _refused_as_designed(error, fails_with):
                outcome = Outcome.FAILED
            elif (
                fails_with is None
                and not idempotent
                and isinstance(error, ConnectionLost)
                and error.during_commit
            ):
                outcome = Outcome.UNKNOWN  # the retry layer says: nobody knows
            else:
                self._unexpected(kind, error)
                outcome = Outcome.UNKNOWN  # the test fails; the ledger stays truthful
            self.outcomes[outcome.value] += 1
            if outcome is Outcome.UNKNOWN:
                self.unknown_by_kind[kind] += 1
            return outcome, None
        self._took(kind, started)
        if fails_with is not None:
            self._unexpected(kind, AssertionError(f"{kind} committed; it must fail"))
            self.outcomes["unknown"] += 1
            return Outcome.UNKNOWN, None
        self.outcomes["committed"] += 1
        return Outcome.COMMITTED, value

    # -- setting up -------------------------------------------------------------

    async def set_up(self) -> None:
        await schema.drop_all(self.engine, SoakBase.metadata)
        await schema.drop_all(self.engine, Base.metadata)
        await schema.create_all(self.engine, Base.metadata)
        await schema.create_all(self.engine, SoakBase.metadata)
        await self.clinic.add_specialties(*SPECIALTIES)
        seed = await self.clinic.add_owner(SEED_OWNER, "Soaktown", None, {"seed pet": BIRTH_DATE})
        self.seed_pet = seed.pets[0].id

        async def counter(session: AsyncSession) -> None:
            session.add(VisitCounter(name=HOT_ROW, booked=0))

        await self.clinic.transaction(counter)

    # -- the desks: each works on its own rows ------------------------------------

    async def desk(self, rng: random.Random, deadline: float) -> None:
        desk = Desk()
        self.ledger.desks.append(desk)
        operations: dict[str, Callable[[Desk, random.Random], Awaitable[None]]] = {
            "register owner": self._register_owner,
            "add pet": self._add_pet,
            "rename pet": self._rename_pet,
            "set telephone": self._set_telephone,
            "add vet": self._add_vet,
            "add specialty to vet": self._add_specialty,
            "read pet by key": self._read_pet,
            "read owner and pets": self._read_owner,
            "read vet and specialties": self._read_vet,
            "read pet and owner by name": self._read_pet_by_name,
            "abandoned registration": self._abandon_registration,
            "registration breaking a unique key": self._break_unique_key,
        }
        kinds, weights = list(WEIGHTS), list(WEIGHTS.values())
        while time.monotonic() < deadline:
            kind = rng.choices(kinds, weights)[0]
            # Work on rows needs rows: make them first.
            if not desk.owners:
                kind = "register owner"
            elif kind in NEEDS_PETS and not desk.pets:
                kind = "add pet"
            elif kind in NEEDS_VETS and not desk.vets:
                kind = "add vet"
            await operations[kind](desk, rng)
            # A user's pause between requests: the clinic is busy, not flooded, so that
            # the faults, not a queue for the pool, are what the operations go through.
            await asyncio.sleep(rng.uniform(*DESK_PAUSE))

    async def _rename_pet(self, desk: Desk, rng: random.Random) -> None:
        key, pet = rng.choice(list(desk.pets.items()))
        name = self._name("r")
        outcome, _ = await self._call("rename pet", self.clinic.rename_pet(key, name))
        pet.name.record(name, outcome)
        self.ledger.updates[outcome] += 1

    async def _set_telephone(self, desk: Desk, rng: random.Random) -> None:
        key, owner = rng.choice(list(desk.owners.items()))
        telephone = self._name("t")
        work = self.idempotent.set_telephone(key, telephone)
        outcome, _ = await self._call("set telephone", work, idempotent=True)
        owner.telephone.record(telephone, outcome)
        self.ledger.updates[outcome] += 1

    async def _read_pet(self, desk: Desk, rng: random.Random) -> None:
        key, state = rng.choice(list(desk.pets.items()))
        outcome, pet = await self._call("read pet by key", self.clinic.pet(key))
        if outcome is Outcome.COMMITTED:
            assert pet is not None
            self.check(pet.owner_id == state.owner_id, f"pet {key} changed owner")
            self.check(pet.name in state.name.values, f"pet {key} is named {pet.name}")

    async def _read_pet_by_name(self, desk: Desk, rng: random.Random) -> None:
        key, state = rng.choice(list(desk.pets.items()))
        name = state.name.certain
        if name is None:  # a rename whose outcome is unknown: the name is not known either
            return
        work = self.clinic.pet_with_owner(name)
        outcome, pet = await self._call("read pet and owner by name", work)
        if outcome is Outcome.COMMITTED:
            assert pet is not None
            self.check(pet.id == key, f"the pet named {name} is {pet.id}, not {key}")
            self.check(pet.owner.id == state.owner_id, f"pet {name}'s owner changed")

    async def _abandon_registration(self, desk: Desk, rng: random.Random) -> None:
        name, pets = self._name("o"), [self._name("p") for _ in range(rng.randint(1, 2))]
        work = self.clinic.register_then_abandon(name, pets)
        outcome, _ = await self._call("abandoned registration", work, fails_with=Abandoned)
        self.ledger.owners[name] = Insert(outcome, pets=dict.fromkeys(pets))

    async def _break_unique_key(self, desk: Desk, rng: random.Random) -> None:
        name = self._name("o")
        work = self.clinic.register_with_existing_specialty(name, rng.choice(SPECIALTIES))
        kind = "registration breaking a unique key"
        outcome, _ = await self._call(kind, work, fails_with=IntegrityError)
        self.ledger.owners[name] = Insert(outcome)

    async def _register_owner(self, desk: Desk, rng: random.Random) -> None:
        name = self._name("o")
        pets = [self._name("p") for _ in range(rng.randint(0, 2))]
        work = self.clinic.add_owner(name, "Soaktown", None, dict.fromkeys(pets, BIRTH_DATE))
        outcome, owner = await self._call("register owner", work)
        insert = Insert(outcome, pets=dict.fromkeys(pets))
        self.ledger.owners[name] = insert
        if outcome is Outcome.COMMITTED:
            assert owner is not None
            insert.key = owner.id
            insert.pets = {pet.name: pet.id for pet in owner.pets}
            self.check(sorted(insert.pets) == sorted(pets), f"owner {name} came back with {pets}")
            desk.owners[owner.id] = OwnerState(Possible({None}), pets={p.id for p in owner.pets})
            for pet in owner.pets:
                desk.pets[pet.id] = PetState(owner.id, Possible({pet.name}))

    async def _add_pet(self, desk: Desk, rng: random.Random) -> None:
        owner_key, owner = rng.choice(list(desk.owners.items()))
        name = self._name("p")
        outcome, key = await self._call("add pet", self.clinic.add_pet(owner_key, name))
        self.ledger.pets[name] = Insert(outcome, key=key, owner_key=owner_key)
        if outcome is Outcome.COMMITTED:
            assert key is not None
            owner.pets.add(key)
            desk.pets[key] = PetState(owner_key, Possible({name}))
        elif outcome is Outcome.UNKNOWN:
            owner.maybe_pets.add(name)

    async def _add_vet(self, desk: Desk, rng: random.Random) -> None:
        name = self._name("v")
        specialties = rng.sample(SPECIALTIES, rng.randint(1, 3))
        outcome, vet = await self._call("add vet", self.clinic.add_vet(name, specialties))
        self.ledger.vets[name] = Insert(outcome, specialties=specialties)
        if outcome is Outcome.COMMITTED:
            assert vet is not None
            self.ledger.vets[name].key = vet.id
            got = {s.name for s in vet.specialties}
            self.check(got == set(specialties), f"vet {name} came back with {got}")
            desk.vets[vet.id] = VetState(name, set(specialties))

    async def _add_specialty(self, desk: Desk, rng: random.Random) -> None:
        key, vet = rng.choice(list(desk.vets.items()))
        free = [s for s in SPECIALTIES if s not in vet.links and s not in vet.maybe_links]
        if not free:
            return
        specialty = rng.choice(free)
        work = self.clinic.add_specialty_to_vet(key, specialty)
        outcome, _ = await self._call("add specialty to vet", work)
        self.ledger.links[key, specialty] = outcome
        if outcome is Outcome.COMMITTED:
            vet.links.add(specialty)
        elif outcome is Outcome.UNKNOWN:
            vet.maybe_links.add(specialty)

    async def _read_owner(self, desk: Desk, rng: random.Random) -> None:
        key, state = rng.choice(list(desk.owners.items()))
        outcome, owner = await self._call("read owner and pets", self.clinic.owner_with_pets(key))
        if outcome is not Outcome.COMMITTED:
            return
        assert owner is not None
        self.check(
            owner.telephone in state.telephone.values,
            f"owner {key}'s telephone is {owner.telephone}, not one of {state.telephone.values}",
        )
        found = {pet.id for pet in owner.pets}
        self.check(state.pets <= found, f"owner {key} lacks pets {state.pets - found}")
        for pet in owner.pets:
            self.check(
                pet.id in state.pets or pet.name in state.maybe_pets,
                f"owner {key} has a pet {pet.name} that no write gave them",
            )

    async def _read_vet(self, desk: Desk, rng: random.Random) -> None:
        state = rng.choice(list(desk.vets.values()))
        work = self.clinic.vet_with_specialties(state.name)
        outcome, vet = await self._call("read vet and specialties", work)
        if outcome is Outcome.COMMITTED:
            assert vet is not None
            found = {s.name for s in vet.specialties}
            self.check(
                state.links <= found <= state.links | state.maybe_links,
                f"vet {state.name} has {found}; committed {state.links}, maybe {state.maybe_links}",
            )

    # -- the clerks: all on one row ---------------------------------------------------

    async def clerk(self, rng: random.Random, deadline: float) -> None:
        while time.monotonic() < deadline:
            visit = uuid.uuid4()
            outcome, booked = await self._call(
                "book visit (hot row)", self.front_desk.book_visit(visit, self.seed_pet)
            )
            self.ledger.visits[visit] = outcome
            if outcome is Outcome.COMMITTED:
                assert booked is not None
                count, attempts = booked
                # Two committed bookings that wrote the same count: an update was lost.
                self.check(count not in self.counts_written, f"two bookings counted {count}")
                self.counts_written.add(count)
                self.booking_attempts.append(attempts)
            await asyncio.sleep(rng.uniform(*CLERK_PAUSE))

    # -- the faults ---------------------------------------------------------------------

    async def _pause(self, seconds: float) -> bool:
        """Sleep; False once the workload is over."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.workload_over.wait(), seconds)
        return not self.workload_over.is_set()

    async def killer(self, rng: random.Random) -> None:
        next_kill_all = time.monotonic() + rng.uniform(10, 20)
        while await self._pause(rng.uniform(0.1, 0.6)):
            if time.monotonic() >= next_kill_all:
                self.killed += await asyncio.to_thread(self.emulator.kill_all)
                self.kill_alls += 1
                next_kill_all = time.monotonic() + rng.uniform(10, 20)
            else:
                self.killed += await asyncio.to_thread(self.emulator.kill_random, rng.randint(1, 3))

    async def latency_spikes(self, rng: random.Random) -> None:
        wait = 1.0
        while await self._pause(wait):
            await asyncio.to_thread(self.emulator.set_latency, rng.uniform(20, 100))
            self.spikes += 1
            await self._pause(rng.uniform(0.2, 1.5))
            await asyncio.to_thread(self.emulator.set_latency, BASE_LATENCY_MS)
            wait = rng.uniform(2, 6)

    async def watch_reprs(self) -> None:
        """Everything an operator may print about the engine, checked every second."""
        while await self._pause(1.0):
            self.inspect(*engine_texts(self.engine), repr(self.report.stats))


def _refused_as_designed(error: BaseException, designed: type[BaseException]) -> bool:
    """The operation's own refusal, as the application wrote it, and nothing else."""
    if not isinstance(error, designed):
        return False
    if isinstance(error, IntegrityError):  # a unique violation, not some other constraint
        return getattr(error.orig, "sqlstate", None) == "23505"
    return True


def engine_texts(engine: AsyncEngine) -> list[str]:
    url = engine.url
    return [
        repr(engine),
        repr(engine.sync_engine),
        str(url),
        repr(url),
        url.render_as_string(hide_password=False),
        repr(engine.pool),
        engine.pool.status(),
        repr(pool_counters(engine)),
    ]


def count_pool_events(engine: AsyncEngine | Engine) -> Counter[str]:
    """What SQLAlchemy's pool itself saw: to hold the engine's own counters to."""
    seen: Counter[str] = Counter()

    def counting(name: str) -> Callable[..., None]:
        def count(*_: Any) -> None:
            seen[name] += 1

        return count

    target = engine.sync_engine if isinstance(engine, AsyncEngine) else engine
    for name in ("connect", "invalidate", "soft_invalidate", "close", "close_detached"):
        event.listen(target, name, counting(name))
    return seen


async def wait_for_sessions(emulator: ControlledEmulator, count: int, seconds: float) -> int:
    """Poll until the emulator holds ``count`` sessions (or time runs out); how many it holds."""
    give_up = time.monotonic() + seconds
    while True:
        open_sessions = int((await asyncio.to_thread(emulator.state))["open_sessions"])
        if open_sessions == count or time.monotonic() > give_up:
            return open_sessions
        await asyncio.sleep(0.05)


@pytest.mark.timeout(SOAK_SECONDS * 1.25 + 180)
async def test_pet_clinic_soak_under_faults(
    emulator: ControlledEmulator, recwarn: pytest.WarningsRecorder
) -> None:
    secrets = secrets_of(emulator)
    watch = SecretWatch(secrets)
    with watching_logs(watch):
        engine = async_engine(
            emulator,
            max_connection_age=ENGINE_MAX_AGE,
            connection_age_jitter=ENGINE_AGE_JITTER,
            # No overflow: every connection SQLAlchemy closes is then one our counters explain.
            pool_size=POOL_SIZE,
            max_overflow=0,
            pool_timeout=30,
        )
        pool_events = count_pool_events(engine)
        soak = Soak(engine, emulator, secrets)
        try:
            await soak.set_up()
            started = time.monotonic()
            deadline = started + SOAK_SECONDS
            rngs = [random.Random() for _ in range(TASKS + 3)]
            faults = asyncio.gather(
                soak.killer(rngs[-1]), soak.latency_spikes(rngs[-2]), soak.watch_reprs()
            )
            try:
                await asyncio.gather(
                    *(soak.clerk(rngs[n], deadline) for n in range(CLERKS)),
                    *(soak.desk(rngs[n], deadline) for n in range(CLERKS, TASKS)),
                )
            finally:
                soak.workload_over.set()
                await faults
            elapsed = time.monotonic() - started
            await asyncio.to_thread(emulator.set_latency, 0)
            checked_out = engine.pool.checkedout()  # type: ignore[attr-defined]
            db = await soak.clinic.snapshot()
            async with engine.connect() as conn:
                raw = await conn.get_raw_connection()
                soak.inspect(repr(raw), repr(raw.dbapi_connection), repr(raw.driver_connection))
            soak.inspect(*engine_texts(engine))
            open_before_dispose = int((await asyncio.to_thread(emulator.state))["open_sessions"])
            closed_before_dispose = pool_events["close"]
        finally:
            await engine.dispose()
        open_after_dispose = await wait_for_sessions(emulator, 0, 3.0)
        totals = (await asyncio.to_thread(emulator.state))["totals"]

    verdict = verify(soak.ledger, db, {SEED_OWNER})
    counters = pool_counters(engine)
    stats = soak.report.stats
    operations = sum(soak.operations.values())
    dropped = counters.retired_for_age + counters.replaced_after_server_close + counters.lost_in_use
    durations = sorted(soak.durations)
    python_warnings = Counter(f"{w.category.__name__}: {w.message}"[:150] for w in recwarn)
    attempts = sorted(soak.booking_attempts)
    hot_committed = sum(o is Outcome.COMMITTED for o in soak.ledger.visits.values())
    hot_unknown = sum(o is Outcome.UNKNOWN for o in soak.ledger.visits.values())
    hot_landed = sum(o is Outcome.UNKNOWN and v in db.visits for v, o in soak.ledger.visits.items())

    def percentile(fraction: float) -> float:
        return durations[min(len(durations) - 1, int(fraction * len(durations)))]

    slowest = sorted(soak.slowest.items(), key=lambda item: -item[1])[:3]
    print(
        f"\nsoak: {SOAK_SECONDS:g} s asked, {operations} operations in {elapsed:.1f} s "
        f"({operations / elapsed:.0f}/s), "
        f"{stats.transactions} transactions, {stats.attempts} attempts\n"
        f"  operations: {dict(soak.operations.most_common())}\n"
        f"  outcomes seen by the application: {dict(soak.outcomes)}; outcome unknown by "
        f"operation: {dict(soak.unknown_by_kind)}\n"
        f"  retried: {dict(soak.retries)} (conflicts OC000/OC001/40001, lost connections "
        f"08006), of which lost COMMITs retried as idempotent: {soak.lost_commits_retried}; "
        f"most attempts for one transaction: {soak.max_attempts}; gave up: {stats.gave_up}\n"
        f"  hot row: {db.booked} visits booked by {CLERKS} clerks = {hot_committed} committed "
        f"+ {hot_landed} of {hot_unknown} whose outcome was unknown; attempts per committed "
        f"booking: median {attempts[len(attempts) // 2]}, 99th percentile "
        f"{attempts[int(0.99 * len(attempts))]}, most {attempts[-1]}\n"
        f"  operation time: median {percentile(0.5) * 1000:.0f} ms, 99th percentile "
        f"{percentile(0.99) * 1000:.0f} ms, slowest "
        f"{', '.join(f'{k} {v:.2f} s' for k, v in slowest)}\n"
        f"  connections: opened {counters.connections_opened}, tokens {counters.tokens_minted}, "
        f"retired for age {counters.retired_for_age} "
        f"(checkout {counters.retired_for_age_at_checkout}, checkin "
        f"{counters.retired_for_age_at_checkin}), replaced after server close "
        f"{counters.replaced_after_server_close}, lost in use {counters.lost_in_use}, "
        f"checkout waits {counters.checkout_waits} ({counters.checkout_wait_seconds:.1f} s); "
        f"pool events {dict(pool_events)}\n"
        f"  faults: {soak.killed} sessions killed ({soak.kill_alls} times all at once), "
        f"{soak.spikes} latency spikes, {totals['closed_at_age_limit']} sessions closed by the "
        f"emulator at its {SERVER_MAX_AGE:g} s age limit; emulator: {totals}\n"
        f"  writes verified: {verdict.writes_verified}; outcome unknown: "
        f"{verdict.unknown_landed} landed, {verdict.unknown_absent} absent\n"
        f"  secrets checked in {sum(watch.counts.values())} log records "
        f"({dict(watch.counts.most_common(8))}) and {soak.texts_checked} reprs and error texts\n"
        f"  warnings logged: {dict(watch.warnings.most_common(10))}; Python warnings: "
        f"{dict(python_warnings.most_common(10))}"
    )

    # No error the application did not design for, and every read saw what was written.
    assert soak.unexpected_count == 0, (
        f"{soak.unexpected_count} unexpected errors reached the application; the first:\n"
        + "\n".join(soak.unexpected)
    )
    assert soak.check_failures == []
    # The database holds exactly what the application was told.
    assert verdict.problems == []
    # Nothing went wrong behind the application's back either: no error logged (a pool
    # reset that failed, a task's exception never retrieved), no connection left to the
    # garbage collector, no coroutine never awaited.
    assert [w for w in watch.warnings if " ERROR: " in w or " CRITICAL: " in w] == []
    assert [w for w in python_warnings if w.startswith(("SAWarning", "RuntimeWarning"))] == []
    # No secrets anywhere.
    assert watch.leaks == [], watch.leaks
    assert soak.leaks == [], soak.leaks
    # The watch did see the records where a token could show: SQLAlchemy's statements
    # and pool, our engine's connects, botocore's signing.
    assert watch.counts["sqlalchemy.engine.Engine"] > 0
    assert watch.counts["sqlalchemy_dsql.connector"] > 0
    assert watch.counts["botocore.auth"] > 0
    # Nothing leaked: every connection came back, and closing the engine closed them all.
    assert checked_out == 0
    assert open_before_dispose > 0
    assert open_after_dispose == 0
    # Connections were retired and counted: each one opened with its own token, and each
    # one closed before the end is one the engine counted under a reason (retired,
    # replaced, lost); the rest were closed by dispose().
    assert counters.retired_for_age >= SOAK_SECONDS / SERVER_MAX_AGE
    assert counters.tokens_minted == counters.connections_opened == pool_events["connect"]
    assert dropped == pool_events["invalidate"] == closed_before_dispose
    assert pool_events["close"] == pool_events["connect"]
    # The faults happened, and the retry layer carried the application through them.
    assert soak.killed > 0
    assert soak.spikes > 0
    assert counters.lost_in_use > 0
    assert soak.retries["08006"] > 0
    assert soak.retries["OC000"] > 0
    assert stats.gave_up == 0
    # Real work was done and checked.
    assert operations > 10 * SOAK_SECONDS
    assert verdict.writes_verified > 5 * SOAK_SECONDS
    assert db.booked > SOAK_SECONDS / 2
    # The hot row counted every committed booking and, of those whose outcome was
    # unknown, exactly the ones whose booking row is there (verify() checked the rows).
    assert db.booked == hot_committed + hot_landed
    assert max(soak.counts_written) <= db.booked


# -- the checker itself -------------------------------------------------------------------


def test_the_ledger_check_names_every_kind_of_wrong_database() -> None:
    """``verify`` passes a database that matches the ledger and names each way one can differ."""
    owner, pet, vet, landed_owner, landed_pet = (uuid.uuid4() for _ in range(5))
    booked, maybe_booked = uuid.uuid4(), uuid.uuid4()
    desk = Desk(
        owners={owner: OwnerState(Possible({"t1"}), pets={pet})},
        pets={pet: PetState(owner, Possible({"r1", "r2"}))},  # r2's outcome is unknown
        vets={vet: VetState("v1", {"a"}, maybe_links={"b"})},
    )
    ledger = Ledger(
        owners={
            "o1": Insert(Outcome.COMMITTED, key=owner, pets={"p1": pet}),
            "o2": Insert(Outcome.FAILED, pets={"p2": None}),
            "o3": Insert(Outcome.UNKNOWN, pets={"p3": None}),
        },
        vets={"v1": Insert(Outcome.COMMITTED, key=vet, specialties=["a"])},
        links={(vet, "b"): Outcome.UNKNOWN},
        visits={booked: Outcome.COMMITTED, maybe_booked: Outcome.UNKNOWN},
        desks=[desk],
    )
    good = Snapshot(
        owners={owner: ("o1", "t1")},
        pets={pet: ("r2", owner)},
        vets={vet: "v1"},
        links={(vet, "a")},
        visits={booked},
        booked=1,
    )
    verdict = verify(ledger, good, set())
    assert verdict.problems == []
    assert (verdict.unknown_landed, verdict.unknown_absent) == (0, 3)
    # The same with every write of unknown outcome landed, whole.
    landed = dataclasses.replace(
        good,
        owners={**good.owners, landed_owner: ("o3", None)},
        pets={**good.pets, landed_pet: ("p3", landed_owner)},
        links={(vet, "a"), (vet, "b")},
        visits={booked, maybe_booked},
        booked=2,
    )
    verdict = verify(ledger, landed, set())
    assert verdict.problems == []
    assert (verdict.unknown_landed, verdict.unknown_absent) == (3, 0)

    wrong = {
        "committed owner o1": dataclasses.replace(good, owners={}),
        "owner o2, whose registration failed": dataclasses.replace(
            good, owners={**good.owners, uuid.uuid4(): ("o2", None)}
        ),
        "only in part": dataclasses.replace(
            good, owners={**good.owners, landed_owner: ("o3", None)}
        ),
        "twice": dataclasses.replace(good, owners={**good.owners, uuid.uuid4(): ("o1", "t1")}),
        "no registration of it succeeded": dataclasses.replace(
            good, owners={**good.owners, uuid.uuid4(): ("o9", None)}
        ),
        "is named r9": dataclasses.replace(good, pets={pet: ("r9", owner)}),
        "telephone is t0": dataclasses.replace(good, owners={owner: ("o1", "t0")}),
        "vet v1 has specialties": dataclasses.replace(good, links=set()),
        "no write of it succeeded": dataclasses.replace(good, links={(vet, "a"), (vet, "c")}),
        "committed bookings are missing": dataclasses.replace(good, visits=set(), booked=0),
        "that no booking committed": dataclasses.replace(
            good, visits={booked, uuid.uuid4()}, booked=2
        ),
        "the counter says 2": dataclasses.replace(good, booked=2),
    }
    for expected, db in wrong.items():
        problems = verify(ledger, db, set()).problems
        assert any(expected in problem for problem in problems), (expected, problems)


# -- regressions the soak found ---------------------------------------------------------


async def test_a_lost_connection_leaves_the_rest_of_the_pool_alone(dsql: LocalDSQL) -> None:
    """One connection lost in use is replaced alone; the pool's other connections stay.

    SQLAlchemy's default on a disconnect is to mark every pooled connection stale:
    in the soak each killed session made the engine reopen all 30, uncounted
    (970 connections opened in 15 s, none of them lived to be retired).
    """
    engine = async_engine(dsql, pool_size=5, max_overflow=0)
    pool_events = count_pool_events(engine)
    try:
        held = [await engine.connect() for _ in range(5)]
        sessions = [_server_pid(conn) for conn in held]
        for conn in held[1:]:
            await conn.close()
        dsql.kill(sessions[0])
        await asyncio.sleep(0.1)
        with pytest.raises(ConnectionLost):
            await held[0].execute(text("SELECT 1"))
        await held[0].close()
        # The four returned first come back out (the pool is FIFO), still the same sessions.
        again = [await engine.connect() for _ in range(4)]
        assert sorted(_server_pid(conn) for conn in again) == sorted(sessions[1:])
        for conn in again:
            assert (await conn.execute(text("SELECT 1"))).scalar_one() == 1
            await conn.close()
        assert pool_events["connect"] == 5
        assert pool_counters(engine).lost_in_use == 1
    finally:
        await engine.dispose()


def test_a_lost_connection_leaves_the_rest_of_the_sync_pool_alone(dsql: LocalDSQL) -> None:
    """The same for the synchronous engine (psycopg), which shares the disconnect handler."""
    engine = sync_engine(dsql, pool_size=5, max_overflow=0)
    pool_events = count_pool_events(engine)
    try:
        held = [engine.connect() for _ in range(5)]
        sessions = [int(c.connection.driver_connection.info.backend_pid) for c in held]  # type: ignore[union-attr]
        for conn in held[1:]:
            conn.close()
        dsql.kill(sessions[0])
        time.sleep(0.1)
        with pytest.raises(ConnectionLost):
            held[0].execute(text("SELECT 1"))
        held[0].close()
        again = [engine.connect() for _ in range(4)]
        pids = [int(c.connection.driver_connection.info.backend_pid) for c in again]  # type: ignore[union-attr]
        assert sorted(pids) == sorted(sessions[1:])
        for conn in again:
            conn.close()
        assert pool_events["connect"] == 5
    finally:
        engine.dispose()


def _server_pid(conn: AsyncConnection) -> int:
    # The emulator hands out its session id as the backend pid (what kill() takes).
    raw: Any = conn.sync_connection.connection.driver_connection  # type: ignore[union-attr]
    return int(raw.get_server_pid())
