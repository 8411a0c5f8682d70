"""How much latency the dsql-local proxy adds per round trip.

Runs the same repeated prepared statement (asyncpg, ``SELECT $1::int``) against
the emulator's PostgreSQL directly (unix socket, no TLS) and through the proxy
(TLS, token auth done, every statement rule on), in one run, interleaving the
two batch by batch so that machine noise hits both alike; once with the client
on asyncio's own event loop and once on uvloop. Writes ``proxy_latency.md``,
``proxy_latency.json`` and ``proxy_latency.png`` to ``--results`` (by default
``benchmarks/results/``).

Run by ``uv run nox -s bench``; alone::

    uv run --group bench python benchmarks/proxy_latency.py [--rounds 20000] [--batches 10]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

import asyncpg
from _common import (
    Headline,
    command_line,
    machine,
    percentile,
    results_argument,
    spread,
    write_results,
)

from sqlalchemy_dsql.local import LocalDSQL

TARGET_MS = 0.2
PATHS = (("direct", "backend directly"), ("proxy", "dsql-local"))


async def _round_trips(conn: asyncpg.Connection, rounds: int) -> list[float]:
    statement = await conn.prepare("SELECT $1::int")
    samples = []
    for i in range(rounds):
        started = time.perf_counter_ns()
        await statement.fetchval(i)
        samples.append((time.perf_counter_ns() - started) / 1e6)
    return samples


async def _measure(dsql: LocalDSQL, rounds: int, batches: int) -> dict[str, list[list[float]]]:
    """Per path, the samples of each batch."""
    direct = await asyncpg.connect(dsql.backend_url)
    proxied = await asyncpg.connect(**dsql.connect_kwargs())
    results: dict[str, list[list[float]]] = {"direct": [], "proxy": []}
    try:
        await _round_trips(direct, 500)  # warm both paths
        await _round_trips(proxied, 500)
        for _ in range(batches):
            results["direct"].append(await _round_trips(direct, rounds // batches))
            results["proxy"].append(await _round_trips(proxied, rounds // batches))
    finally:
        await direct.close()
        await proxied.close()
    return results


def _chart(rows: list[tuple[str, float, float, float, str]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [row[0].replace(", ", ",\n") for row in rows]
    figure, axis = plt.subplots(figsize=(9, 4))
    positions = range(len(rows))
    axis.bar([p - 0.2 for p in positions], [r[1] for r in rows], width=0.4, label="median")
    axis.bar([p + 0.2 for p in positions], [r[2] for r in rows], width=0.4, label="p99")
    axis.set_xticks(list(positions), labels)
    axis.set_ylabel("ms per round trip")
    axis.set_title("SELECT $1::int, prepared, asyncpg: direct vs through dsql-local")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main() -> int:
    import uvloop

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=20000, help="round trips per path")
    parser.add_argument("--batches", type=int, default=10, help="interleaved batches")
    results_argument(parser)
    args = parser.parse_args()
    if not 1 <= args.batches <= args.rounds:
        parser.error("--batches must be at least 1 and at most --rounds")
    rows = []
    added = {}
    with LocalDSQL() as dsql:
        for loop_name, run in (("asyncio", asyncio.run), ("uvloop", uvloop.run)):
            results = run(_measure(dsql, args.rounds, args.batches))
            for name, label in PATHS:
                samples = [s for batch in results[name] for s in batch]
                rows.append(
                    (
                        f"{label}, client on {loop_name}",
                        statistics.median(samples),
                        percentile(samples, 0.99),
                        statistics.mean(samples),
                        spread([statistics.median(batch) for batch in results[name]], 3),
                    )
                )
            added[loop_name] = rows[-1][1] - rows[-2][1]
    verdicts = {name: "met" if value < TARGET_MS else "missed" for name, value in added.items()}
    headlines = [
        Headline(
            f"dsql-local added latency per round trip, client on {name}",
            f"{value:.3f} ms",
            f"< {TARGET_MS} ms",
            verdicts[name],
        )
        for name, value in added.items()
    ]
    table = [
        "# dsql-local: added latency per round trip",
        "",
        f"`{command_line('proxy_latency.py')}`",
        "",
        machine(["sqlalchemy-dsql", "asyncpg", "uvloop"]),
        "",
        "Directly: the emulator's PostgreSQL over its unix socket, no TLS. dsql-local: the",
        "proxy over TCP with TLS (verify-full), every statement rule on. "
        f"{args.rounds // args.batches * args.batches} round trips per path and event loop, in "
        f"{args.batches} batches alternating between the two paths. Median, p99 and mean over "
        "every round trip; the last column is the median of the batches' medians, with their "
        "range.",
        "",
        "| path | median ms | p99 ms | mean ms | median of batch medians (range) ms |",
        "|---|---:|---:|---:|---:|",
        *(f"| {r[0]} | {r[1]:.3f} | {r[2]:.3f} | {r[3]:.3f} | {r[4]} |" for r in rows),
        "",
        *(
            f"Added median latency, client on {name}: **{value:.3f} ms** per round trip "
            f"(target < {TARGET_MS} ms: {verdicts[name]})."
            for name, value in added.items()
        ),
        "",
    ]
    report = "\n".join(table)
    _, chart = write_results(args.results, "proxy_latency", report, headlines)
    _chart(rows, chart)
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
