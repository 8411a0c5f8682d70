"""A service under a burst: 10,000 concurrent tasks sharing one 64-connection pool.

Four parts, against ``dsql-local`` in its own process with DSQL's connection
quota (100 new connections per second) and 2 ms of added latency per reply:

1. **The burst.** ``--tasks`` tasks are started at once; each checks a
   connection out of one engine's pool and runs one short unit of work (four
   in five read a row by key, one in five increments a row; no two writers
   touch the same row at the same time, so no unit conflicts). Reported: total
   time, errors, connections opened, the wait for a connection (p50, p99,
   worst) and how many tasks were served after a task that arrived later.
   Contenders: ours (``create_async_engine("auroradsql+asyncpg://...")``,
   whose pool serves waiters first come, first served), the same engine on
   SQLAlchemy's stock ``AsyncAdaptedQueuePool`` (an ``asyncio.Queue``), and
   the thread-per-request alternative: one thread per task on a psycopg2
   engine with the same 64-connection pool (ours, and Amazon's
   ``aurora_dsql_sqlalchemy`` when it is installed, as in ``nox -s bench``).
2. **Memory per waiting task.** Every connection of the pool held, then
   ``--waiters`` tasks (threads) made to wait for one: Python heap per waiter
   (tracemalloc) and resident memory per waiter (RSS delta).
3. **Pool defaults.** The new-user case of issue 18: 50 tasks x 5
   transactions on a pool of SQLAlchemy's defaults (5 + 10 overflow), on
   ours, and with ``pool_size=50``: connections opened per transaction.

Run by ``uv run nox -s bench``; alone::

    uv run --group bench python benchmarks/concurrency.py [--tasks 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psutil
from _common import (
    Headline,
    amazon_engine,
    claim_auroradsql_psycopg2,
    command_line,
    machine,
    percentile,
    results_argument,
    use_test_credentials_from_environment,
    write_results,
)
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import AsyncAdaptedQueuePool

from sqlalchemy_dsql import pool_counters
from sqlalchemy_dsql.local.process import SpawnedDSQL, spawn
from sqlalchemy_dsql.pool import AsyncDSQLQueuePool

POOL = 64
ROWS = 1_000
LATENCY_MS = 2.0
# Long enough for the last of 10,000 tasks on 64 connections on this 2-core box;
# the report says how long the longest wait was.
POOL_TIMEOUT = 120.0
READ = text("SELECT n FROM burst WHERE id = :k")
WRITE = text("UPDATE burst SET n = n + 1 WHERE id = :k")


@dataclass
class Burst:
    contender: str
    tasks: int
    seconds: float = 0.0
    errors: dict[str, int] = field(default_factory=dict)
    opened: int | None = None
    waits_ms: list[float] = field(default_factory=list)
    overtaken: int = 0
    peak_rss_mb: float = 0.0
    failed_to_run: str = ""

    def error_count(self) -> int:
        return sum(self.errors.values())


def _rss() -> int:
    return int(psutil.Process().memory_info().rss)


def _overtaken(arrivals: list[int]) -> int:
    """Queued tasks served after a task that asked later (``arrivals``, in service order).

    The first POOL tasks open connections of their own, which finish in any
    order; the others queue.
    """
    latest, count = -1, 0
    for arrived in (a for a in arrivals if a >= POOL):
        if arrived < latest:
            count += 1
        latest = max(latest, arrived)
    return count


def _count_error(burst: Burst, error: BaseException) -> None:
    # With the SQLSTATE, so that an OCC conflict (40001: the unit is not retried here)
    # is told apart from a failure of the pool or the connection.
    original = getattr(error, "orig", None)
    code = getattr(original, "sqlstate", None) or getattr(original, "pgcode", None)
    name = type(error).__name__ + (f" {code}" if code else "")
    burst.errors[name] = burst.errors.get(name, 0) + 1


# -- contenders --------------------------------------------------------------------------


def ours_async(dsql: SpawnedDSQL, **options: Any) -> AsyncEngine:
    return create_async_engine(dsql.url(), pool_timeout=POOL_TIMEOUT, **options)


def stock_pool_async(dsql: SpawnedDSQL, **options: Any) -> AsyncEngine:
    return ours_async(dsql, poolclass=AsyncAdaptedQueuePool, **options)


def ours_threads(dsql: SpawnedDSQL) -> Engine:
    claim_auroradsql_psycopg2("sqlalchemy_dsql.dialect.psycopg2", "AuroraDSQLDialect_psycopg2")
    return create_engine(
        dsql.url("psycopg2"), pool_size=POOL, max_overflow=0, pool_timeout=POOL_TIMEOUT
    )


def amazon_threads(dsql: SpawnedDSQL) -> Engine:
    engine: Engine = amazon_engine(dsql, POOL, pool_timeout=POOL_TIMEOUT)
    # Ours again for the rest of the run.
    claim_auroradsql_psycopg2("sqlalchemy_dsql.dialect.psycopg2", "AuroraDSQLDialect_psycopg2")
    return engine


# -- part 1: the burst -------------------------------------------------------------------


async def _seed(dsql: SpawnedDSQL) -> None:
    engine = ours_async(dsql)
    try:
        async with engine.begin() as conn:
            await conn.execute(text("DROP TABLE IF EXISTS burst"))
        async with engine.begin() as conn:
            await conn.execute(text("CREATE TABLE burst (id int PRIMARY KEY, n int NOT NULL)"))
        async with engine.begin() as conn:
            await conn.execute(
                text("INSERT INTO burst VALUES (:k, 0)"), [{"k": k} for k in range(ROWS)]
            )
    finally:
        await engine.dispose()


async def _async_burst(name: str, engine: AsyncEngine, tasks: int) -> Burst:
    burst = Burst(name, tasks)
    served: list[int] = []
    peak = _rss()

    async def unit(number: int) -> None:
        began = time.perf_counter()
        async with engine.connect() as conn:
            burst.waits_ms.append((time.perf_counter() - began) * 1000)
            served.append(number)
            async with conn.begin():
                statement = WRITE if number % 5 == 0 else READ
                await conn.execute(statement, {"k": number % ROWS})

    async def guarded(number: int) -> None:
        try:
            await unit(number)
        except Exception as error:
            _count_error(burst, error)

    async def watch() -> None:
        nonlocal peak
        while True:
            peak = max(peak, _rss())
            await asyncio.sleep(0.05)

    watcher = asyncio.create_task(watch())
    try:
        started = time.perf_counter()
        await asyncio.gather(*(guarded(number) for number in range(tasks)))
        burst.seconds = time.perf_counter() - started
    finally:
        watcher.cancel()
        burst.opened = pool_counters(engine).connections_opened
        await engine.dispose()
    burst.overtaken = _overtaken(served)
    burst.peak_rss_mb = peak / 2**20
    return burst


def _threaded_burst(name: str, make: Callable[[], Engine], tasks: int) -> Burst:
    burst = Burst(name, tasks)
    try:
        engine = make()
    except ImportError as error:
        burst.failed_to_run = f"not installed ({error.name}); `nox -s bench` installs it"
        return burst
    served: list[int] = []
    lock = threading.Lock()
    go = threading.Event()

    def unit(number: int) -> None:
        go.wait()
        try:
            began = time.perf_counter()
            with engine.connect() as conn:
                waited = (time.perf_counter() - began) * 1000
                with lock:
                    burst.waits_ms.append(waited)
                    served.append(number)
                with conn.begin():
                    statement = WRITE if number % 5 == 0 else READ
                    conn.execute(statement, {"k": number % ROWS})
        except Exception as error:
            with lock:
                _count_error(burst, error)

    threads: list[threading.Thread] = []
    try:
        for number in range(tasks):
            thread = threading.Thread(target=unit, args=(number,), daemon=True)
            thread.start()
            threads.append(thread)
    except RuntimeError as error:  # "can't start new thread"
        burst.failed_to_run = f"could start only {len(threads)} threads: {error}"
    burst.peak_rss_mb = _rss() / 2**20
    started = time.perf_counter()
    go.set()
    for thread in threads:
        thread.join()
    burst.seconds = time.perf_counter() - started
    try:
        burst.opened = pool_counters(engine).connections_opened
    except Exception:  # Amazon's engine has no counters of ours
        burst.opened = None
    engine.dispose()
    burst.overtaken = _overtaken(served)
    return burst


# -- part 2: memory per waiting task -----------------------------------------------------


@dataclass
class Waiting:
    contender: str
    waiters: int
    heap_bytes: float
    rss_bytes: float


async def _async_waiting(name: str, engine: AsyncEngine, waiters: int) -> Waiting:
    held = [await engine.connect() for _ in range(POOL)]
    for conn in held:
        await conn.execute(text("SELECT 1"))
    release = asyncio.Event()
    gc.collect()
    tracemalloc.start()
    heap_before, rss_before = tracemalloc.get_traced_memory()[0], _rss()

    async def wait() -> None:
        async with engine.connect():
            await release.wait()

    pending = [asyncio.create_task(wait()) for _ in range(waiters)]
    while _queued(engine) < waiters:  # noqa: ASYNC110 - polling the pool, which has no event
        await asyncio.sleep(0.01)
    heap, rss = tracemalloc.get_traced_memory()[0] - heap_before, _rss() - rss_before
    tracemalloc.stop()
    for conn in held:
        await conn.close()
    release.set()
    await asyncio.gather(*pending)
    await engine.dispose()
    return Waiting(name, waiters, heap / waiters, rss / waiters)


def _queued(engine: AsyncEngine) -> int:
    queue = engine.sync_engine.pool._pool  # type: ignore[attr-defined]
    waiting = getattr(queue, "waiting", None)
    if waiting is not None:
        return int(waiting)
    return len(queue._queue._getters)  # SQLAlchemy's asyncio.Queue


def _threaded_waiting(engine: Engine, waiters: int) -> Waiting:
    held = [engine.connect() for _ in range(POOL)]
    for conn in held:
        conn.execute(text("SELECT 1"))
    release = threading.Event()
    gc.collect()
    tracemalloc.start()
    heap_before, rss_before = tracemalloc.get_traced_memory()[0], _rss()

    def wait() -> None:
        with engine.connect():
            release.wait()

    threads = [threading.Thread(target=wait, daemon=True) for _ in range(waiters)]
    for thread in threads:
        thread.start()
    queue = engine.pool._pool  # type: ignore[attr-defined]
    while queue.waiting < waiters:
        time.sleep(0.01)
    heap, rss = tracemalloc.get_traced_memory()[0] - heap_before, _rss() - rss_before
    tracemalloc.stop()
    for conn in held:
        conn.close()
    release.set()
    for thread in threads:
        thread.join()
    engine.dispose()
    return Waiting("threads, psycopg2 (ours)", waiters, heap / waiters, rss / waiters)


# -- part 3: pool defaults ---------------------------------------------------------------


@dataclass
class Defaults:
    pool: str
    transactions: int
    opened: int
    overflow_closed: int | None
    seconds: float


async def _defaults_run(name: str, engine: AsyncEngine, tasks: int, each: int) -> Defaults:
    async def task(number: int) -> None:
        for _ in range(each):
            async with engine.begin() as conn:
                await conn.execute(READ, {"k": number % ROWS})

    started = time.perf_counter()
    try:
        await asyncio.gather(*(task(n) for n in range(tasks)))
        seconds = time.perf_counter() - started
        counters = pool_counters(engine)
        # SQLAlchemy's own pool does not count what it closes.
        ours = isinstance(engine.sync_engine.pool, AsyncDSQLQueuePool)
        closed = counters.overflow_closed if ours else None
        return Defaults(name, tasks * each, counters.connections_opened, closed, seconds)
    finally:
        await engine.dispose()


# -- the report --------------------------------------------------------------------------


async def _async_parts(
    dsql: SpawnedDSQL, args: argparse.Namespace
) -> tuple[list[Burst], list[Waiting], list[Defaults]]:
    await _seed(dsql)
    bursts = [
        await _async_burst(
            "asyncio tasks, ours (first come, first served)",
            ours_async(dsql, pool_size=POOL),
            args.tasks,
        ),
        await _async_burst(
            "asyncio tasks, SQLAlchemy's AsyncAdaptedQueuePool",
            stock_pool_async(dsql, pool_size=POOL, max_overflow=0),
            args.tasks,
        ),
    ]
    waiting = [
        await _async_waiting("asyncio tasks, ours", ours_async(dsql, pool_size=POOL), args.waiters),
        await _async_waiting(
            "asyncio tasks, SQLAlchemy's AsyncAdaptedQueuePool",
            stock_pool_async(dsql, pool_size=POOL, max_overflow=0),
            args.waiters,
        ),
    ]
    defaults = [
        await _defaults_run(
            "SQLAlchemy's AsyncAdaptedQueuePool, 5 + 10 overflow (stock default)",
            stock_pool_async(dsql, pool_size=5, max_overflow=10),
            50,
            5,
        ),
        await _defaults_run(
            "ours, 5 + 10 overflow (Amazon's create_dsql_engine default)",
            ours_async(dsql, pool_size=5, max_overflow=10),
            50,
            5,
        ),
        await _defaults_run("ours, default (15, no overflow)", ours_async(dsql), 50, 5),
        await _defaults_run("ours, pool_size=50", ours_async(dsql, pool_size=50), 50, 5),
    ]
    return bursts, waiting, defaults


def _burst_row(burst: Burst) -> str:
    if not burst.waits_ms:
        errors = ", ".join(f"{n} {name}" for name, n in burst.errors.items())
        reason = burst.failed_to_run or f"every unit failed ({errors})"
        return f"| {burst.contender} | did not run: {reason} |||||||"
    errors = ", ".join(f"{n} {name}" for name, n in burst.errors.items()) or "0"
    note = f" ({burst.failed_to_run})" if burst.failed_to_run else ""
    return (
        f"| {burst.contender}{note} | {len(burst.waits_ms):,} | {burst.seconds:.1f} | {errors} | "
        f"{'n/a' if burst.opened is None else burst.opened} | "
        f"{percentile(burst.waits_ms, 0.5):,.0f} | {percentile(burst.waits_ms, 0.99):,.0f} | "
        f"{max(burst.waits_ms):,.0f} | {burst.overtaken:,} | {burst.peak_rss_mb:,.0f} |"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=10_000, help="tasks (threads) in the burst")
    parser.add_argument("--waiters", type=int, default=2_000, help="waiters for part 2")
    parser.add_argument(
        "--skip-threads", action="store_true", help="leave out the thread-per-request runs"
    )
    results_argument(parser)
    args = parser.parse_args()
    use_test_credentials_from_environment()
    with spawn(latency_ms=LATENCY_MS) as dsql:
        bursts, waiting, defaults = asyncio.run(_async_parts(dsql, args))
        if not args.skip_threads:
            bursts.append(
                _threaded_burst("threads, psycopg2 (ours)", lambda: ours_threads(dsql), args.tasks)
            )
            bursts.append(
                _threaded_burst(
                    "threads, psycopg2 (Amazon's aurora-dsql-sqlalchemy)",
                    lambda: amazon_threads(dsql),
                    args.tasks,
                )
            )
            waiting.append(_threaded_waiting(ours_threads(dsql), args.waiters))
    ours = bursts[0]
    report = "\n".join(
        [
            f"# {args.tasks:,} concurrent tasks on one {POOL}-connection pool",
            "",
            f"`{command_line('concurrency.py')}`",
            "",
            machine(["sqlalchemy-dsql", "sqlalchemy", "asyncpg", "psycopg2-binary"]),
            "",
            f"dsql-local in its own process, DSQL's connection quota (100 per second), "
            f"{LATENCY_MS:g} ms added per reply; `pool_timeout={POOL_TIMEOUT:g}`. All tasks "
            "(threads) start at once; each runs one unit (4 in 5 a read by key, 1 in 5 an "
            "increment). The wait is from asking for a connection to having it; 'overtaken' "
            f"counts queued tasks (all but the first {POOL}, which open their own connections) "
            "served after a task that asked later. The units are not retried, so an OCC "
            "conflict (40001) is counted as an error: it happens when two increments of one "
            "row run at once, which served in order (1,000 rows, 64 at a time) they do not. "
            "The box has 2 cores and the client is CPU-bound: total time is the client's "
            "CPU, not the pool's.",
            "",
            "| contender | units | seconds | errors | connections opened | wait p50 ms | "
            "wait p99 ms | worst wait ms | overtaken | peak RSS MiB |",
            "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|",
            *(_burst_row(b) for b in bursts),
            "",
            f"## Memory per waiting task ({args.waiters:,} waiters, all {POOL} connections held)",
            "",
            "| contender | Python heap per waiter (tracemalloc) | RSS per waiter |",
            "|---|---:|---:|",
            *(
                f"| {w.contender} | {w.heap_bytes / 1024:,.1f} KiB | "
                f"{w.rss_bytes / 1024:,.1f} KiB |"
                for w in waiting
            ),
            "",
            "A thread's RSS counts the pages of its stack it touched; its 8 MiB stack is "
            "reserved address space, not memory.",
            "",
            "## Pool defaults: 50 tasks x 5 transactions",
            "",
            "| pool | transactions | connections opened | per transaction | overflow closed | "
            "seconds |",
            "|---|---:|---:|---:|---:|---:|",
            *(
                f"| {d.pool} | {d.transactions} | {d.opened} | {d.opened / d.transactions:.2f} | "
                f"{'n/a' if d.overflow_closed is None else d.overflow_closed} | {d.seconds:.2f} |"
                for d in defaults
            ),
            "",
            "Each connection opened costs an IAM token, a TLS handshake and a share of DSQL's "
            "100-connections-per-second quota. SQLAlchemy closes an overflow connection as it "
            "comes back whenever the pool already holds `pool_size`, so under a load above "
            "`pool_size` it opens and closes connections all the time; the auroradsql pool "
            "opens no overflow by default (see 'Sizing a pool' in docs/engine.md).",
            "",
        ]
    )
    headlines = [
        Headline(
            f"{args.tasks:,} tasks on {POOL} connections: errors",
            str(ours.error_count()),
            "0",
            "met" if ours.error_count() == 0 and ours.waits_ms else "missed",
        ),
        Headline(
            f"{args.tasks:,} tasks on {POOL} connections: wait for a connection p50 / p99",
            f"{percentile(ours.waits_ms, 0.5):,.0f} / {percentile(ours.waits_ms, 0.99):,.0f} ms"
            if ours.waits_ms
            else "n/a",
        ),
        Headline(
            "memory per waiting task",
            f"{waiting[0].heap_bytes / 1024:,.1f} KiB heap, {waiting[0].rss_bytes / 1024:,.1f} "
            "KiB RSS",
        ),
        Headline(
            "connections opened per transaction, 50 tasks on the default pool",
            f"{defaults[2].opened / defaults[2].transactions:.2f} "
            f"(SQLAlchemy's 5 + 10: {defaults[0].opened / defaults[0].transactions:.2f})",
        ),
    ]
    write_results(args.results, "concurrency", report, headlines)
    print(report)
    return 0 if ours.error_count() == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
