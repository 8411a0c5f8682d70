"""sqlalchemy_dsql.batch through the emulator, which enforces 3,000 rows per transaction."""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import DeclarativeBase

from harness.engine import async_engine
from sqlalchemy_dsql import RetryPolicy, batch
from sqlalchemy_dsql.batch import FailedRange, Progress
from sqlalchemy_dsql.errors import BatchFailed, ConfigurationError
from sqlalchemy_dsql.local import LocalDSQL

pytestmark = pytest.mark.integration

OC000 = "change conflicts with another transaction (OC000)"
FAST = RetryPolicy(base_delay=0.001, max_delay=0.01)

metadata = MetaData()
items = Table(
    "batch_items",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("owner", Integer, nullable=False),
    Column("name", String(40)),
)
CREATE = "CREATE TABLE batch_items (id int PRIMARY KEY, owner int NOT NULL, name varchar(40))"


@pytest.fixture(scope="module")
async def engine(dsql: LocalDSQL) -> AsyncIterator[AsyncEngine]:
    made = async_engine(dsql, pool_size=10, max_overflow=0)
    async with made.begin() as conn:
        await conn.execute(text("DROP TABLE IF EXISTS batch_items"))
    async with made.begin() as conn:
        await conn.execute(text(CREATE))
    yield made
    async with made.begin() as conn:
        await conn.execute(text("DROP TABLE batch_items"))
    await made.dispose()


@pytest.fixture
async def table(engine: AsyncEngine) -> Table:
    await batch.delete(engine, items, batch_size=3000, progress=False)
    return items


def _rows(n: int, start: int = 0) -> Iterator[dict[str, Any]]:
    for i in range(start, start + n):
        yield {"id": i, "owner": i % 10, "name": f"item {i}"}


async def _count_and_sum(engine: AsyncEngine) -> tuple[int, int]:
    async with engine.connect() as conn:
        query = select(func.count(), func.coalesce(func.sum(items.c.id), 0))
        row = (await conn.execute(query)).one()
        return int(row[0]), int(row[1])


async def test_100k_rows_in_batches_under_the_row_limit(engine: AsyncEngine, table: Table) -> None:
    seen: list[Progress] = []
    rows = list(_rows(100_000))
    started = time.monotonic()
    report = await batch.insert(
        engine, table, rows, batch_size=2000, concurrency=8, progress=seen.append
    )
    elapsed = time.monotonic() - started
    print(f"100,000 rows inserted in {elapsed:.2f} s ({report})")
    assert report.rows == 100_000
    assert report.batches == math.ceil(100_000 / 2000)
    assert report.committed == [(0, 100_000)]
    assert report.not_attempted == []
    assert await _count_and_sum(engine) == (100_000, sum(range(100_000)))
    done = [p.rows_done for p in seen]
    assert done == sorted(done)
    assert len(set(done)) == len(done)
    assert done[-1] == 100_000
    assert seen[-1].batches_done == 50
    assert {p.batches_total for p in seen} == {50}
    assert elapsed < 60


async def test_a_transaction_over_the_limit_is_what_the_emulator_refuses(
    engine: AsyncEngine, table: Table
) -> None:
    # The guard the 100k test relies on: 3,001 rows in one transaction fail.
    with pytest.raises(Exception, match="row limit") as caught:
        async with engine.begin() as conn:
            await conn.execute(items.insert().values(list(_rows(3001))))
    assert caught.value.orig.sqlstate == "54000"  # type: ignore[attr-defined]
    assert await _count_and_sum(engine) == (0, 0)


@pytest.mark.parametrize("size", [0, -1, 3001, 10_000])
async def test_batch_size_outside_the_limit_is_refused(
    engine: AsyncEngine, table: Table, size: int
) -> None:
    with pytest.raises(ConfigurationError, match="batch_size must be between 1 and 3000"):
        await batch.insert(engine, table, _rows(10), batch_size=size)
    with pytest.raises(ConfigurationError, match="batch_size"):
        await batch.delete(engine, table, batch_size=size)
    with pytest.raises(ConfigurationError, match="concurrency"):
        await batch.upsert(engine, table, _rows(10), concurrency=0)
    assert await _count_and_sum(engine) == (0, 0)


async def test_a_failing_batch_stops_the_run_with_an_exact_account(
    engine: AsyncEngine, table: Table
) -> None:
    rows = list(_rows(20_000))
    rows[10_500] = {"id": 10_500, "owner": None, "name": "breaks NOT NULL"}
    with pytest.raises(BatchFailed) as caught:
        await batch.insert(engine, table, rows, batch_size=1000, concurrency=4, progress=False)
    failed = caught.value
    print(failed)
    assert failed.failed == (10_000, 11_000)
    assert "23502" in repr(failed.__cause__) or "null value" in str(failed.__cause__)
    assert failed.error is failed.__cause__
    assert batch.BatchFailed is BatchFailed  # still importable where it used to be
    assert failed.failures[0] == FailedRange((10_000, 11_000), failed.error)
    # Every row is in exactly one of the ranges: committed, failed, not attempted.
    spans = [*failed.committed, failed.failed, *failed.not_attempted]
    covered = sorted((s, 20_000 if e is None else e) for s, e in spans)
    assert covered[0][0] == 0
    assert covered[-1][1] == 20_000
    assert all(a[1] == b[0] for a, b in itertools.pairwise(covered))
    assert failed.not_attempted  # the run stopped before the end
    committed_rows = sum(e - s for s, e in failed.committed)
    assert failed.rows == committed_rows == failed.report.rows
    # The table holds exactly the committed ranges.
    count, total = await _count_and_sum(engine)
    assert count == committed_rows
    assert total == sum(sum(range(s, e)) for s, e in failed.committed)
    assert "[10000, 11000) failed" in str(failed)


async def test_a_unique_violation_mid_stream_from_a_generator(
    engine: AsyncEngine, table: Table
) -> None:
    await batch.insert(engine, table, _rows(1, start=2500), progress=False)

    with pytest.raises(BatchFailed) as caught:
        await batch.insert(engine, table, _rows(6000), batch_size=500, concurrency=1)
    failed = caught.value
    assert failed.failed == (2500, 3000)
    assert failed.committed == [(0, 2500)]
    assert failed.not_attempted == [(3000, None)]  # a generator: not read further
    assert await _count_and_sum(engine) == (2501, sum(range(2501)))


async def test_conflicts_are_retried_per_batch(
    dsql: LocalDSQL, engine: AsyncEngine, table: Table
) -> None:
    dsql.fail_next_commits("40001", OC000, times=2)
    report = await batch.insert(
        engine, table, list(_rows(5000)), batch_size=1000, concurrency=1, policy=FAST
    )
    assert report.retries == 2
    assert report.batches == 5
    assert await _count_and_sum(engine) == (5000, sum(range(5000)))


async def test_async_iterable_and_byte_guard(engine: AsyncEngine, table: Table) -> None:
    async def source() -> AsyncIterator[dict[str, Any]]:
        for row in _rows(3000):
            yield row

    # Each row's repr is about 45 bytes: 4,500 bytes cuts batches at about 100 rows.
    report = await batch.insert(
        engine, table, source(), batch_size=1000, max_batch_bytes=4500, progress=False
    )
    assert report.rows == 3000
    assert 25 <= report.batches <= 40
    assert report.committed == [(0, 3000)]
    assert await _count_and_sum(engine) == (3000, sum(range(3000)))


async def test_rows_with_different_keys_in_one_batch(engine: AsyncEngine, table: Table) -> None:
    # Rows without "name" take the column's default (NULL); each run of same-keyed rows is
    # its own statement, in input order.
    rows: list[dict[str, Any]] = [
        {"id": i, "owner": 1} if (i // 250) % 2 else {"id": i, "owner": 1, "name": f"n{i}"}
        for i in range(2000)
    ]
    report = await batch.insert(engine, table, rows, batch_size=1000, progress=False)
    assert (report.rows, report.batches) == (2000, 2)
    async with engine.connect() as conn:
        named = await conn.execute(select(items.c.id).where(items.c.name.is_not(None)))
        assert {row.id for row in named} == {i for i in range(2000) if not (i // 250) % 2}


async def test_upsert_updates_existing_rows_and_inserts_new_ones(
    engine: AsyncEngine, table: Table
) -> None:
    await batch.insert(engine, table, _rows(3000), progress=False)
    changed = [{"id": i, "owner": 99, "name": f"new {i}"} for i in range(2000, 5000)]
    report = await batch.upsert(engine, table, changed, batch_size=700, progress=False)
    assert report.rows == 3000
    assert report.batches == 5
    async with engine.connect() as conn:
        owners = dict(
            (await conn.execute(select(items.c.owner, func.count()).group_by(items.c.owner))).all()
        )
        names = (
            await conn.execute(select(items.c.name).where(items.c.id.in_([1999, 2000, 4999])))
        ).scalars()
        assert sorted(names) == ["item 1999", "new 2000", "new 4999"]
    assert owners[99] == 3000
    assert sum(owners.values()) == 5000

    # update=["name"]: owner is left alone; update=(): existing rows are left alone.
    await batch.upsert(
        engine, table, [{"id": 1, "owner": 5, "name": "renamed"}], update=["name"], progress=False
    )
    await batch.upsert(
        engine, table, [{"id": 2, "owner": 5, "name": "ignored"}], update=(), progress=False
    )
    async with engine.connect() as conn:
        query = select(items).where(items.c.id.in_([1, 2])).order_by(items.c.id)
        got = (await conn.execute(query)).all()
    assert [tuple(r) for r in got] == [(1, 1, "renamed"), (2, 2, "item 2")]


async def test_delete_in_batches_with_and_without_where(engine: AsyncEngine, table: Table) -> None:
    await batch.insert(engine, table, _rows(10_000), batch_size=2500, progress=False)
    report = await batch.delete(engine, table, items.c.owner == 3, batch_size=300, progress=False)
    assert report.rows == 1000
    assert report.batches == 4  # 300 + 300 + 300 + 100
    count, total = await _count_and_sum(engine)
    assert count == 9000
    assert total == sum(i for i in range(10_000) if i % 10 != 3)

    nothing = await batch.delete(engine, table, items.c.owner == 3, progress=False)
    assert nothing.rows == 0
    assert nothing.committed == []

    report = await batch.delete(engine, table, batch_size=3000, progress=False)
    assert report.rows == 9000
    assert report.batches > 1
    assert await _count_and_sum(engine) == (0, 0)


async def test_progress_bar_on_stderr(
    engine: AsyncEngine, table: Table, capsys: pytest.CaptureFixture[str]
) -> None:
    await batch.insert(engine, table, list(_rows(2000)), batch_size=500, progress=True)
    err = capsys.readouterr().err
    assert err.count("\r") == 4
    assert "100% 2,000/2,000 rows, 4 batches" in err
    assert err.endswith("\n")
    await batch.insert(engine, table, _rows(10, start=5000), progress=None)  # not a tty
    assert capsys.readouterr().err == ""


class _Base(DeclarativeBase):
    pass


class Item(_Base):
    """A model mapped to the same table, as an application would pass it."""

    __table__ = items


async def test_a_mapped_class_works_where_its_table_does(engine: AsyncEngine, table: Table) -> None:
    report = await batch.insert(engine, Item, _rows(5), progress=False)
    assert report.rows == 5
    assert report.operation == "insert into batch_items"
    await batch.upsert(engine, Item, [{"id": 0, "owner": 7, "name": "changed"}], progress=False)
    async with engine.connect() as conn:
        assert await conn.scalar(select(items.c.owner).where(items.c.id == 0)) == 7
    deleted = await batch.delete(engine, Item, items.c.id < 2, progress=False)
    assert deleted.rows == 2
    assert await _count_and_sum(engine) == (3, 2 + 3 + 4)


async def test_something_else_than_a_table_or_model_is_refused(engine: AsyncEngine) -> None:
    with pytest.raises(
        ConfigurationError, match=r"takes a Table or a mapped class.*Book.__table__"
    ):
        await batch.insert(engine, "batch_items", _rows(1))  # type: ignore[arg-type]
