"""Optimistic-concurrency retries and batched writes, measured through dsql-local.

One run, one emulator (``dsql-local`` in its own process, so that its proxy
and the client don't share a GIL) with 2 ms of injected latency per round
trip, 3,000 rows per transaction enforced, and its connection-rate limits
raised out of the way.

Part 1, the contended counter. ``--tasks`` tasks (50) each run
``--increments`` (20) read-modify-write transactions (``SELECT n``, then
``UPDATE ... SET n = <read value + 1>``) on one async engine with a
connection per task. Two workloads: every transaction on one row ("hot
row"), and each on one of ten rows chosen at random ("10 rows"). A
transaction that gives up counts as failed; the benchmark checks that the
stored counters equal the committed transactions (no lost update on any
side). Reported: committed transactions per second, failures, retries per
transaction, and the p50 / p99 time of a transaction from its first attempt
to its commit.

* The sweep: :func:`sqlalchemy_dsql.run_transaction` with several
  ``(base_delay, max_delay)`` pairs and no attempt limit, to see how many
  attempts contention needs and which backoff gets the most done. This is
  the evidence behind ``RetryPolicy``'s defaults.
* (a) Our defaults, ``RetryPolicy()``, against the defaults of Amazon's
  ``aurora-dsql-python-connector``: its own retry loop,
  ``dsql_core.occ_retry._retry_async`` with ``OCCRetryConfig()`` (3
  retries, delays of ``min(1 ms * 2**(n-1), 100 ms)`` plus up to 25 %), run
  around the same engine transaction, so that the retry policy is the only
  difference. Its loop recognises a conflict by the ``sqlstate`` of the
  exception it catches, so the SQLAlchemy error's driver exception is
  re-raised for it.

Part 2 (b), batched inserts. ``--rows`` rows (100,000) of three columns
inserted into an empty table, with the same batches (``--batch-sizes``
rows per transaction) on both sides: :func:`sqlalchemy_dsql.batch.insert`
with its default concurrency (8 transactions at once), against one
sequential loop that runs each batch in its own transaction
(``async with engine.begin(): await conn.execute(table.insert(), batch)``),
one after another. The table is dropped and re-created before every run;
sides alternate. The CPU seconds the client, the proxy and the PostgreSQL
backend spent are recorded, because on a small machine they bound what
concurrency can gain: all three share its cores.

Writes ``retry_batch.md``, ``retry_batch.json`` and ``retry_batch.png`` to
``--results`` (by default ``benchmarks/results/``).

Run by ``uv run nox -s bench``; alone::

    uv run --group bench python benchmarks/retry_batch.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _common import (
    CPUMeter,
    Headline,
    command_line,
    machine,
    percentile,
    results_argument,
    spread,
    use_test_credentials_from_environment,
    write_results,
)
from dsql_core.occ_retry import OCCRetryConfig, _retry_async
from sqlalchemy import Column, Integer, MetaData, String, Table, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from sqlalchemy_dsql import RetryPolicy, batch, run_transaction
from sqlalchemy_dsql.errors import RetriesExhausted
from sqlalchemy_dsql.local.process import SpawnedDSQL, spawn
from sqlalchemy_dsql.retry import RetryEvent

LATENCY_MS = 2.0
TARGET_BATCH_RATIO = 4.0
WORKLOADS = {"hot row": 1, "10 rows": 10}
OURS = "ours: RetryPolicy() defaults"
AMAZON = "Amazon's connector defaults: OCCRetryConfig()"
CONCURRENT = "batch.insert, 8 concurrent transactions"
SEQUENTIAL = "sequential loop, one transaction per batch"
SWEEP = [(0.001, 0.1), (0.002, 0.2), (0.005, 0.2), (0.005, 0.5), (0.01, 0.5), (0.02, 1.0)]
ITEMS = MetaData()
items = Table(
    "bench_items",
    ITEMS,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("name", String(40), nullable=False),
    Column("qty", Integer, nullable=False),
)

Body = Callable[[AsyncConnection], Awaitable[None]]
Runner = Callable[[Body], Awaitable[int]]
"""Runs one transaction, retrying as it sees fit; returns the attempts it took."""


@dataclass
class CounterRun:
    committed: int
    failed: int
    elapsed: float
    attempts: list[int] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)

    @property
    def per_second(self) -> float:
        return self.committed / self.elapsed

    @property
    def retries_per_transaction(self) -> float:
        return (sum(self.attempts) - len(self.attempts)) / len(self.attempts)


@dataclass
class InsertRun:
    elapsed: float
    rows: int
    cpu: dict[str, float]

    @property
    def per_second(self) -> float:
        return self.rows / self.elapsed


# -- part 1: the contended counter ----------------------------------------------------------


def ours(engine: AsyncEngine, policy: RetryPolicy) -> Runner:
    async def run(body: Body) -> int:
        events: list[RetryEvent] = []
        await run_transaction(engine, body, policy=policy, on_retry=events.append)
        return len(events) + 1

    return run


def amazons(engine: AsyncEngine, config: OCCRetryConfig) -> Runner:
    async def run(body: Body) -> int:
        attempts = 0

        async def attempt() -> None:
            nonlocal attempts
            attempts += 1
            try:
                async with engine.begin() as conn:
                    await body(conn)
            except DBAPIError as error:
                # Amazon's loop reads .sqlstate off the exception it catches.
                raise error.orig from error  # type: ignore[misc]

        await _retry_async(attempt, config)
        return attempts

    return run


async def _reset_counters(engine: AsyncEngine, rows: int) -> None:
    async with engine.begin() as conn:
        await conn.execute(text("DELETE FROM bench_counter"))
    async with engine.begin() as conn:
        await conn.execute(
            text("INSERT INTO bench_counter (id, n) VALUES (:id, 0)"),
            [{"id": i} for i in range(rows)],
        )


async def _counter_run(
    engine: AsyncEngine, runner: Runner, rows: int, tasks: int, increments: int
) -> CounterRun:
    await _reset_counters(engine, rows)
    run = CounterRun(committed=0, failed=0, elapsed=0.0)

    async def one_task(seed: int) -> None:
        choose = random.Random(seed)
        for _ in range(increments):
            row = choose.randrange(rows)

            async def increment(conn: AsyncConnection, row: int = row) -> None:
                read = text("SELECT n FROM bench_counter WHERE id = :id")
                n = (await conn.execute(read, {"id": row})).scalar_one()
                await conn.execute(
                    text("UPDATE bench_counter SET n = :n WHERE id = :id"), {"n": n + 1, "id": row}
                )

            started = time.perf_counter()
            try:
                attempts = await runner(increment)
            except Exception as error:
                if not _is_conflict_failure(error):
                    raise
                run.failed += 1
                continue
            run.seconds.append(time.perf_counter() - started)
            run.attempts.append(attempts)
            run.committed += 1

    started = time.perf_counter()
    await asyncio.gather(*(one_task(seed) for seed in range(tasks)))
    run.elapsed = time.perf_counter() - started
    async with engine.connect() as conn:
        stored = (await conn.execute(text("SELECT sum(n) FROM bench_counter"))).scalar_one()
    if stored != run.committed:
        raise RuntimeError(f"{stored} increments stored, {run.committed} committed: a lost update")
    return run


def _is_conflict_failure(error: BaseException) -> bool:
    if isinstance(error, RetriesExhausted):
        return True
    return getattr(error, "sqlstate", None) in {"40001", "OC000", "OC001"}


# -- part 2: batched inserts ----------------------------------------------------------------


async def _fresh_items(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.run_sync(ITEMS.drop_all)
    async with engine.begin() as conn:
        await conn.run_sync(ITEMS.create_all)


async def _insert_run(
    engine: AsyncEngine,
    rows: list[dict[str, Any]],
    batch_size: int,
    concurrent: bool,
    meter: CPUMeter,
) -> InsertRun:
    await _fresh_items(engine)
    before = meter.read()
    started = time.perf_counter()
    if concurrent:
        report = await batch.insert(engine, items, rows, batch_size=batch_size, progress=False)
        if report.rows != len(rows):
            raise RuntimeError(f"batch.insert wrote {report.rows} of {len(rows)} rows")
    else:
        for start in range(0, len(rows), batch_size):
            async with engine.begin() as conn:
                await conn.execute(items.insert(), rows[start : start + batch_size])
    elapsed = time.perf_counter() - started
    after = meter.read()
    async with engine.connect() as conn:
        stored = (await conn.execute(text("SELECT count(*) FROM bench_items"))).scalar_one()
    if stored != len(rows):
        raise RuntimeError(f"{stored} rows stored, {len(rows)} inserted")
    return InsertRun(elapsed=elapsed, rows=len(rows), cpu={k: after[k] - before[k] for k in before})


# -- the run --------------------------------------------------------------------------------


@dataclass
class Measured:
    sweep: dict[tuple[str, str], list[CounterRun]] = field(default_factory=dict)
    versus: dict[tuple[str, str], list[CounterRun]] = field(default_factory=dict)
    inserts: dict[tuple[str, int], list[InsertRun]] = field(default_factory=dict)


def _engine(dsql: SpawnedDSQL, pool_size: int) -> AsyncEngine:
    # The URL holds no secret: the dialect signs with the test key pair in the environment.
    return create_async_engine(dsql.url(), pool_size=pool_size, max_overflow=0)


async def _open_connections(engine: AsyncEngine, count: int) -> None:
    """Fill the pool, so that no measured run pays for connecting."""
    connections = [await engine.connect() for _ in range(count)]
    for connection in connections:
        await connection.close()


def _sweep_label(base: float, cap: float) -> str:
    return f"base {base * 1000:g} ms, cap {cap * 1000:g} ms"


async def _measure(dsql: SpawnedDSQL, data_dir: Path, args: argparse.Namespace) -> Measured:
    measured = Measured()
    engine = _engine(dsql, pool_size=args.tasks)
    async with engine.begin() as conn:
        await conn.execute(
            text("CREATE TABLE IF NOT EXISTS bench_counter (id int PRIMARY KEY, n int NOT NULL)")
        )
    await _open_connections(engine, args.tasks)

    unbounded = {
        _sweep_label(base, cap): RetryPolicy(
            base_delay=base, max_delay=cap, max_attempts=10_000, deadline=None
        )
        for base, cap in SWEEP
    }
    contenders: dict[str, Runner] = {
        OURS: ours(engine, RetryPolicy()),
        AMAZON: amazons(engine, OCCRetryConfig()),
    }
    for round_number in range(args.rounds):
        for workload, rows in WORKLOADS.items():
            if not args.skip_sweep:
                labels = list(unbounded)
                random.Random(round_number).shuffle(labels)
                for label in labels:
                    run = await _counter_run(
                        engine, ours(engine, unbounded[label]), rows, args.tasks, args.increments
                    )
                    measured.sweep.setdefault((label, workload), []).append(run)
                    print(f"sweep {workload:8} {label:26} {run.per_second:7.1f}/s", flush=True)
            names = list(contenders)
            if round_number % 2:
                names.reverse()
            for name in names:
                run = await _counter_run(
                    engine, contenders[name], rows, args.tasks, args.increments
                )
                measured.versus.setdefault((name, workload), []).append(run)
                print(
                    f"(a) {workload:8} {name[:30]:30} {run.per_second:7.1f}/s failed {run.failed}",
                    flush=True,
                )
    async with engine.begin() as conn:
        await conn.execute(text("DROP TABLE bench_counter"))
    await engine.dispose()

    meter = CPUMeter(dsql, data_dir)
    engine = _engine(dsql, pool_size=8)
    await _open_connections(engine, 8)
    input_rows = [{"id": i, "name": f"item {i}", "qty": i % 97} for i in range(args.rows)]
    for round_number in range(args.rounds):
        for batch_size in args.batch_sizes:
            order = [True, False] if round_number % 2 == 0 else [False, True]
            for concurrent in order:
                inserted = await _insert_run(engine, input_rows, batch_size, concurrent, meter)
                side = CONCURRENT if concurrent else SEQUENTIAL
                measured.inserts.setdefault((side, batch_size), []).append(inserted)
                print(
                    f"(b) {batch_size:5} {side[:30]:30} {inserted.per_second:9.0f} rows/s",
                    flush=True,
                )
    await _fresh_items(engine)
    async with engine.begin() as conn:
        await conn.run_sync(ITEMS.drop_all)
    await engine.dispose()
    return measured


# -- the report -----------------------------------------------------------------------------


def _median(runs: list[CounterRun] | list[InsertRun], attribute: str) -> float:
    return float(statistics.median(getattr(run, attribute) for run in runs))


def _counter_row(label: str, runs: list[CounterRun]) -> str:
    seconds = [s for run in runs for s in run.seconds]
    attempts = [a for run in runs for a in run.attempts]
    failed = sum(run.failed for run in runs)
    total = sum(run.committed + run.failed for run in runs)
    return (
        f"| {label} | {spread([run.per_second for run in runs], 1)} | {failed} of {total} | "
        f"{_median(runs, 'retries_per_transaction'):.2f} | {max(attempts)} | "
        f"{percentile(seconds, 0.5) * 1000:.0f} | {percentile(seconds, 0.99) * 1000:.0f} |"
    )


COUNTER_HEADER = (
    "| policy | committed / s, median (range) | failed | retries per transaction | most attempts "
    "| p50 ms | p99 ms |\n|---|---:|---:|---:|---:|---:|---:|"
)


def _report(measured: Measured, args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    default = RetryPolicy()
    lines = [
        "# OCC retries and batched writes through dsql-local",
        "",
        f"`{command_line('retry_batch.py')}`",
        "",
        machine(["sqlalchemy-dsql", "sqlalchemy", "asyncpg", "aurora-dsql-python-connector"]),
        "",
        f"dsql-local in its own process, {LATENCY_MS:g} ms injected per round trip, 3,000 rows "
        f"per transaction enforced. {args.rounds} rounds; in each, the contenders run in turn "
        "(order alternating or shuffled). Medians over rounds, with their range; latency "
        "percentiles and attempt counts over every transaction of every round.",
        "",
        f"Counter workload: {args.tasks} tasks x {args.increments} read-modify-write "
        "transactions, one connection per task; every side ended with stored counters equal to "
        "its committed transactions (checked after each run).",
        "",
        "The emulator detects a write-write conflict when the second writer's UPDATE meets the "
        "first writer's row lock (after at most its 50 ms lock timeout, usually as soon as the "
        "first commits), where DSQL detects it at COMMIT: the same error and the same retry, "
        "reached a little earlier here.",
        "",
    ]
    chart: dict[str, Any] = {"versus": {}, "inserts": {}}
    if measured.sweep:
        lines += [
            "## The sweep: backoff with no attempt limit",
            "",
            "`run_transaction` with `RetryPolicy(base_delay, max_delay, max_attempts=10000, "
            "deadline=None)`; full jitter (each delay uniform in "
            "`[0, min(cap, base * 2**(n-1))]`).",
            "",
        ]
        for workload in WORKLOADS:
            lines += [f"### {workload}", "", COUNTER_HEADER]
            for base, cap in SWEEP:
                label = _sweep_label(base, cap)
                lines.append(_counter_row(label, measured.sweep[(label, workload)]))
            lines.append("")
    lines += [
        "## (a) Our defaults against Amazon's connector's defaults",
        "",
        f"Ours: `RetryPolicy()` = max_attempts {default.max_attempts}, base "
        f"{default.base_delay * 1000:g} ms, cap {default.max_delay * 1000:g} ms, full jitter, "
        f"deadline {default.deadline:g} s. Amazon's: `OCCRetryConfig()` = 3 retries (4 "
        "attempts), `min(1 ms * 2**(n-1), 100 ms)` plus up to 25 %, through its own "
        "`_retry_async`. A failed transaction is one whose retries ran out: its update is lost "
        "to the application.",
        "",
    ]
    for workload in WORKLOADS:
        lines += [f"### {workload}", "", COUNTER_HEADER]
        for name in (OURS, AMAZON):
            runs = measured.versus[(name, workload)]
            lines.append(_counter_row(name, runs))
            chart["versus"][(name, workload)] = (
                _median(runs, "per_second"),
                sum(r.failed for r in runs) / sum(r.committed + r.failed for r in runs),
            )
        ours_rate = _median(measured.versus[(OURS, workload)], "per_second")
        amazon_rate = _median(measured.versus[(AMAZON, workload)], "per_second")
        lines += [
            "",
            f"Committed per second, ours / Amazon's: **{ours_rate / amazon_rate:.2f}x**.",
            "",
        ]

    lines += [
        "## (b) Concurrent batch insert against a sequential loop of the same batches",
        "",
        f"{args.rows:,} rows (int key, varchar, int) into an empty table; same batches on both "
        "sides. CPU: seconds spent during the run by this client process, the emulator's proxy "
        "process and the PostgreSQL backend (postmaster and its children).",
        "",
        "| batch size | side | rows / s, median (range) | seconds | CPU client s | CPU proxy s "
        "| CPU backend s |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    ratios = {}
    for batch_size in args.batch_sizes:
        for side in (CONCURRENT, SEQUENTIAL):
            insert_runs = measured.inserts[(side, batch_size)]
            cpu = {k: statistics.median(r.cpu[k] for r in insert_runs) for k in insert_runs[0].cpu}
            lines.append(
                f"| {batch_size} | {side} | {spread([r.per_second for r in insert_runs], 0)} | "
                f"{_median(insert_runs, 'elapsed'):.2f} | {cpu['client']:.2f} | "
                f"{cpu['proxy']:.2f} | {cpu['backend']:.2f} |"
            )
            chart["inserts"][(side, batch_size)] = _median(insert_runs, "per_second")
        ratios[batch_size] = (
            chart["inserts"][(CONCURRENT, batch_size)] / chart["inserts"][(SEQUENTIAL, batch_size)]
        )
    cores = os.cpu_count() or 1
    lines += [
        "",
        "| batch size | concurrent / sequential | target >= 4x | most this machine allows |",
        "|---:|---:|---|---:|",
    ]
    for batch_size, ratio in ratios.items():
        verdict = "met" if ratio >= TARGET_BATCH_RATIO else "missed"
        ceiling = _ratio_ceiling(measured, batch_size, cores)
        lines.append(f"| {batch_size} | **{ratio:.2f}x** | {verdict} | {ceiling:.1f}x |")
    lines += [
        "",
        "The last column bounds the ratio with the CPU the concurrent run needed: it cannot "
        f"finish sooner than its client's CPU seconds (one Python thread) or than all three "
        f"processes' CPU seconds spread over the {cores} cores they share, and the sequential "
        "loop's time divided by that floor is the best ratio possible here. With small batches "
        "the sequential loop mostly waits on round trips and concurrency hides them; with large "
        "ones it is already mostly CPU, which concurrency cannot add on this machine. Against "
        "DSQL the database's CPU is not the client's, so only the client's share bounds it.",
        "",
    ]
    chart["ratios"] = ratios
    return "\n".join(lines), chart


def _headlines(measured: Measured, chart: dict[str, Any]) -> list[Headline]:
    hot = "hot row"
    ours_rate, amazon_rate = (chart["versus"][(name, hot)][0] for name in (OURS, AMAZON))
    amazon_runs = measured.versus[(AMAZON, hot)]
    failed = sum(r.failed for r in amazon_runs)
    total = sum(r.committed + r.failed for r in amazon_runs)
    headlines = [
        Headline(
            "hot-row OCC counter, committed/s: ours defaults / Amazon's connector defaults",
            f"{ours_rate:.1f} / {amazon_rate:.1f} ({failed} of {total} Amazon transactions failed)",
        ),
        Headline("ours / Amazon's on the hot row", f"{ours_rate / amazon_rate:.2f}x"),
    ]
    for batch_size, ratio in chart["ratios"].items():
        headlines.append(
            Headline(
                f"batch.insert vs sequential loop, batch {batch_size}",
                f"{ratio:.2f}x ({chart['inserts'][(CONCURRENT, batch_size)]:,.0f} rows/s)",
                f">= {TARGET_BATCH_RATIO:g}x",
                "met" if ratio >= TARGET_BATCH_RATIO else "missed",
            )
        )
    return headlines


def _ratio_ceiling(measured: Measured, batch_size: int, cores: int) -> float:
    concurrent = measured.inserts[(CONCURRENT, batch_size)]
    cpu = {k: statistics.median(r.cpu[k] for r in concurrent) for k in concurrent[0].cpu}
    floor = max(cpu["client"], sum(cpu.values()) / cores)
    return _median(measured.inserts[(SEQUENTIAL, batch_size)], "elapsed") / floor


def _chart(chart: dict[str, Any], args: argparse.Namespace, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(13, 5))
    positions = list(range(len(WORKLOADS)))
    for offset, name, label in (
        (-0.2, OURS, "ours (defaults)"),
        (0.2, AMAZON, "Amazon's defaults"),
    ):
        values = [chart["versus"][(name, w)][0] for w in WORKLOADS]
        failed = [chart["versus"][(name, w)][1] for w in WORKLOADS]
        left.bar([p + offset for p in positions], values, width=0.4, label=label)
        for p, value, share in zip(positions, values, failed, strict=True):
            left.annotate(
                f"{value:.0f}/s\n{share:.0%} failed",
                (p + offset, value),
                ha="center",
                va="bottom",
                fontsize=8,
            )
    top = max(value for value, _ in chart["versus"].values())
    left.set_ylim(top=top * 1.2)
    left.set_xticks(positions, list(WORKLOADS))
    left.set_ylabel("committed transactions per second")
    left.set_title(f"(a) contended counter, {args.tasks} tasks")
    left.legend(loc="upper left")

    batch_sizes = args.batch_sizes
    positions = list(range(len(batch_sizes)))
    for offset, side, label in (
        (-0.2, CONCURRENT, "batch.insert (8 concurrent)"),
        (0.2, SEQUENTIAL, "sequential loop"),
    ):
        values = [chart["inserts"][(side, b)] for b in batch_sizes]
        right.bar([p + offset for p in positions], values, width=0.4, label=label)
    for p, b in zip(positions, batch_sizes, strict=True):
        top = max(chart["inserts"][(CONCURRENT, b)], chart["inserts"][(SEQUENTIAL, b)])
        right.annotate(f"{chart['ratios'][b]:.1f}x", (p, top), ha="center", va="bottom")
    right.set_ylim(top=max(chart["inserts"].values()) * 1.2)
    right.set_xticks(positions, [f"{b} rows/batch" for b in batch_sizes])
    right.set_ylabel("rows inserted per second")
    right.set_title(f"(b) batched insert, {LATENCY_MS:g} ms latency")
    right.legend(loc="upper left")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tasks", type=int, default=50)
    parser.add_argument("--increments", type=int, default=20)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[100, 250, 500, 1000])
    parser.add_argument("--skip-sweep", action="store_true", help="only (a) and (b)")
    results_argument(parser)
    args = parser.parse_args()
    use_test_credentials_from_environment()
    with tempfile.TemporaryDirectory(prefix="dsql-bench-") as scratch:
        data_dir = Path(scratch)
        with spawn(
            latency_ms=LATENCY_MS,
            data_dir=data_dir,
            connections_per_second=1_000_000,
            connection_burst=1_000_000,
        ) as dsql:
            measured = asyncio.run(_measure(dsql, data_dir, args))
    report, chart = _report(measured, args)
    _, path = write_results(args.results, "retry_batch", report, _headlines(measured, chart))
    _chart(chart, args, path)
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
