"""Write and delete many rows within Aurora DSQL's per-transaction limits.

One DSQL transaction may change at most 3,000 rows and 10 MiB of data, and
DSQL has no ``TRUNCATE``. The helpers here split the work into batches, run
each batch in its own transaction through
:func:`~sqlalchemy_dsql.retry.run_transaction` (so an optimistic-concurrency
conflict retries that batch only) and run up to ``concurrency`` batches at
once (8 by default; lowered, with a logged warning, to the connections the
engine's pool may open, ``pool_size + max_overflow``, since more would only
wait for a connection)::

    from sqlalchemy_dsql import batch

    report = await batch.insert(engine, items, rows, batch_size=1000)
    report = await batch.upsert(engine, items, rows)            # key: the primary key
    report = await batch.delete(engine, items, items.c.owner == 7)
    report = await batch.delete(engine, items)                  # TRUNCATE's replacement
    print(report.rows, report.batches, report.retries, report.elapsed)

:func:`insert` and :func:`upsert` take a list, any iterable or an async
iterable of mappings (column name to value). The input is read in order and
cut into batches of ``batch_size`` rows (1 to 3,000; default 1,000, which
leaves room for secondary indexes and the 10 MiB limit). A batch whose rows'
estimated size (``len(repr(row))`` summed) passes ``max_batch_bytes``
(default 4 MiB; ``None`` turns the guard off) is cut into smaller ones.
Each batch is executed as ``conn.execute(table.insert(), rows)``, which the
``auroradsql`` dialects send as multi-row ``INSERT ... VALUES`` statements of
up to 1,000 rows whose SQL is compiled once and cached. Rows with different
sets of keys may be mixed: each run of rows with the same keys is its own
statement, and a missing key means the column's default. A key that is not
a column of the table, or a row that is not a mapping, fails its batch with
:class:`~sqlalchemy_dsql.errors.ConfigurationError` (SQLAlchemy would leave
an unknown key out silently); a single mapping or a string instead of an
iterable of rows is refused before anything runs.

:func:`upsert` uses ``INSERT ... ON CONFLICT (key) DO UPDATE SET col =
excluded.col``; ``key`` defaults to the primary key columns and ``update`` to
every other column given in the rows (``update=()`` means ``DO NOTHING``).
Keys should be unique in the input: PostgreSQL refuses a key twice in one
statement (SQLSTATE 21000), and with ``concurrency > 1`` two batches holding
the same key are written in no fixed order.

:func:`delete` deletes the rows matching ``where`` (all rows when ``None``)
``batch_size`` at a time, each batch ``DELETE FROM t WHERE pk IN (SELECT pk
FROM t WHERE ... LIMIT n)`` in its own transaction, until a batch finds fewer
than ``batch_size`` rows. Delete batches run one after another: parallel
deleters would all pick the same first ``n`` matching rows, and all but one
would fail with an OCC conflict on every round, so concurrency would only
add retries. The table needs a primary key.

**Report and progress.** Every helper returns a :class:`BatchReport`: rows
written, batches committed, OCC retries, elapsed seconds and the committed
row ranges. ``progress`` may be a callable, called with a :class:`Progress`
after each committed batch (an exception it raises is logged and ignored);
``True`` draws a one-line progress bar on stderr; ``None`` (the default)
draws it only when stderr is a terminal; ``False`` turns it off.

**Failure.** A batch that fails with an error that is not retried (a
constraint violation, a limit, bad data) or whose retries run out stops the
run: no new batch starts, the batches already running finish, then
:class:`~sqlalchemy_dsql.errors.BatchFailed` (also importable from here) is
raised with an exact account: ``committed`` (the half-open ``(start, end)``
row index ranges, 0-based in input order, that are in the database),
``failed`` (the failing batch's range; its error is ``error`` and the
``__cause__``), ``failures`` (a :class:`FailedRange` for every batch that
failed, if several running ones did), ``not_attempted`` (ranges never sent;
the end is ``None`` when the input has no length and was not read further)
and ``report``. Nothing is skipped silently: every input row is in exactly
one of those ranges. For :func:`delete` the ranges count deleted rows in the
order they were deleted, and rows still matching ``where`` stay in the
table: run the delete again.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import sys
import time
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
    Sized,
)
from dataclasses import dataclass
from typing import Any, TextIO

from sqlalchemy import ColumnElement, Table, select, tuple_
from sqlalchemy import delete as sa_delete
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.orm import Mapper
from sqlalchemy.pool import QueuePool

from .errors import BatchFailed, BatchReport, ConfigurationError, FailedRange, Range
from .retry import RetryPolicy, RetryStats, run_transaction

__all__ = [
    "MAX_BATCH_SIZE",
    "BatchFailed",
    "BatchReport",
    "FailedRange",
    "Progress",
    "delete",
    "insert",
    "upsert",
]

_log = logging.getLogger("sqlalchemy_dsql.batch")

MAX_BATCH_SIZE = 3000
"""DSQL's limit of rows changed by one transaction."""

DEFAULT_MAX_BATCH_BYTES = 4 * 1024 * 1024

Row = Mapping[str, Any]
ProgressOption = Callable[["Progress"], object] | bool | None


@dataclass(frozen=True, slots=True)
class Progress:
    """Where a run is, passed to ``progress`` after each committed batch.

    ``batches_total`` is ``None`` when the input has no length (and for
    :func:`delete`); when ``max_batch_bytes`` cuts batches early it is an
    estimate that grows as they are cut.
    """

    rows_done: int
    batches_done: int
    batches_total: int | None
    elapsed: float


def _within_pool(engine: AsyncEngine, concurrency: int, operation: str) -> int:
    """``concurrency``, lowered to the connections the engine's pool may open at once.

    More batches than connections would only queue for one, and a queued batch
    gives up with PoolTimeout after ``pool_timeout`` while the others run.
    """
    pool = engine.sync_engine.pool
    if not isinstance(pool, QueuePool) or pool._max_overflow < 0 or pool.size() == 0:
        return concurrency  # not a queue pool, or one without a limit
    capacity = pool.size() + pool._max_overflow
    if concurrency <= capacity:
        return concurrency
    _log.warning(
        "%s: running %d batches at once instead of concurrency=%d, the most this engine's "
        "pool can serve (pool_size=%d, max_overflow=%d); pass concurrency=%d or less, or make "
        "the engine with pool_size=%d (see 'Sizing a pool' in the engine guide)",
        operation,
        capacity,
        concurrency,
        pool.size(),
        pool._max_overflow,
        capacity,
        concurrency,
    )
    return capacity


def _validate(batch_size: int, concurrency: int, max_batch_bytes: int | None) -> None:
    if not isinstance(batch_size, int) or not 1 <= batch_size <= MAX_BATCH_SIZE:
        raise ConfigurationError(
            f"batch_size must be between 1 and {MAX_BATCH_SIZE} (DSQL changes at most "
            f"{MAX_BATCH_SIZE} rows per transaction, including index rows), got {batch_size!r}"
        )
    if not isinstance(concurrency, int) or concurrency < 1:
        raise ConfigurationError(f"concurrency must be at least 1, got {concurrency!r}")
    if max_batch_bytes is not None and max_batch_bytes < 1:
        raise ConfigurationError(
            f"max_batch_bytes must be positive (or None for no limit), got {max_batch_bytes!r}"
        )


def _merge(ranges: Iterable[Range]) -> list[Range]:
    merged: list[Range] = []
    for start, end in sorted(ranges):
        if merged and merged[-1][1] == start:
            merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return merged


def _describe(ranges: Sequence[tuple[int, int | None]]) -> str:
    if not ranges:
        return "none"
    return ", ".join(f"[{s}, {'end of input' if e is None else e})" for s, e in ranges)


def _cut_by_size(rows: list[Row], max_bytes: int | None) -> Iterator[list[Row]]:
    """``rows`` as one batch, or cut where their estimated size would pass ``max_bytes``."""
    if max_bytes is None:
        yield rows
        return
    sizes = list(map(len, map(repr, rows)))
    if sum(sizes) <= max_bytes:
        yield rows
        return
    start, size = 0, 0
    for index, row_size in enumerate(sizes):
        if index > start and size + row_size > max_bytes:
            yield rows[start:index]
            start, size = index, 0
        size += row_size
    yield rows[start:]


async def _read(
    rows: Iterable[Row] | AsyncIterable[Row], count: int
) -> AsyncGenerator[list[Row], None]:
    """``rows`` in lists of ``count`` (the last may be shorter)."""
    if not isinstance(rows, AsyncIterable):
        source = iter(rows)
        while taken := list(itertools.islice(source, count)):
            yield taken
        return
    taken = []
    async for row in rows:
        taken.append(row)
        if len(taken) == count:
            yield taken
            taken = []
    if taken:
        yield taken


async def _chunks(
    rows: Iterable[Row] | AsyncIterable[Row], batch_size: int, max_bytes: int | None
) -> AsyncGenerator[tuple[int, list[Row]], None]:
    """``(start index, rows)`` batches, in input order."""
    start = 0
    pages = _read(rows, batch_size)
    try:
        async for page in pages:
            for chunk in _cut_by_size(page, max_bytes):
                yield start, chunk
                start += len(chunk)
    finally:
        await pages.aclose()


class _Bar:
    """A one-line progress bar on a terminal, redrawn with ``\\r``."""

    def __init__(self, operation: str, total_rows: int | None, stream: TextIO) -> None:
        self.operation = operation
        self.total_rows = total_rows
        self.stream = stream
        self.drawn = False

    def __call__(self, p: Progress) -> None:
        if self.total_rows:
            fraction = min(1.0, p.rows_done / self.total_rows)
            filled = int(fraction * 30)
            line = (
                f"\r{self.operation} [{'#' * filled}{'.' * (30 - filled)}] {fraction:4.0%} "
                f"{p.rows_done:,}/{self.total_rows:,} rows, {p.batches_done} batches, "
                f"{p.elapsed:.1f} s"
            )
        else:
            line = (
                f"\r{self.operation}: {p.rows_done:,} rows, {p.batches_done} batches, "
                f"{p.elapsed:.1f} s"
            )
        self.stream.write(line)
        self.stream.flush()
        self.drawn = True

    def close(self) -> None:
        if self.drawn:
            self.stream.write("\n")
            self.stream.flush()


def _progress_sink(
    progress: ProgressOption, operation: str, total_rows: int | None
) -> tuple[Callable[[Progress], object] | None, _Bar | None]:
    if callable(progress):
        return progress, None
    if progress is True or (progress is None and sys.stderr.isatty()):
        bar = _Bar(operation, total_rows, sys.stderr)
        return bar, bar
    return None, None


class _Run:
    """The bookkeeping of one run: counters, ranges, progress."""

    def __init__(
        self,
        operation: str,
        progress: ProgressOption,
        total_rows: int | None,
        batch_size: int,
    ) -> None:
        self.report = BatchReport(operation)
        self.stats = RetryStats()
        self.started = time.monotonic()
        self.total_rows = total_rows
        self.batch_size = batch_size
        self.committed: list[Range] = []
        self.callback, self.bar = _progress_sink(progress, operation, total_rows)

    def batches_total(self, next_start: int, batches_started: int) -> int | None:
        if self.total_rows is None:
            return None
        remaining = max(0, self.total_rows - next_start)
        return batches_started + math.ceil(remaining / self.batch_size)

    def commit(self, span: Range, rows: int, batches_total: int | None) -> None:
        if span[1] > span[0]:
            self.committed.append(span)
        self.report.rows += rows
        self.report.batches += 1
        if self.callback is not None:
            p = Progress(
                self.report.rows,
                self.report.batches,
                batches_total,
                time.monotonic() - self.started,
            )
            try:
                self.callback(p)
            except Exception:
                _log.exception("the progress callback raised; the run goes on")

    def finish(self) -> BatchReport:
        if self.bar is not None:
            self.bar.close()
        report = self.report
        report.committed = _merge(self.committed)
        report.failures.sort(key=lambda f: f.range)
        report.retries = self.stats.retries
        report.elapsed = time.monotonic() - self.started
        if report.failures:
            first = report.failures[0]
            error_text = str(first.error).strip().splitlines()
            others = (
                f"; {len(report.failures) - 1} more batch(es) failed: "
                + _describe([f.range for f in report.failures[1:]])
                if len(report.failures) > 1
                else ""
            )
            raise BatchFailed(
                f"{report.operation} stopped: the batch of rows [{first.range[0]}, "
                f"{first.range[1]}) failed with {type(first.error).__name__}: "
                f"{error_text[0] if error_text else ''}{others}. "
                f"Committed ({report.rows} rows in {report.batches} batches): "
                f"{_describe(report.committed)}; not attempted: "
                f"{_describe(report.not_attempted)}. {_next_step(report.operation)}",
                report=report,
            ) from first.error
        return report


def _next_step(operation: str) -> str:
    if operation.startswith("delete"):
        return "Once the cause is fixed, run the delete again: it deletes what still matches."
    return (
        "Once the cause is fixed, write the rows of the failed and not-attempted ranges "
        "again; the committed ranges are in the database."
    )


async def _write_all(
    engine: AsyncEngine,
    rows: Iterable[Row] | AsyncIterable[Row],
    write: Callable[[AsyncConnection, list[Row]], Awaitable[None]],
    *,
    operation: str,
    batch_size: int,
    concurrency: int,
    max_batch_bytes: int | None,
    policy: RetryPolicy | None,
    progress: ProgressOption,
) -> BatchReport:
    _validate(batch_size, concurrency, max_batch_bytes)
    _check_input(rows)
    concurrency = _within_pool(engine, concurrency, operation)
    total_rows = len(rows) if isinstance(rows, Sized) else None
    run = _Run(operation, progress, total_rows, batch_size)
    gate = asyncio.Semaphore(concurrency)
    running: set[asyncio.Task[None]] = set()
    started = 0
    next_start = 0

    async def one(start: int, chunk: list[Row], batches_total: int | None) -> None:
        span = (start, start + len(chunk))

        async def body(conn: AsyncConnection) -> None:
            await write(conn, chunk)

        body.__qualname__ = f"batch.{operation}[{span[0]}:{span[1]}]"
        try:
            await run_transaction(engine, body, policy=policy, stats=run.stats)
        except Exception as error:
            run.report.failures.append(FailedRange(span, error))
        else:
            run.commit(span, len(chunk), batches_total)
        finally:
            gate.release()

    chunks = _chunks(rows, batch_size, max_batch_bytes)
    try:
        async for start, chunk in chunks:
            await gate.acquire()
            if run.report.failures:
                gate.release()
                run.report.not_attempted.append((start, total_rows))
                break
            started += 1
            next_start = start + len(chunk)
            task = asyncio.create_task(one(start, chunk, run.batches_total(next_start, started)))
            running.add(task)
            task.add_done_callback(running.discard)
        await asyncio.gather(*running)
    except asyncio.CancelledError:
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
        raise
    except Exception as error:  # reading the input failed
        await asyncio.gather(*running, return_exceptions=True)
        run.report.failures.append(FailedRange((next_start, next_start), error))
        run.report.not_attempted.append((next_start, total_rows))
    finally:
        await chunks.aclose()
    return run.finish()


def _check_input(rows: object) -> None:
    """Refuse what cannot be rows before any batch runs."""
    if isinstance(rows, Mapping):
        raise ConfigurationError(
            "rows is a single mapping; pass an iterable of rows, one mapping of column names "
            "to values per row (for one row: [row])"
        )
    if isinstance(rows, (str, bytes)) or not isinstance(rows, (Iterable, AsyncIterable)):
        raise ConfigurationError(
            f"rows must be an iterable or async iterable of mappings of column names to "
            f"values (dicts), one per row; got {type(rows).__name__}"
        )


def _runs_by_keys(table: Table, chunk: list[Row]) -> Iterable[list[Row]]:
    """Consecutive rows with the same keys: one executemany each (it compiles the first row's).

    Each run's keys must be columns of ``table``: SQLAlchemy would silently leave
    any other key out, and a misspelt column's values would be lost.
    """
    try:
        first = chunk[0].keys()
        same = all(row.keys() == first for row in chunk)
    except AttributeError:
        wrong = next(row for row in chunk if not isinstance(row, Mapping))
        raise ConfigurationError(
            f"each row must be a mapping of column names to values (a dict), not a "
            f"{type(wrong).__name__}; for tuples, build dicts with dict(zip(names, values))"
        ) from None
    runs = [chunk] if same else [list(run) for _, run in itertools.groupby(chunk, key=frozenset)]
    for run in runs:
        unknown = sorted(str(k) for k in run[0] if not (isinstance(k, str) and k in table.c))
        if unknown:
            raise ConfigurationError(
                f"rows name columns {table.name} does not have: {unknown}; fix or drop those "
                f"keys (SQLAlchemy would leave them out silently)"
            )
        yield run


def _table(target: Table | type[Any], operation: str) -> Table:
    """The table to write: ``target`` itself, or the table a mapped class is mapped to."""
    if isinstance(target, Table):
        return target
    mapper = sa_inspect(target, raiseerr=False)
    table = getattr(mapper, "local_table", None)
    if isinstance(mapper, Mapper) and isinstance(table, Table):
        return table
    raise ConfigurationError(
        f"batch.{operation} takes a Table or a mapped class (as sqlalchemy.insert() does), "
        f"not {target!r}; pass the model class or its table (Book or Book.__table__)"
    )


def _column_names(table: Table, names: Sequence[str] | None, what: str) -> list[str]:
    if names is None:
        return []
    unknown = [n for n in names if n not in table.c]
    if unknown:
        raise ConfigurationError(f"{what} names columns {table.name} does not have: {unknown}")
    return list(names)


async def insert(
    engine: AsyncEngine,
    target: Table | type[Any],
    rows: Iterable[Row] | AsyncIterable[Row],
    *,
    batch_size: int = 1000,
    concurrency: int = 8,
    max_batch_bytes: int | None = DEFAULT_MAX_BATCH_BYTES,
    policy: RetryPolicy | None = None,
    progress: ProgressOption = None,
) -> BatchReport:
    """Insert ``rows`` into ``table``, ``batch_size`` rows per transaction.

    ``target`` is a ``Table`` or a mapped class. Raises :class:`BatchFailed`
    when a batch fails; see the module documentation.
    """
    table = _table(target, "insert")

    async def write(conn: AsyncConnection, chunk: list[Row]) -> None:
        for group in _runs_by_keys(table, chunk):
            await conn.execute(table.insert(), group)

    return await _write_all(
        engine,
        rows,
        write,
        operation=f"insert into {table.name}",
        batch_size=batch_size,
        concurrency=concurrency,
        max_batch_bytes=max_batch_bytes,
        policy=policy,
        progress=progress,
    )


async def upsert(
    engine: AsyncEngine,
    target: Table | type[Any],
    rows: Iterable[Row] | AsyncIterable[Row],
    *,
    key: Sequence[str] | None = None,
    update: Sequence[str] | None = None,
    batch_size: int = 1000,
    concurrency: int = 8,
    max_batch_bytes: int | None = DEFAULT_MAX_BATCH_BYTES,
    policy: RetryPolicy | None = None,
    progress: ProgressOption = None,
) -> BatchReport:
    """Insert ``rows``, updating the rows whose ``key`` already exists.

    ``key`` defaults to the primary key; ``update`` to every non-key column
    present in each statement's rows; ``update=()`` leaves existing rows alone.
    ``target`` is a ``Table`` or a mapped class.
    """
    table = _table(target, "upsert")
    key_names = _column_names(table, key, "key") or [c.name for c in table.primary_key.columns]
    if not key_names:
        raise ConfigurationError(
            f"upsert into {table.name} needs key=[...]: the table has no primary key"
        )
    update_names = None if update is None else _column_names(table, update, "update")

    async def write(conn: AsyncConnection, chunk: list[Row]) -> None:
        for group in _runs_by_keys(table, chunk):
            stmt = pg_insert(table)
            columns = (
                [n for n in group[0] if n not in key_names]
                if update_names is None
                else update_names
            )
            if columns:
                stmt = stmt.on_conflict_do_update(
                    index_elements=key_names,
                    set_={name: stmt.excluded[name] for name in columns},
                )
            else:
                stmt = stmt.on_conflict_do_nothing(index_elements=key_names)
            await conn.execute(stmt, group)

    return await _write_all(
        engine,
        rows,
        write,
        operation=f"upsert into {table.name}",
        batch_size=batch_size,
        concurrency=concurrency,
        max_batch_bytes=max_batch_bytes,
        policy=policy,
        progress=progress,
    )


async def delete(
    engine: AsyncEngine,
    target: Table | type[Any],
    where: ColumnElement[bool] | None = None,
    *,
    batch_size: int = 1000,
    policy: RetryPolicy | None = None,
    progress: ProgressOption = None,
) -> BatchReport:
    """Delete the rows of ``table`` matching ``where`` (all when ``None``), in batches.

    The replacement for ``TRUNCATE``. Batches run one after another (parallel
    deleters would pick the same rows and only conflict). ``report.batches``
    counts every committed delete transaction, including the last one that
    found fewer than ``batch_size`` rows, so an empty match gives ``rows=0``
    and ``batches=1``. ``target`` is a ``Table`` or a mapped class.
    """
    table = _table(target, "delete")
    _validate(batch_size, 1, None)
    pk = list(table.primary_key.columns)
    if not pk:
        raise ConfigurationError(
            f"batch.delete needs a primary key to delete {table.name} in batches; it has none"
        )
    picked = select(*pk)
    if where is not None:
        picked = picked.where(where)
    picked = picked.limit(batch_size)
    key = pk[0] if len(pk) == 1 else tuple_(*pk)
    stmt = sa_delete(table).where(key.in_(picked.scalar_subquery() if len(pk) == 1 else picked))
    operation = f"delete from {table.name}"
    run = _Run(operation, progress, None, batch_size)

    async def body(conn: AsyncConnection) -> int:
        result = await conn.execute(stmt)
        return int(result.rowcount)

    body.__qualname__ = f"batch.{operation}"
    while True:
        done = run.report.rows
        try:
            deleted = await run_transaction(engine, body, policy=policy, stats=run.stats)
        except Exception as error:
            run.report.failures.append(FailedRange((done, done + batch_size), error))
            break
        run.commit((done, done + deleted), deleted, None)
        if deleted < batch_size:
            break
    return run.finish()
