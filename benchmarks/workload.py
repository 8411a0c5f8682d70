"""The pet clinic's service workload: sqlalchemy-dsql against Amazon's dialect and stock SQLAlchemy.

Part 1, throughput and latency. Five units of work, each in its own
transaction, as the pet clinic's API issues them (``examples/async_pet_clinic``
models):

* read a pet by key (``session.get``);
* read an owner with their pets (``session.get`` with ``selectinload``);
* insert an owner with one pet (two INSERT ... RETURNING, server-made keys);
* update a pet (load it, change its name, flush);
* insert a vet with two specialties (a many-to-many write: SELECT the
  specialties, INSERT the vet, INSERT the association rows).

Every worker runs them in turn, starting at a different one, for a fixed time;
updates touch only the worker's own pets so that no contender meets write
conflicts (their retries are measured by ``retry_batch.py``). Three contenders
run on the same emulator and the same data, at concurrency 1, 8, 32 and 64:

* ours: ``create_async_engine`` on the emulator's ``auroradsql+asyncpg`` URL, the workers
  are tasks under ``asyncio.gather``;
* Amazon's: ``aurora_dsql_sqlalchemy.create_dsql_engine(driver="psycopg2")``
  (aurora-dsql-sqlalchemy 1.3.0, its recommended synchronous setup: the
  dialect with Amazon's connector minting a token per connection), the
  workers are threads of a pool of the same size;
* stock: ``create_async_engine("postgresql+asyncpg://")`` with the same pool
  size and an ``async_creator`` that takes tokens from our shared token
  generator and opens the same TLS connection: what our DSQL layer costs.

Each engine gets ``pool_size`` = concurrency and ``max_overflow=0``. Before
timing, every worker runs each unit once (which fills the pool and the
statement caches; how long that takes is reported apart). ``dsql-local`` runs
in its own process with 2 ms injected per round trip. In each round, every
contender runs at every concurrency, the contenders' order rotating from round
to round; figures are medians over rounds with their range, latency
percentiles are over every unit of every round. The CPU seconds of the client,
the emulator's proxy and its PostgreSQL are recorded, because the three share
this machine's cores.

Part 2, round trips per unit of work, counted by the emulator
(``LocalDSQL(round_trip_log=True)``, in this process, no injected latency):
each contender runs each unit on a one-connection pool, once to warm the
connection and again to count, and every round trip is sorted into BEGIN,
prepare, execute, COMMIT / ROLLBACK and pre-ping by the protocol messages and
SQL it carried.

Writes ``workload.md``, ``workload.json`` and ``workload.png``. Run through
``uv run nox -s bench`` (every benchmark; it installs aurora-dsql-sqlalchemy),
or in that session's environment::

    python benchmarks/workload.py [--rounds 5] [--seconds 8]
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import cProfile
import datetime
import functools
import inspect
import itertools
import os
import pstats
import random
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import aioboto3
import asyncpg
from _common import (
    CPUMeter,
    Headline,
    amazon_engine,
    command_line,
    machine,
    percentile,
    results_argument,
    spread,
    tls_like_the_engine,
    use_test_credentials_from_environment,
    write_results,
)
from async_pet_clinic.models import Base, Owner, Pet, Specialty, Vet, vet_specialty
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.orm import Session, selectinload, sessionmaker

import sqlalchemy_dsql
from sqlalchemy_dsql import batch, run_transaction, schema
from sqlalchemy_dsql.auth import async_token_generator
from sqlalchemy_dsql.local import LocalDSQL, RoundTrip
from sqlalchemy_dsql.local.process import SpawnedDSQL, spawn
from sqlalchemy_dsql.local.tokens import TEST_ACCESS_KEY_ID, TEST_SECRET_ACCESS_KEY

LATENCY_MS = 2.0
# The read path (``run_transaction(..., read_only=True)``: no BEGIN, no COMMIT) where this
# version has it; ours then runs its reads through it, as the pet clinic does.
READ_PATH = "read_only" in inspect.signature(run_transaction).parameters
PROFILE_CONCURRENCY = 8
CONCURRENCIES = [1, 8, 32, 64]
TARGET_VS_AMAZON = 3.0  # at the highest concurrency
TARGET_VS_STOCK = 0.95  # at every concurrency

OURS, AMAZON, STOCK = "ours", "Amazon's", "stock"
CONTENDERS = [OURS, AMAZON, STOCK]
DESCRIPTIONS = {
    OURS: "ours: auroradsql+asyncpg, create_async_engine(URL), asyncio.gather",
    AMAZON: "Amazon's: aurora-dsql-sqlalchemy 1.3.0 + psycopg2, create_dsql_engine, threads",
    STOCK: "stock: postgresql+asyncpg, same pool size and tokens, asyncio.gather",
}
OPERATIONS = [
    "read pet by key",
    "read owner with pets",
    "insert owner with a pet",
    "update pet",
    "insert vet with 2 specialties",
]
OWNERS = 200
PETS_PER_OWNER = 2
SPECIALTIES = [f"specialty {i}" for i in range(8)]
VETS = 20


class Cluster(Protocol):
    """What the engines need to know about an emulator, spawned or in this process."""

    @property
    def endpoint(self) -> str: ...
    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def region(self) -> str: ...
    @property
    def ca_file(self) -> str: ...
    def url(self, driver: str = "asyncpg", user: str = "admin") -> str: ...


@dataclass(frozen=True)
class Seeded:
    owners: list[uuid.UUID]
    pets: list[uuid.UUID]


@dataclass
class Run:
    contender: str
    concurrency: int
    units: int
    seconds: float
    warmup_seconds: float
    latencies: dict[int, list[float]]
    cpu: dict[str, float]

    @property
    def per_second(self) -> float:
        return self.units / self.seconds


# -- the units of work -------------------------------------------------------------------


_NAMES = itertools.count()


class Plan:
    """One worker's units, the same sequence whichever contender runs them."""

    def __init__(self, worker: int, concurrency: int, seeded: Seeded) -> None:
        self._random = random.Random(worker)
        self._seeded = seeded
        self._own_pets = itertools.cycle(seeded.pets[worker::concurrency])
        self._next_operation = itertools.cycle(
            [(worker + i) % len(OPERATIONS) for i in range(len(OPERATIONS))]
        )

    def __next__(self) -> tuple[int, Any]:
        operation = next(self._next_operation)
        name = f"u{next(_NAMES)}"  # new in every run, so that every update changes a row
        if operation == 0:
            return operation, self._random.choice(self._seeded.pets)
        if operation == 1:
            return operation, self._random.choice(self._seeded.owners)
        if operation == 2:
            return operation, name
        if operation == 3:
            return operation, (next(self._own_pets), name)
        return operation, (name, self._random.sample(SPECIALTIES, 2))


def _new_owner(name: str) -> Owner:
    pet = Pet(name=name, birth_date=datetime.date(2020, 1, 1))
    return Owner(name=name, city="Seattle", telephone="555-0100", pets=[pet])


def _require(found: object, what: str) -> None:
    if not found:
        raise LookupError(f"{what} is missing: the benchmark data is not what it seeded")


async def unit_async(maker: async_sessionmaker[Any], operation: int, argument: Any) -> None:
    async with maker.begin() as session:
        if operation == 0:
            _require(await session.get(Pet, argument), "a seeded pet")
        elif operation == 1:
            owner = await session.get(Owner, argument, options=[selectinload(Owner.pets)])
            _require(owner and owner.pets, "a seeded owner's pets")
        elif operation == 2:
            session.add(_new_owner(argument))
        elif operation == 3:
            pet = await session.get(Pet, argument[0])
            _require(pet, "a seeded pet")
            assert pet is not None
            pet.name = argument[1]
        else:
            name, wanted = argument
            query = select(Specialty).where(Specialty.name.in_(wanted))
            specialties = list(await session.scalars(query))
            _require(len(specialties) == len(wanted), "a seeded specialty")
            session.add(Vet(name=name, specialties=specialties))


async def _read(session: Any, operation: int, argument: Any) -> None:
    if operation == 0:
        _require(await session.get(Pet, argument), "a seeded pet")
    else:
        owner = await session.get(Owner, argument, options=[selectinload(Owner.pets)])
        _require(owner and owner.pets, "a seeded owner's pets")


async def unit_ours(maker: async_sessionmaker[Any], operation: int, argument: Any) -> None:
    """Ours: as :func:`unit_async`, but reads take the read path where there is one."""
    if READ_PATH and operation < 2:
        read_only: Any = functools.partial(run_transaction, read_only=True)
        await read_only(maker, functools.partial(_read, operation=operation, argument=argument))
    else:
        await unit_async(maker, operation, argument)


def unit_sync(maker: sessionmaker[Session], operation: int, argument: Any) -> None:
    with maker.begin() as session:
        if operation == 0:
            _require(session.get(Pet, argument), "a seeded pet")
        elif operation == 1:
            owner = session.get(Owner, argument, options=[selectinload(Owner.pets)])
            _require(owner and owner.pets, "a seeded owner's pets")
        elif operation == 2:
            session.add(_new_owner(argument))
        elif operation == 3:
            pet = session.get(Pet, argument[0])
            _require(pet, "a seeded pet")
            assert pet is not None
            pet.name = argument[1]
        else:
            name, wanted = argument
            query = select(Specialty).where(Specialty.name.in_(wanted))
            specialties = list(session.scalars(query))
            _require(len(specialties) == len(wanted), "a seeded specialty")
            session.add(Vet(name=name, specialties=specialties))


# -- the contenders' engines -------------------------------------------------------------


def _aioboto3_session() -> aioboto3.Session:
    return aioboto3.Session(
        aws_access_key_id=TEST_ACCESS_KEY_ID, aws_secret_access_key=TEST_SECRET_ACCESS_KEY
    )


def ours_engine(dsql: Cluster, pool_size: int) -> AsyncEngine:
    # The emulator's URL: the dialect signs with the test key pair in the environment.
    return create_async_engine(dsql.url(), pool_size=pool_size, max_overflow=0)


def stock_engine(dsql: Cluster, pool_size: int) -> AsyncEngine:
    session = _aioboto3_session()
    tls = tls_like_the_engine(dsql.ca_file, dsql.endpoint)

    async def connect() -> asyncpg.Connection:
        generator = async_token_generator(dsql.region, session=session)
        token = await generator.token(dsql.endpoint, "admin", 900)
        return await asyncpg.connect(
            host=dsql.host,
            port=dsql.port,
            user="admin",
            password=token,
            database="postgres",
            ssl=tls,
        )

    return create_async_engine(
        "postgresql+asyncpg://", async_creator=connect, pool_size=pool_size, max_overflow=0
    )


# -- part 1: throughput ------------------------------------------------------------------


async def _seed(dsql: Cluster) -> Seeded:
    engine = ours_engine(dsql, 8)
    try:
        await schema.drop_all(engine, Base.metadata)
        await schema.create_all(engine, Base.metadata)
        owners = [uuid.uuid4() for _ in range(OWNERS)]
        pets = [uuid.uuid4() for _ in range(OWNERS * PETS_PER_OWNER)]
        vets = [uuid.uuid4() for _ in range(VETS)]
        birth = datetime.date(2019, 5, 1)
        rows = {
            Owner.__table__: [
                {"id": key, "name": f"owner {i}", "city": "Seattle"} for i, key in enumerate(owners)
            ],
            Pet.__table__: [
                {"id": key, "name": f"pet {i}", "birth_date": birth, "owner_id": owners[i // 2]}
                for i, key in enumerate(pets)
            ],
            Specialty.__table__: [{"name": name} for name in SPECIALTIES],
            Vet.__table__: [{"id": key, "name": f"vet {i}"} for i, key in enumerate(vets)],
            vet_specialty: [
                {"vet_id": key, "specialty_name": SPECIALTIES[i % len(SPECIALTIES)]}
                for i, key in enumerate(vets)
            ],
        }
        for table, values in rows.items():
            await batch.insert(engine, table, values, progress=False)  # type: ignore[arg-type]
    finally:
        await engine.dispose()
    return Seeded(owners, pets)


Unit = Any  # unit_ours or unit_async


async def _async_run(
    contender: str,
    dsql: Cluster,
    seeded: Seeded,
    concurrency: int,
    seconds: float,
    meter: CPUMeter,
    profile: cProfile.Profile | None = None,
) -> Run:
    make = ours_engine if contender == OURS else stock_engine
    unit = unit_ours if contender == OURS else unit_async
    engine = make(dsql, concurrency)
    maker = async_sessionmaker(engine, expire_on_commit=False)
    plans = [Plan(worker, concurrency, seeded) for worker in range(concurrency)]
    latencies: dict[int, list[float]] = {i: [] for i in range(len(OPERATIONS))}
    try:
        started = time.perf_counter()
        await asyncio.gather(*(_warm_async(unit, maker, plan) for plan in plans))
        warmup = time.perf_counter() - started
        before = meter.read()
        started = time.perf_counter()
        deadline = started + seconds
        if profile is not None:
            profile.enable()
        counts = await asyncio.gather(
            *(_work_async(unit, maker, plan, deadline, latencies) for plan in plans)
        )
        if profile is not None:
            profile.disable()
        elapsed = time.perf_counter() - started
        after = meter.read()
    finally:
        await engine.dispose()
    cpu = {k: after[k] - before[k] for k in before}
    return Run(contender, concurrency, sum(counts), elapsed, warmup, latencies, cpu)


async def _warm_async(unit: Unit, maker: async_sessionmaker[Any], plan: Plan) -> None:
    for _ in OPERATIONS:
        await unit(maker, *next(plan))


async def _work_async(
    unit: Unit,
    maker: async_sessionmaker[Any],
    plan: Plan,
    deadline: float,
    latencies: dict[int, list[float]],
) -> int:
    done = 0
    clock = time.perf_counter
    while clock() < deadline:
        operation, argument = next(plan)
        began = clock()
        await unit(maker, operation, argument)
        latencies[operation].append((clock() - began) * 1000)
        done += 1
    return done


def _threaded_run(
    dsql: Cluster, seeded: Seeded, concurrency: int, seconds: float, meter: CPUMeter
) -> Run:
    engine = amazon_engine(dsql, concurrency)
    maker = sessionmaker(engine, expire_on_commit=False)
    plans = [Plan(worker, concurrency, seeded) for worker in range(concurrency)]
    latencies: dict[int, list[float]] = {i: [] for i in range(len(OPERATIONS))}
    lock = threading.Lock()

    def warm(plan: Plan) -> None:
        for _ in OPERATIONS:
            unit_sync(maker, *next(plan))

    def work(plan: Plan, deadline: float) -> int:
        mine: list[tuple[int, float]] = []
        clock = time.perf_counter
        while clock() < deadline:
            operation, argument = next(plan)
            began = clock()
            unit_sync(maker, operation, argument)
            mine.append((operation, (clock() - began) * 1000))
        with lock:
            for operation, latency in mine:
                latencies[operation].append(latency)
        return len(mine)

    try:
        with concurrent.futures.ThreadPoolExecutor(max_workers=concurrency) as threads:
            started = time.perf_counter()
            for future in [threads.submit(warm, plan) for plan in plans]:
                future.result()
            warmup = time.perf_counter() - started
            before = meter.read()
            started = time.perf_counter()
            deadline = started + seconds
            futures = [threads.submit(work, plan, deadline) for plan in plans]
            counts = [future.result() for future in futures]
            elapsed = time.perf_counter() - started
            after = meter.read()
    finally:
        engine.dispose()
    cpu = {k: after[k] - before[k] for k in before}
    return Run(AMAZON, concurrency, sum(counts), elapsed, warmup, latencies, cpu)


def _pin(dsql: SpawnedDSQL, meter: CPUMeter) -> str:
    """The emulator (proxy, PostgreSQL) on one CPU, this client on another: what was done."""
    available = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if len(available) < 2:
        return "Not pinned: fewer than 2 CPUs are available to this process."
    server, client = [available[0]], [available[1]]
    # PostgreSQL forks a backend per connection; a backend inherits the postmaster's CPU set.
    for process in [meter.proxy, meter.postmaster, *meter.postmaster.children(recursive=True)]:
        process.cpu_affinity(server)
    os.sched_setaffinity(0, client)  # threads started later (Amazon's workers) inherit it
    return (
        f"Pinned: dsql-local's proxy and PostgreSQL on CPU {server[0]}, this client on CPU "
        f"{client[0]}, so that the client's CPU time is its own."
    )


def _profile_share(dsql: Cluster, seeded: Seeded, seconds: float) -> dict[str, float]:
    """Shares of the client's CPU (cProfile's own time) by where the code lives, for ours."""
    profile = cProfile.Profile()
    meter_free = _NoMeter()
    asyncio.run(
        _async_run(OURS, dsql, seeded, PROFILE_CONCURRENCY, seconds, meter_free, profile)  # type: ignore[arg-type]
    )
    ours_dir = str(Path(sqlalchemy_dsql.__file__).parent)
    places = {
        "sqlalchemy_dsql": ours_dir + os.sep,
        "sqlalchemy": os.sep + "sqlalchemy" + os.sep,
        "asyncpg": os.sep + "asyncpg" + os.sep,
        "asyncio": os.sep + "asyncio" + os.sep,
        "ssl": os.sep + "ssl.py",
        "the benchmark and the pet clinic models": os.sep + "benchmarks" + os.sep,
    }
    shares: Counter[str] = Counter()
    stats = pstats.Stats(profile)
    for (filename, _, name), row in stats.stats.items():  # type: ignore[attr-defined]
        own_time = row[2]
        place = next((p for p, part in places.items() if part in filename), None)
        if place is None and "async_pet_clinic" in filename:
            place = "the benchmark and the pet clinic models"
        if place is None and filename == "~" and ("ssl" in name.lower()):
            place = "ssl"
        shares[place or "other (builtins, C code, interpreter)"] += own_time
    total = sum(shares.values())
    return {place: own / total for place, own in shares.most_common()}


class _NoMeter:
    """A CPU meter that reads nothing: the profiled run's CPU is cProfile's business."""

    def read(self) -> dict[str, float]:
        return {"client": time.process_time(), "proxy": 0.0, "backend": 0.0}


def _measure(dsql: Cluster, seeded: Seeded, meter: CPUMeter, args: argparse.Namespace) -> list[Run]:
    runs: list[Run] = []
    for round_number in range(args.rounds):
        shift = round_number % len(CONTENDERS)
        order = CONTENDERS[shift:] + CONTENDERS[:shift]
        for concurrency in args.concurrency:
            for contender in order:
                if contender == AMAZON:
                    run = _threaded_run(dsql, seeded, concurrency, args.seconds, meter)
                else:
                    run = asyncio.run(
                        _async_run(contender, dsql, seeded, concurrency, args.seconds, meter)
                    )
                runs.append(run)
                print(
                    f"round {round_number + 1}/{args.rounds} c={concurrency:<3} "
                    f"{contender:<9} {run.per_second:8.1f} units/s",
                    file=sys.stderr,
                )
    return runs


# -- part 2: round trips -----------------------------------------------------------------


@dataclass
class Trips:
    """Round trips of one unit of work, by kind."""

    kinds: Counter[str] = field(default_factory=Counter)

    @property
    def total(self) -> int:
        return sum(self.kinds.values())

    def describe(self) -> str:
        order = ["BEGIN", "prepare", "execute", "COMMIT", "ROLLBACK", "pre-ping", "other"]
        parts = [f"{self.kinds[k]} {k}" if self.kinds[k] > 1 else k for k in order if self.kinds[k]]
        return f"**{self.total}**: " + ", ".join(parts)


def kind_of(trip: RoundTrip) -> str:
    sql = trip.sql[0].strip().rstrip(";").strip().upper() if trip.sql else ""
    if sql.startswith("BEGIN"):
        return "BEGIN"
    if sql in ("COMMIT", "ROLLBACK"):
        return sql
    if sql in ("", "SELECT 1"):
        return "pre-ping"
    if "E" not in trip.messages and "Q" not in trip.messages:
        return "prepare"
    if "PG_CATALOG" in sql or "PG_TYPE" in sql:
        return "other"
    return "execute"


# The statements each unit must run, and whether it writes (then COMMIT is needed too).
MINIMUM = {
    "read pet by key": (1, False),
    "read owner with pets": (2, False),
    "insert owner with a pet": (2, True),
    "update pet": (2, True),
    "insert vet with 2 specialties": (3, True),
}
AUTOCOMMIT_READS = "ours, reads with isolation_level AUTOCOMMIT"


def _trips(dsql: LocalDSQL) -> Trips:
    """The round trips logged since the log was last cleared (entries precede their replies)."""
    assert dsql.round_trip_log is not None
    trips = Trips(Counter(kind_of(trip) for trip in dsql.round_trip_log))
    dsql.round_trip_log.clear()
    return trips


def _units_for(operation: int, seeded: Seeded) -> Iterator[Any]:
    plan = Plan(operation, 1, seeded)
    while True:
        candidate, argument = next(plan)
        if candidate == operation:
            yield argument


def _count_round_trips(dsql: LocalDSQL, seeded: Seeded) -> dict[str, dict[str, list[Trips]]]:
    """For each contender and unit: [first use on a connection, steady state]."""
    counted = {AMAZON: _count_threaded(dsql, seeded)}
    for contender in (OURS, STOCK, AUTOCOMMIT_READS):
        counted[contender] = asyncio.run(_count_async(contender, dsql, seeded))
    return counted


def _count_threaded(dsql: LocalDSQL, seeded: Seeded) -> dict[str, list[Trips]]:
    engine = amazon_engine(dsql, 1)
    maker = sessionmaker(engine, expire_on_commit=False)
    counted: dict[str, list[Trips]] = {}
    try:
        with engine.connect():
            pass  # the dialect's first-connect queries are not part of any unit
        _trips(dsql)
        for operation, name in enumerate(OPERATIONS):
            arguments = _units_for(operation, seeded)
            counted[name] = []
            for _ in range(2):
                unit_sync(maker, operation, next(arguments))
                counted[name].append(_trips(dsql))
    finally:
        engine.dispose()
    return counted


async def _count_async(contender: str, dsql: LocalDSQL, seeded: Seeded) -> dict[str, list[Trips]]:
    engine = stock_engine(dsql, 1) if contender == STOCK else ours_engine(dsql, 1)
    maker = async_sessionmaker(engine, expire_on_commit=False)
    reader = async_sessionmaker(
        engine.execution_options(isolation_level="AUTOCOMMIT"), expire_on_commit=False
    )
    counted: dict[str, list[Trips]] = {}
    try:
        async with engine.connect():
            pass  # the dialect's first-connect queries are not part of any unit
        _trips(dsql)
        for operation, name in enumerate(OPERATIONS):
            reads_only = contender == AUTOCOMMIT_READS
            if reads_only and MINIMUM[name][1]:
                continue
            arguments = _units_for(operation, seeded)
            counted[name] = []
            for _ in range(2):
                if reads_only:
                    await _read_autocommit(reader, operation, next(arguments))
                elif contender == OURS:
                    await unit_ours(maker, operation, next(arguments))
                else:
                    await unit_async(maker, operation, next(arguments))
                counted[name].append(_trips(dsql))
    finally:
        await engine.dispose()
    return counted


async def _read_autocommit(maker: async_sessionmaker[Any], operation: int, argument: Any) -> None:
    async with maker() as session:
        if operation == 0:
            _require(await session.get(Pet, argument), "a seeded pet")
        else:
            owner = await session.get(Owner, argument, options=[selectinload(Owner.pets)])
            _require(owner and owner.pets, "a seeded owner's pets")


# -- the report --------------------------------------------------------------------------


def _by(runs: list[Run], contender: str, concurrency: int) -> list[Run]:
    return [r for r in runs if r.contender == contender and r.concurrency == concurrency]


def _ratios(runs: list[Run], first: str, second: str, concurrency: int) -> list[float]:
    """Per round, ``first``'s units/s over ``second``'s at the same concurrency."""
    pairs = zip(_by(runs, first, concurrency), _by(runs, second, concurrency), strict=True)
    return [a.per_second / b.per_second for a, b in pairs]


def _pooled(runs: list[Run], operation: int | None = None) -> list[float]:
    chosen = range(len(OPERATIONS)) if operation is None else [operation]
    return [latency for run in runs for i in chosen for latency in run.latencies[i]]


def _throughput_section(runs: list[Run], args: argparse.Namespace) -> list[str]:
    lines = [
        "## Throughput and latency",
        "",
        "Units of work per second: median over rounds (range). Latency: over every unit of "
        "every round. Warm-up: seconds for the workers' first unit of each kind, which opens "
        "the pool's connections (Amazon's connector mints each token with a new boto3 client). "
        "CPU: seconds per 1,000 units spent by this client process, the emulator's proxy and "
        "its PostgreSQL.",
        "",
        "| concurrency | contender | units / s | p50 ms | p99 ms | warm-up s | CPU client | "
        "CPU proxy | CPU PostgreSQL |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for concurrency in args.concurrency:
        for contender in CONTENDERS:
            chosen = _by(runs, contender, concurrency)
            latencies = _pooled(chosen)
            units = sum(r.units for r in chosen) / 1000
            cpu = {k: sum(r.cpu[k] for r in chosen) / units for k in chosen[0].cpu}
            lines.append(
                f"| {concurrency} | {contender} | {spread([r.per_second for r in chosen])} | "
                f"{percentile(latencies, 0.5):.1f} | {percentile(latencies, 0.99):.1f} | "
                f"{statistics.median(r.warmup_seconds for r in chosen):.2f} | "
                f"{cpu['client']:.2f} | {cpu['proxy']:.2f} | {cpu['backend']:.2f} |"
            )
    lines += [
        "",
        "| concurrency | ours / Amazon's | ours / stock |",
        "|---:|---:|---:|",
    ]
    for concurrency in args.concurrency:
        lines.append(
            f"| {concurrency} | **{spread(_ratios(runs, OURS, AMAZON, concurrency), 2)}x** | "
            f"**{spread(_ratios(runs, OURS, STOCK, concurrency), 2)}x** |"
        )
    top = max(args.concurrency)
    lines += [
        "",
        f"Latency by unit at concurrency {top}, p50 / p99 ms:",
        "",
        "| unit | " + " | ".join(CONTENDERS) + " |",
        "|---|" + "---:|" * len(CONTENDERS),
    ]
    for operation, name in enumerate(OPERATIONS):
        cells = []
        for contender in CONTENDERS:
            latencies = _pooled(_by(runs, contender, top), operation)
            cells.append(f"{percentile(latencies, 0.5):.1f} / {percentile(latencies, 0.99):.1f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def _round_trip_section(counted: dict[str, dict[str, list[Trips]]]) -> list[str]:
    columns = [OURS, STOCK, AMAZON]
    lines = [
        "## Round trips per unit of work",
        "",
        "Counted by dsql-local (`round_trip_log`): one round trip is the client sending "
        "something and waiting for the first reply. Steady state: the unit's second run on a "
        "connection that has run it before. Minimum: the statements the unit's ORM code must "
        "run, plus COMMIT when it writes (a read needs no transaction).",
        "",
        "| unit | minimum | " + " | ".join(columns) + f" | {AUTOCOMMIT_READS} |",
        "|---|---:|" + "---|" * (len(columns) + 1),
    ]
    for name in OPERATIONS:
        statements, writes = MINIMUM[name]
        reads = counted[AUTOCOMMIT_READS].get(name)
        cells = [counted[c][name][1].describe() for c in columns]
        cells.append(reads[1].describe() if reads else "(as ours)")
        lines.append(f"| {name} | {statements + writes} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "First run of each unit on a connection (the statements are new to it):",
        "",
        "| unit | " + " | ".join(columns) + " |",
        "|---|" + "---|" * len(columns),
    ]
    for name in OPERATIONS:
        cells = [counted[c][name][0].describe() for c in columns]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    extra = {name: counted[OURS][name][1].total - sum(MINIMUM[name]) for name in OPERATIONS}
    same = all(counted[OURS][name][1].kinds == counted[STOCK][name][1].kinds for name in OPERATIONS)
    lines += [
        "",
        "Where the round trips go:",
        "",
        "- BEGIN: SQLAlchemy's `Session` runs every unit in a transaction, and asyncpg starts "
        "one with a `BEGIN` of its own, a round trip before the first statement (the protocol "
        "could carry it with that statement; asyncpg's API cannot). psycopg2 does the same "
        "with its implicit `BEGIN`.",
        "- prepare: asyncpg prepares each new statement (Parse, Describe, Flush) and waits for "
        "the description before running it, once per statement per connection; afterwards "
        "its statement cache makes a run one round trip (Bind, Execute, Sync). psycopg2 "
        "interpolates parameters on the client and never prepares, so its first runs cost "
        "what its later ones do.",
        "- COMMIT: one per writing unit. Ours runs its read-only units through "
        "`run_transaction(..., read_only=True)`, which sends neither BEGIN nor COMMIT; "
        "Amazon's and stock SQLAlchemy pay both on every read.",
        "- pre-ping: none on any side. Our pool retires connections by age before DSQL's "
        "one-hour limit and turns a connection found dead in use into `ConnectionLost`, "
        "instead of pinging at every checkout (`pool_pre_ping=True` would add a round trip "
        "per unit).",
        "",
        "Ours spends more round trips than the minimum: "
        + ", ".join(f"{name} +{n}" for name, n in extra.items())
        + ". A writing unit's excess is its BEGIN: no driver here can send BEGIN with the "
        "first statement without taking transaction control from the driver "
        "(docs/dialect.md, Round trips), so statements + BEGIN + COMMIT is each driver's "
        "documented minimum for a write. "
        + (
            "Ours and stock SQLAlchemy make exactly the same round trips: the DSQL layer adds none."
            if same
            else "Ours and stock SQLAlchemy differ in the round trips above (ours reads without "
            "BEGIN and COMMIT): see the table."
        ),
    ]
    return lines


def _verdicts(runs: list[Run], args: argparse.Namespace) -> tuple[list[str], list[Headline]]:
    top = max(args.concurrency)
    versus_amazon = statistics.median(_ratios(runs, OURS, AMAZON, top))
    versus_stock = {c: statistics.median(_ratios(runs, OURS, STOCK, c)) for c in args.concurrency}
    worst = min(versus_stock, key=lambda c: versus_stock[c])
    amazon_met = versus_amazon >= TARGET_VS_AMAZON
    stock_met = versus_stock[worst] >= TARGET_VS_STOCK
    lines = [
        "## Targets",
        "",
        f"- Ours at least {TARGET_VS_AMAZON:g}x Amazon's dialect at concurrency {top}: "
        f"**{'met' if amazon_met else 'missed'}** ({versus_amazon:.2f}x).",
        f"- Ours at least {TARGET_VS_STOCK:g}x stock SQLAlchemy at every concurrency: "
        f"**{'met' if stock_met else 'missed'}** (lowest {versus_stock[worst]:.2f}x, at "
        f"concurrency {worst}).",
    ]
    per_second = {c: statistics.median(r.per_second for r in _by(runs, c, top)) for c in CONTENDERS}
    headlines = [
        Headline(
            f"pet clinic units/s at concurrency {top}: ours / Amazon's / stock",
            " / ".join(f"{per_second[c]:,.0f}" for c in CONTENDERS),
        ),
        Headline(
            f"ours / Amazon's dialect at concurrency {top}",
            f"{versus_amazon:.2f}x",
            f">= {TARGET_VS_AMAZON:g}x",
            "met" if amazon_met else "missed",
        ),
        Headline(
            "ours / stock SQLAlchemy, lowest over concurrency "
            + "/".join(str(c) for c in args.concurrency),
            f"{versus_stock[worst]:.2f}x (at {worst})",
            f">= {TARGET_VS_STOCK:g}x",
            "met" if stock_met else "missed",
        ),
    ]
    return lines, headlines


TARGET_LATENCY_VS_AMAZON = 0.5  # read by key, p50 at concurrency 1


def _documented_minimum(name: str) -> int:
    """Round trips of a unit at its driver's documented minimum (docs/dialect.md).

    A read: its statements (the read path). A write: its statements plus BEGIN and
    COMMIT, since asyncpg cannot send BEGIN with the first statement.
    """
    statements, writes = MINIMUM[name]
    return statements + 2 if writes else statements


def _round_trip_targets(
    runs: list[Run], counted: dict[str, dict[str, list[Trips]]], args: argparse.Namespace
) -> tuple[list[str], list[Headline]]:
    """Issue 18's round-trip targets: the read by key, every unit, latency at concurrency 1."""
    key = OPERATIONS[0]
    by_key = {c: counted[c][key][1].total for c in (OURS, AMAZON, STOCK)}
    at_minimum = {
        name: counted[OURS][name][1].total == _documented_minimum(name) for name in OPERATIONS
    }
    lines = [
        "## Round-trip targets",
        "",
        f"- Read by key in 1 round trip (Amazon's and stock: 3): **"
        f"{'met' if by_key[OURS] == 1 else 'missed'}** (ours {by_key[OURS]}, Amazon's "
        f"{by_key[AMAZON]}, stock {by_key[STOCK]}).",
        "- Every pet-clinic unit at its driver's documented minimum: **"
        + ("met" if all(at_minimum.values()) else "missed")
        + "** ("
        + ", ".join(
            f"{name} {counted[OURS][name][1].total}/{_documented_minimum(name)}"
            for name in OPERATIONS
        )
        + ").",
    ]
    headlines = [
        Headline(
            "round trips of a read by key, ours / Amazon's / stock",
            f"{by_key[OURS]} / {by_key[AMAZON]} / {by_key[STOCK]}",
            "ours 1",
            "met" if by_key[OURS] == 1 else "missed",
        ),
        Headline(
            "pet-clinic units at their driver's documented minimum (ours)",
            f"{sum(at_minimum.values())} of {len(at_minimum)}",
            "all",
            "met" if all(at_minimum.values()) else "missed",
        ),
    ]
    if 1 in args.concurrency:
        p50 = {c: percentile(_pooled(_by(runs, c, 1), 0), 0.5) for c in (OURS, AMAZON, STOCK)}
        ratio = p50[OURS] / p50[AMAZON]
        met = ratio <= TARGET_LATENCY_VS_AMAZON
        lines.append(
            f"- Read by key p50 at concurrency 1 at most {TARGET_LATENCY_VS_AMAZON:g}x Amazon's: "
            f"**{'met' if met else 'missed'}** ({ratio:.2f}x: ours {p50[OURS]:.1f} ms, "
            f"Amazon's {p50[AMAZON]:.1f} ms, stock {p50[STOCK]:.1f} ms)."
        )
        headlines.append(
            Headline(
                "read by key p50 at concurrency 1, ours / Amazon's",
                f"{ratio:.2f}x",
                f"<= {TARGET_LATENCY_VS_AMAZON:g}x",
                "met" if met else "missed",
            )
        )
    return lines, headlines


def _chart(runs: list[Run], args: argparse.Namespace, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for contender in CONTENDERS:
        medians, lows, highs, p99 = [], [], [], []
        for concurrency in args.concurrency:
            rates = [r.per_second for r in _by(runs, contender, concurrency)]
            middle = statistics.median(rates)
            medians.append(middle)
            lows.append(middle - min(rates))
            highs.append(max(rates) - middle)
            p99.append(percentile(_pooled(_by(runs, contender, concurrency)), 0.99))
        left.errorbar(
            args.concurrency, medians, yerr=[lows, highs], marker="o", capsize=3, label=contender
        )
        right.plot(args.concurrency, p99, marker="o", label=contender)
    left.set_title(f"Pet clinic units of work per second ({LATENCY_MS:g} ms per round trip)")
    left.set_xlabel("concurrency")
    left.set_ylabel("units / s (median, range over rounds)")
    right.set_title("p99 latency of a unit")
    right.set_xlabel("concurrency")
    right.set_ylabel("ms")
    for axis in (left, right):
        axis.set_xscale("log", base=2)
        axis.set_xticks(args.concurrency, [str(c) for c in args.concurrency])
        axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


TARGET_OURS_SHARE = 0.01  # sqlalchemy_dsql's share of the client's CPU


def _cpu_per_unit(run: Run) -> float:
    """Client CPU milliseconds per unit of work in one run."""
    return run.cpu["client"] * 1000 / run.units


def _cpu_section(
    runs: list[Run], shares: dict[str, float], pinning: str, args: argparse.Namespace
) -> tuple[list[str], list[Headline]]:
    lines = [
        "## Client CPU per unit of work",
        "",
        f"{pinning} This machine is CPU-bound: every contender spends about as much CPU in "
        "the client (SQLAlchemy's ORM, compilation, the event loop, TLS) as the round trips "
        "leave time for, so units per second above measure CPU more than waiting, and their "
        "ratios swing between rounds. Client CPU is this process's CPU time (user + system) "
        "over the timed part of each run, divided by its units; the contenders run in the "
        "same rounds (paired), median (range) over rounds, ms per unit.",
        "",
        "| concurrency | " + " | ".join(CONTENDERS) + " | ours / stock, paired |",
        "|---:|" + "---:|" * (len(CONTENDERS) + 1),
    ]
    worst = 0.0
    for concurrency in args.concurrency:
        cells = [
            spread([_cpu_per_unit(r) for r in _by(runs, c, concurrency)], 2) for c in CONTENDERS
        ]
        pairs = zip(_by(runs, OURS, concurrency), _by(runs, STOCK, concurrency), strict=True)
        ratios = [_cpu_per_unit(a) / _cpu_per_unit(b) for a, b in pairs]
        worst = max(worst, statistics.median(ratios))
        lines.append(f"| {concurrency} | " + " | ".join(cells) + f" | {spread(ratios, 2)}x |")
    ours_share = shares.get("sqlalchemy_dsql", 0.0)
    lines += [
        "",
        f"Where ours spends its client CPU (cProfile, own time per function, concurrency "
        f"{PROFILE_CONCURRENCY}, {args.profile_seconds:g} s; the profiler's overhead inflates "
        "Python-level code alike):",
        "",
        "| where | share |",
        "|---|---:|",
        *(f"| {place} | {share:.1%} |" for place, share in shares.items()),
        "",
        f"sqlalchemy_dsql: **{ours_share:.2%}** of the client's CPU "
        f"(target at most {TARGET_OURS_SHARE:.0%}: "
        f"{'met' if ours_share <= TARGET_OURS_SHARE else 'missed'}).",
    ]
    headlines = [
        Headline(
            "sqlalchemy_dsql's share of client CPU (cProfile)",
            f"{ours_share:.2%}",
            f"<= {TARGET_OURS_SHARE:.0%}",
            "met" if ours_share <= TARGET_OURS_SHARE else "missed",
        ),
        Headline(
            "client CPU per unit, ours / stock, worst median over concurrencies",
            f"{worst:.2f}x",
            "<= 1.00x",
            "met" if worst <= 1.0 else "missed",
        ),
    ]
    return lines, headlines


def _latency_at_one(runs: list[Run]) -> list[str]:
    """Latency at concurrency 1, where round trips, not CPU contention, set it."""
    lines = [
        "## Latency at concurrency 1",
        "",
        f"One worker, so no unit waits for another's CPU: with {LATENCY_MS:g} ms injected per "
        "round trip, the round trips below set most of it. p50 / p99 ms over every unit of "
        "every round.",
        "",
        "| unit | " + " | ".join(CONTENDERS) + " |",
        "|---|" + "---:|" * len(CONTENDERS),
    ]
    for operation, name in enumerate(OPERATIONS):
        cells = []
        for contender in CONTENDERS:
            latencies = _pooled(_by(runs, contender, 1), operation)
            cells.append(f"{percentile(latencies, 0.5):.1f} / {percentile(latencies, 0.99):.1f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def _report(
    runs: list[Run],
    counted: dict[str, dict[str, list[Trips]]],
    shares: dict[str, float],
    pinning: str,
    args: argparse.Namespace,
) -> tuple[str, list[Headline]]:
    trip_lines, headlines = _round_trip_targets(runs, counted, args)
    verdicts, throughput_headlines = _verdicts(runs, args)
    cpu_lines, cpu_headlines = _cpu_section(runs, shares, pinning, args)
    headlines += throughput_headlines + cpu_headlines
    read_path = (
        "Ours runs its reads with `run_transaction(..., read_only=True)` (no BEGIN, no COMMIT)."
        if READ_PATH
        else "This version has no read path (`run_transaction(..., read_only=True)`): ours "
        "runs its reads in a transaction like the others."
    )
    lines = [
        "# The pet clinic workload: ours, Amazon's dialect, stock SQLAlchemy",
        "",
        f"`{command_line('workload.py')}`",
        "",
        machine(
            [
                "sqlalchemy-dsql",
                "sqlalchemy",
                "asyncpg",
                "psycopg2-binary",
                "aurora-dsql-sqlalchemy",
                "aurora-dsql-python-connector",
            ]
        ),
        "",
        *(f"- {DESCRIPTIONS[c]}" for c in CONTENDERS),
        "",
        f"dsql-local in its own process, {LATENCY_MS:g} ms injected per round trip. "
        f"{args.rounds} rounds of {args.seconds:g} s per contender and concurrency; pool size = "
        "concurrency, no overflow. Units: " + "; ".join(OPERATIONS) + ", each in its own "
        "transaction, in equal shares.",
        "",
        read_path,
        "",
        *trip_lines,
        "",
        *verdicts,
        "",
        *_round_trip_section(counted),
        "",
        *cpu_lines,
        "",
        *([*_latency_at_one(runs), ""] if 1 in args.concurrency else []),
        *_throughput_section(runs, args),
        "",
    ]
    return "\n".join(lines), headlines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=8.0, help="timed seconds per run")
    parser.add_argument("--concurrency", type=int, nargs="+", default=CONCURRENCIES)
    parser.add_argument(
        "--profile-seconds", type=float, default=4.0, help="cProfile run of ours, concurrency 8"
    )
    results_argument(parser)
    args = parser.parse_args()
    use_test_credentials_from_environment()
    with LocalDSQL(round_trip_log=True) as local:
        counted = _count_round_trips(local, asyncio.run(_seed(local)))
    with tempfile.TemporaryDirectory(prefix="dsql-bench-") as scratch:
        data_dir = Path(scratch)
        with spawn(
            latency_ms=LATENCY_MS,
            data_dir=data_dir,
            connections_per_second=1_000_000,
            connection_burst=1_000_000,
        ) as dsql:
            meter = CPUMeter(dsql, data_dir)
            pinning = _pin(dsql, meter)
            seeded = asyncio.run(_seed(dsql))
            runs = _measure(dsql, seeded, meter, args)
            shares = _profile_share(dsql, seeded, args.profile_seconds)
    report, headlines = _report(runs, counted, shares, pinning, args)
    _, chart = write_results(args.results, "workload", report, headlines)
    _chart(runs, args, chart)
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
