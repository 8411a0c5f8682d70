"""What an IAM token and a new connection cost: ours against the alternatives.

Part 1, cost per token (no network: a token is a SigV4 presigned URL signed
locally), for four ways of minting a ``DbConnectAdmin`` token with the same
fixed test credentials and the emulator's endpoint:

* ours, synchronous: :class:`sqlalchemy_dsql.auth.TokenGenerator`, one reused
  boto3 client;
* ours, asynchronous: :class:`sqlalchemy_dsql.auth.AsyncTokenGenerator`, one
  reused aioboto3 client, timed around each ``await``;
* Amazon's ``aurora-dsql-python-connector``: every ``connect()`` of its
  asyncpg, psycopg and psycopg2 flavours goes through
  ``dsql_core.connection_utils.ConnectionUtilities.parse_properties_and_set_token``,
  which calls ``dsql_core.token_manager.TokenManager.get_token(dsql_params)``:
  a new ``boto3.Session()`` (credentials from the environment, which this
  script sets to the test key pair) and a new ``dsql`` client per token. We
  time that call, with the ``dsql_params`` its own ``parse_properties`` makes
  (parsed once, outside the timed region: that parsing takes microseconds);
* a new ``boto3.Session(...).client("dsql")`` per token, credentials passed
  explicitly.

The four run interleaved in rounds so that machine noise hits all alike, with
many samples for the cheap ones and fewer for the expensive ones. Before
timing, one token from each source opens a real connection through the
emulator (which checks the signature with botocore), and a token signed with a
wrong secret is refused, so every source measured makes accepted tokens.

Part 2, time to open one connection through the emulator (TLS verify-full,
token check, a backend session behind it): our engine against raw asyncpg
given a precomputed token.

* ours: ``await engine.connect()`` on a ``create_async_engine(dsql.url(),
  poolclass=NullPool)`` engine (``auroradsql+asyncpg``, credentials from the
  environment). With ``NullPool`` every ``connect()`` opens a
  new physical connection: the pool's checkout, our creator (a fresh token
  from the shared async generator, then ``asyncpg.connect``), the dialect's
  per-connection setup (asyncpg's json/jsonb codecs) and our retirement
  listeners. The engine's first connection, which also runs the dialect's
  one-time initialization, is a warm-up and not counted.
* raw: ``await asyncpg.connect(...)`` with the same host, port, user,
  database and a token minted beforehand, over a TLS context built like the
  engine's (``PROTOCOL_TLS_CLIENT``, CA file, ``CERT_REQUIRED``, host-name
  check against the DSQL endpoint while dialling 127.0.0.1), so both sides do
  the same TLS work.
* for reference, stock SQLAlchemy: ``create_async_engine("postgresql+asyncpg://",
  async_creator=<the raw connect above>, poolclass=NullPool)``. Its excess over
  raw asyncpg is what any SQLAlchemy asyncpg engine pays per new connection
  (pool checkout, two type introspection queries for the json/jsonb codecs);
  ours minus it is what this toolkit adds (the token, its listeners).

Closing each connection happens outside the timed region. The sides take turns
connection by connection, the order rotating every round. The overhead is our
median minus raw asyncpg's (the median of the paired differences, each of our
connections against the raw one opened in the same turn, is reported too).
The client runs on asyncio's own event loop; the emulator runs on its own loop
in a background thread of this process, with its connection-rate admission
limits raised so the benchmark never waits on them.

Writes ``token_connect.md``, ``token_connect.json`` and ``token_connect.png``
to ``--results`` (by default ``benchmarks/results/``).

Run by ``uv run nox -s bench``; alone::

    uv run --group bench python benchmarks/token_connect.py [--rounds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import ssl
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aioboto3
import asyncpg
import boto3
from _common import (
    Headline,
    command_line,
    machine,
    percentile,
    results_argument,
    tls_like_the_engine,
    use_test_credentials_from_environment,
    write_results,
)
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from sqlalchemy_dsql.auth import AsyncTokenGenerator, TokenGenerator, async_token_generator
from sqlalchemy_dsql.local import LocalDSQL
from sqlalchemy_dsql.local.tokens import TEST_ACCESS_KEY_ID, TEST_SECRET_ACCESS_KEY

TARGET_TOKEN_MS = 0.2
TARGET_CONNECT_OVERHEAD_MS = 1.0
USER = "admin"
DATABASE = "postgres"

OURS_SYNC = "ours: TokenGenerator (boto3, reused client)"
OURS_ASYNC = "ours: AsyncTokenGenerator (aioboto3, reused client)"
CONNECTOR = "aurora-dsql-python-connector: TokenManager.get_token"
NEW_CLIENT = "new boto3 Session + client per token"
ENGINE = "ours: create_async_engine(auroradsql+asyncpg URL), NullPool"
RAW = "raw asyncpg.connect, precomputed token"
STOCK = "reference: stock SQLAlchemy postgresql+asyncpg, NullPool, precomputed token"

CHART_LABELS = {
    OURS_SYNC: "ours\nTokenGenerator",
    OURS_ASYNC: "ours\nAsyncTokenGenerator",
    CONNECTOR: "Amazon's connector\nTokenManager.get_token",
    NEW_CLIENT: "new boto3 client\nper token",
    ENGINE: "ours\n(engine, NullPool)",
    RAW: "raw asyncpg\n(precomputed token)",
    STOCK: "stock SQLAlchemy\n(precomputed token)",
}


@dataclass
class Source:
    """One way of minting a token: exactly one of ``mint`` and ``amint`` is set."""

    name: str
    samples: int
    mint: Callable[[], str] | None = None
    amint: Callable[[], Awaitable[str]] | None = None
    timings: list[float] = field(default_factory=list)

    async def one(self) -> str:
        if self.mint is not None:
            return self.mint()
        assert self.amint is not None
        return await self.amint()

    async def run(self, count: int) -> None:
        clock = time.perf_counter_ns
        if self.mint is not None:
            mint = self.mint
            for _ in range(count):
                started = clock()
                mint()
                self.timings.append((clock() - started) / 1e6)
        else:
            assert self.amint is not None
            amint = self.amint
            for _ in range(count):
                started = clock()
                await amint()
                self.timings.append((clock() - started) / 1e6)


@dataclass
class Measured:
    tokens: dict[str, list[float]]
    connects: dict[str, list[float]]


def _paired_median(first: list[float], second: list[float]) -> float:
    return statistics.median(a - b for a, b in zip(first, second, strict=True))


def _share(total: int, rounds: int, index: int) -> int:
    """How many of ``total`` samples round ``index`` of ``rounds`` takes."""
    base, extra = divmod(total, rounds)
    return base + (1 if index < extra else 0)


def _boto3_session(secret: str = TEST_SECRET_ACCESS_KEY) -> boto3.Session:
    return boto3.Session(aws_access_key_id=TEST_ACCESS_KEY_ID, aws_secret_access_key=secret)


def _admin_token(session: boto3.Session, host: str, region: str) -> str:
    """A token from a new ``dsql`` client of ``session`` (the stubs lack the signer)."""
    client: Any = session.client("dsql", region_name=region)
    return str(client.generate_db_connect_admin_auth_token(host, region))


async def _accepted(dsql: LocalDSQL, context: ssl.SSLContext, token: str) -> bool:
    try:
        conn = await asyncpg.connect(
            host=dsql.host,
            port=dsql.port,
            user=USER,
            password=token,
            database=DATABASE,
            ssl=context,
        )
    except (asyncpg.PostgresError, OSError):
        return False
    try:
        return bool(await conn.fetchval("SELECT 1") == 1)
    finally:
        await conn.close()


async def _measure_tokens(
    dsql: LocalDSQL, context: ssl.SSLContext, rounds: int, cheap: int, expensive: int
) -> dict[str, list[float]]:
    from dsql_core.connection_properties import (  # type: ignore[import-untyped]
        ConnectionProperties,
    )
    from dsql_core.token_manager import TokenManager  # type: ignore[import-untyped]

    host, region = dsql.endpoint, dsql.region
    ours = TokenGenerator(region, session=_boto3_session())
    ours_async = AsyncTokenGenerator(
        region,
        session=aioboto3.Session(
            aws_access_key_id=TEST_ACCESS_KEY_ID, aws_secret_access_key=TEST_SECRET_ACCESS_KEY
        ),
    )
    # What the connector's connect(host=..., user=...) hands to TokenManager.get_token.
    dsql_params, _ = ConnectionProperties.parse_properties(None, {"host": host, "user": USER})

    def new_client() -> str:
        return _admin_token(_boto3_session(), host, region)

    def connector() -> str:
        return str(TokenManager.get_token(dsql_params))

    async def ours_awaited() -> str:
        return await ours_async.token(host, USER)

    sources = [
        Source(OURS_SYNC, cheap, mint=lambda: ours.token(host, USER)),
        Source(OURS_ASYNC, cheap, amint=ours_awaited),
        Source(CONNECTOR, expensive, mint=connector),
        Source(NEW_CLIENT, expensive, mint=new_client),
    ]
    try:
        # Warm-up (first client creation, imports) and the honesty check.
        for source in sources:
            await source.one()
            token = await source.one()
            if not await _accepted(dsql, context, token):
                raise SystemExit(f"the emulator refused a token from {source.name}")
        forged = _admin_token(_boto3_session(secret="not-the-test-secret"), host, region)
        if await _accepted(dsql, context, forged):
            raise SystemExit("the emulator accepted a badly signed token: it is not checking")
        for index in range(rounds):
            order = sources if index % 2 == 0 else sources[::-1]
            for source in order:
                await source.run(_share(source.samples, rounds, index))
    finally:
        await ours_async.close()
    return {source.name: source.timings for source in sources}


async def _measure_connects(
    dsql: LocalDSQL, context: ssl.SSLContext, rounds: int, connects: int, warmup: int
) -> dict[str, list[float]]:
    # The emulator's URL: the dialect signs with the test key pair in the environment.
    engine = create_async_engine(dsql.url(), poolclass=NullPool)
    password = dsql.token(USER)  # valid 15 minutes: longer than this part runs

    async def raw_connection() -> Any:
        return await asyncpg.connect(
            host=dsql.host,
            port=dsql.port,
            user=USER,
            password=password,
            database=DATABASE,
            ssl=context,
        )

    # Reference only: stock SQLAlchemy on asyncpg, same NullPool, the precomputed token.
    plain = create_async_engine(
        "postgresql+asyncpg://", async_creator=raw_connection, poolclass=NullPool
    )
    clock = time.perf_counter_ns

    async def ours() -> float:
        started = clock()
        conn = await engine.connect()
        elapsed = (clock() - started) / 1e6
        await conn.close()
        return elapsed

    async def stock() -> float:
        started = clock()
        conn = await plain.connect()
        elapsed = (clock() - started) / 1e6
        await conn.close()
        return elapsed

    async def raw() -> float:
        started = clock()
        conn = await raw_connection()
        elapsed = (clock() - started) / 1e6
        await conn.close()
        return elapsed

    sides = ((ENGINE, ours), (RAW, raw), (STOCK, stock))
    timings: dict[str, list[float]] = {name: [] for name, _ in sides}
    try:
        for _ in range(warmup):  # the first also runs the dialects' initialization
            for _, connect in sides:
                await connect()
        for index in range(rounds):
            order = sides[index % len(sides) :] + sides[: index % len(sides)]
            for _ in range(_share(connects, rounds, index)):
                for name, connect in order:
                    timings[name].append(await connect())
    finally:
        await engine.dispose()
        await plain.dispose()
        await async_token_generator(dsql.region).close()
    return timings


async def _measure(dsql: LocalDSQL, args: argparse.Namespace) -> Measured:
    context = tls_like_the_engine(dsql.ca_file, dsql.endpoint)
    tokens = await _measure_tokens(
        dsql, context, args.rounds, args.token_samples, args.slow_token_samples
    )
    connects = await _measure_connects(dsql, context, args.rounds, args.connects, args.warmup)
    return Measured(tokens, connects)


def _chart(
    tokens: list[tuple[str, int, float, float]],
    connects: list[tuple[str, int, float, float]],
    path: Path,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(
        1, 2, figsize=(13, 5), gridspec_kw={"width_ratios": [2, 1]}
    )
    for axis, rows, unit in ((left, tokens, "ms per token"), (right, connects, "ms per connect")):
        positions = list(range(len(rows)))
        medians = [row[2] for row in rows]
        p90s = [row[3] for row in rows]
        axis.bar([p - 0.2 for p in positions], medians, width=0.4, label="median")
        axis.bar([p + 0.2 for p in positions], p90s, width=0.4, label="p90")
        for p, value in zip(positions, medians, strict=True):
            axis.annotate(f"{value:.3g}", (p - 0.2, value), ha="center", va="bottom", fontsize=8)
        labels = [CHART_LABELS[row[0]] for row in rows]
        axis.set_xticks(positions, labels, fontsize=8)
        axis.set_ylabel(unit)
    left.set_yscale("log")
    left.set_ylim(bottom=min(TARGET_TOKEN_MS, *(row[2] for row in tokens)) / 3)
    left.axhline(TARGET_TOKEN_MS, color="grey", linestyle="--", linewidth=1)
    left.annotate(
        f"target {TARGET_TOKEN_MS} ms",
        (len(tokens) - 0.5, TARGET_TOKEN_MS),
        ha="right",
        va="bottom",
        fontsize=8,
        color="grey",
    )
    left.set_title("IAM token (DbConnectAdmin), log scale")
    right.set_title("open one connection through dsql-local")
    left.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def _verdict(met: bool) -> str:
    return "**met**" if met else "**MISSED**"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=20, help="interleaved rounds")
    parser.add_argument("--token-samples", type=int, default=3000, help="per cheap token source")
    parser.add_argument(
        "--slow-token-samples", type=int, default=200, help="per expensive token source"
    )
    parser.add_argument("--connects", type=int, default=600, help="connections per side")
    parser.add_argument("--warmup", type=int, default=10, help="untimed connections per side")
    results_argument(parser)
    args = parser.parse_args()
    if min(args.rounds, args.token_samples, args.slow_token_samples, args.connects) < 1:
        parser.error("--rounds and the sample counts must be at least 1")

    use_test_credentials_from_environment()
    with LocalDSQL(connections_per_second=1_000_000.0, connection_burst=1_000_000) as dsql:
        measured = asyncio.run(_measure(dsql, args))

    token_rows = [
        (name, len(s), statistics.median(s), percentile(s, 0.9))
        for name, s in measured.tokens.items()
    ]
    connect_rows = [
        (name, len(s), statistics.median(s), percentile(s, 0.9))
        for name, s in measured.connects.items()
    ]
    medians = {row[0]: row[2] for row in token_rows + connect_rows}
    ours_sync, ours_async = medians[OURS_SYNC], medians[OURS_ASYNC]
    overhead = medians[ENGINE] - medians[RAW]
    comparisons = [
        (
            f"**ours - raw asyncpg** (the overhead; target < {TARGET_CONNECT_OVERHEAD_MS} ms)",
            ENGINE,
            RAW,
        ),
        ("stock SQLAlchemy - raw asyncpg", STOCK, RAW),
        ("ours - stock SQLAlchemy", ENGINE, STOCK),
    ]
    connect_diffs = [
        (label, medians[a] - medians[b], _paired_median(measured.connects[a], measured.connects[b]))
        for label, a, b in comparisons
    ]
    tokens_met = max(ours_sync, ours_async) < TARGET_TOKEN_MS
    connect_met = overhead < TARGET_CONNECT_OVERHEAD_MS

    table = [
        "# IAM tokens and new connections: sqlalchemy-dsql against the alternatives",
        "",
        f"`{command_line('token_connect.py')}`",
        "",
        machine(
            [
                "sqlalchemy-dsql",
                "sqlalchemy",
                "asyncpg",
                "boto3",
                "botocore",
                "aioboto3",
                "aiobotocore",
                "aurora-dsql-python-connector",
            ]
        ),
        "",
        "Same fixed test credentials and the emulator's endpoint for every source; "
        f"{args.rounds} interleaved rounds. One token from each source was accepted by "
        "dsql-local (a real login, signature checked) and a badly signed one refused "
        "before timing.",
        "",
        "## Cost per token",
        "",
        "| source | samples | median ms | p90 ms | median vs ours (sync) |",
        "|---|---:|---:|---:|---:|",
        *(
            f"| {name} | {count} | {median:.4f} | {p90:.4f} | {median / ours_sync:.1f}x |"
            for name, count, median, p90 in token_rows
        ),
        "",
        f"Amazon's connector costs **{medians[CONNECTOR] / ours_sync:.0f}x** our synchronous "
        f"generator and **{medians[CONNECTOR] / ours_async:.0f}x** our asynchronous one per "
        f"token ({medians[CONNECTOR]:.1f} ms against {ours_sync:.3f} / {ours_async:.3f} ms); "
        f"a new boto3 client per token costs {medians[NEW_CLIENT] / ours_sync:.0f}x ours. "
        "The connector's call is synchronous, so in its asyncpg flavour it blocks the event "
        "loop for that time on every connect.",
        "",
        "## Opening one connection through dsql-local",
        "",
        "| path | samples | median ms | p90 ms |",
        "|---|---:|---:|---:|",
        *(
            f"| {name} | {count} | {median:.3f} | {p90:.3f} |"
            for name, count, median, p90 in connect_rows
        ),
        "",
        "| comparison, per new connection | difference of medians ms | median of paired "
        "differences ms |",
        "|---|---:|---:|",
        *(
            f"| {label} | {of_medians:.3f} | {paired:.3f} |"
            for label, of_medians, paired in connect_diffs
        ),
        "",
        "Paired differences: each connection against the one of the other side opened next to "
        "it in the same turn. The verdict below uses the difference of medians. Opening a "
        "connection through the emulator is noisy on this machine (the proxy and PostgreSQL "
        "share its CPUs with the client), so differences under a few tenths of a millisecond "
        "are within run-to-run noise.",
        "",
        "## Targets",
        "",
        f"- Our token under {TARGET_TOKEN_MS} ms median: {_verdict(tokens_met)} "
        f"(sync {ours_sync:.4f} ms, async {ours_async:.4f} ms).",
        f"- Our connect overhead over raw asyncpg under {TARGET_CONNECT_OVERHEAD_MS} ms: "
        f"{_verdict(connect_met)} ({overhead:.3f} ms).",
        "",
    ]
    headlines = [
        Headline(
            "IAM token, median ms: ours sync / ours async / Amazon's connector",
            f"{ours_sync:.4f} / {ours_async:.4f} / {medians[CONNECTOR]:.2f}",
        ),
        Headline(
            "our token cost",
            f"{max(ours_sync, ours_async):.4f} ms",
            f"< {TARGET_TOKEN_MS} ms",
            "met" if tokens_met else "missed",
        ),
        Headline(
            "new connection through dsql-local, median ms: ours / raw asyncpg",
            f"{medians[ENGINE]:.3f} / {medians[RAW]:.3f}",
        ),
        Headline(
            "our connect overhead over raw asyncpg",
            f"{overhead:.3f} ms",
            f"< {TARGET_CONNECT_OVERHEAD_MS} ms",
            "met" if connect_met else "missed",
        ),
    ]
    report = "\n".join(table)
    _, chart = write_results(args.results, "token_connect", report, headlines)
    _chart(token_rows, connect_rows, chart)
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
