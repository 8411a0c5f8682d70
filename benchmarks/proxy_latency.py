"""How much latency the dsql-local proxy adds per round trip.

Runs the same repeated prepared statement (asyncpg, ``SELECT $1::int``) against
the emulator's PostgreSQL directly (unix socket, no TLS) and through the proxy
(TLS, token auth done, every statement rule on), in one run, interleaving the
two so that machine noise hits both alike; once with the client on asyncio's
own event loop and once on uvloop. Writes a Markdown table and a PNG chart to
``benchmarks/results/``.

    uv run --group bench python benchmarks/proxy_latency.py [--rounds 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import statistics
import sys
import time
from pathlib import Path

import asyncpg

from sqlalchemy_dsql.local import LocalDSQL

RESULTS = Path(__file__).parent / "results"
TARGET_MS = 0.2


async def _round_trips(conn: asyncpg.Connection, rounds: int) -> list[float]:
    statement = await conn.prepare("SELECT $1::int")
    samples = []
    for i in range(rounds):
        started = time.perf_counter_ns()
        await statement.fetchval(i)
        samples.append((time.perf_counter_ns() - started) / 1e6)
    return samples


def _percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def _measure(dsql: LocalDSQL, rounds: int, batches: int) -> dict[str, list[float]]:
    direct = await asyncpg.connect(dsql.backend_url)
    proxied = await asyncpg.connect(**dsql.connect_kwargs())
    results: dict[str, list[float]] = {"direct": [], "proxy": []}
    try:
        await _round_trips(direct, 500)  # warm both paths
        await _round_trips(proxied, 500)
        for _ in range(batches):
            results["direct"] += await _round_trips(direct, rounds // batches)
            results["proxy"] += await _round_trips(proxied, rounds // batches)
    finally:
        await direct.close()
        await proxied.close()
    return results


def _chart(rows: list[tuple[str, float, float, float]], path: Path) -> None:
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


def main() -> int:
    import uvloop

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=20000)
    parser.add_argument("--batches", type=int, default=10)
    args = parser.parse_args()
    rows = []
    added = {}
    with LocalDSQL() as dsql:
        for loop_name, run in (("asyncio", asyncio.run), ("uvloop", uvloop.run)):
            results = run(_measure(dsql, args.rounds, args.batches))
            for name, label in (("direct", "backend directly"), ("proxy", "dsql-local")):
                samples = results[name]
                rows.append(
                    (
                        f"{label}, client on {loop_name}",
                        statistics.median(samples),
                        _percentile(samples, 0.99),
                        statistics.mean(samples),
                    )
                )
            added[loop_name] = rows[-1][1] - rows[-2][1]
    RESULTS.mkdir(exist_ok=True)
    table = [
        "# dsql-local: added latency per round trip",
        "",
        f"`uv run --group bench python benchmarks/proxy_latency.py --rounds {args.rounds}` on "
        f"{platform.machine()}, Python {sys.version.split()[0]}, {platform.system()}.",
        "",
        "Directly: the emulator's PostgreSQL over its unix socket, no TLS. dsql-local: the",
        "proxy over TCP with TLS (verify-full), every statement rule on.",
        "",
        "| path | median ms | p99 ms | mean ms |",
        "|---|---:|---:|---:|",
        *(f"| {r[0]} | {r[1]:.3f} | {r[2]:.3f} | {r[3]:.3f} |" for r in rows),
        "",
        *(
            f"Added median latency, client on {name}: **{value:.3f} ms** per round trip "
            f"(target < {TARGET_MS} ms: {'meets' if value < TARGET_MS else 'MISSES'})."
            for name, value in added.items()
        ),
        "",
    ]
    (RESULTS / "proxy_latency.md").write_text("\n".join(table))
    _chart(rows, RESULTS / "proxy_latency.png")
    print("\n".join(table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
