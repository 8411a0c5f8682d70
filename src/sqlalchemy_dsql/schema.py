"""``create_all`` and ``drop_all`` that run on Aurora DSQL.

DSQL runs one DDL statement per transaction and builds indexes
asynchronously. These functions replace ``MetaData.create_all`` /
``drop_all`` with the order of work DSQL needs:

1. Every statement is compiled first, so a table or index DSQL cannot express
   raises :class:`~sqlalchemy.exc.CompileError` before anything is created.
2. Each statement then runs in a transaction of its own, in dependency order
   (sequences, then tables parent-first, each followed by its indexes and
   comments, then foreign keys that had to be deferred). With
   ``checkfirst=True`` (the default) objects that already exist are skipped.
3. Index builds are submitted without waiting, so they run side by side; with
   ``wait=True`` (the default) the function then waits for each job with
   ``sys.wait_for_job`` and raises :class:`~sqlalchemy_dsql.errors.AsyncJobFailed`
   naming every index whose build failed (for example a UNIQUE index over
   duplicate rows).

Use :func:`create_all` / :func:`drop_all` with an ``AsyncEngine`` or
``AsyncConnection`` and :func:`create_all_sync` / :func:`drop_all_sync` with an
``Engine`` or ``Connection``. The engine must use an ``auroradsql`` dialect.
DSQL cannot roll DDL back as a whole, so a failure part way leaves the objects
created so far in place; running the function again (``checkfirst=True``)
continues where it stopped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, Engine, MetaData, Table, exc
from sqlalchemy import schema as sa_schema
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.sql.ddl import ExecutableDDLElement, sort_tables_and_constraints

from .dialect.base import AuroraDSQLDialect
from .errors import AsyncJobFailed, RetryReason
from .retry import Attempts, RetryPolicy

__all__ = ["create_all", "create_all_sync", "drop_all", "drop_all_sync"]

_NO_WAIT = {"auroradsql_wait_for_job": False}
# A step conflicts only with the schema change just before it: a few quick retries.
_STEP_POLICY = RetryPolicy(max_attempts=5)


@dataclass(frozen=True, slots=True)
class _Step:
    element: ExecutableDDLElement
    # Whether the step's work is already done (checkfirst), asked right before it runs.
    done: Callable[[Connection], bool] | None


async def create_all(
    bind: AsyncEngine | AsyncConnection,
    metadata: MetaData,
    *,
    tables: Sequence[Table] | None = None,
    checkfirst: bool = True,
    wait: bool = True,
) -> None:
    """Create ``metadata``'s sequences, tables, indexes and constraints on DSQL."""
    async with _connection(bind) as connection:
        await connection.run_sync(
            create_all_sync, metadata, tables=tables, checkfirst=checkfirst, wait=wait
        )


async def drop_all(
    bind: AsyncEngine | AsyncConnection,
    metadata: MetaData,
    *,
    tables: Sequence[Table] | None = None,
    checkfirst: bool = True,
) -> None:
    """Drop ``metadata``'s tables (children first) and sequences on DSQL."""
    async with _connection(bind) as connection:
        await connection.run_sync(drop_all_sync, metadata, tables=tables, checkfirst=checkfirst)


def create_all_sync(
    bind: Engine | Connection,
    metadata: MetaData,
    *,
    tables: Sequence[Table] | None = None,
    checkfirst: bool = True,
    wait: bool = True,
) -> None:
    """The synchronous twin of :func:`create_all`."""
    with _sync_connection(bind) as connection:
        dialect = _dsql_dialect(connection)
        steps = list(_creation_steps(metadata, tables, checkfirst))
        _compile_all(steps, dialect)
        jobs: list[tuple[str, str | None]] = []
        for step in steps:
            job = _run(connection, step)
            if job is not None:
                jobs.append(job)
        if wait:
            _wait_for_jobs(connection, dialect, jobs)


def drop_all_sync(
    bind: Engine | Connection,
    metadata: MetaData,
    *,
    tables: Sequence[Table] | None = None,
    checkfirst: bool = True,
) -> None:
    """The synchronous twin of :func:`drop_all`."""
    with _sync_connection(bind) as connection:
        dialect = _dsql_dialect(connection)
        steps = list(_drop_steps(metadata, tables, checkfirst))
        _compile_all(steps, dialect)
        for step in steps:
            _run(connection, step)


def _creation_steps(
    metadata: MetaData, tables: Sequence[Table] | None, checkfirst: bool
) -> Iterator[_Step]:
    chosen = list(metadata.sorted_tables if tables is None else tables)
    for sequence in metadata._sequences.values():
        if sequence.column is None or sequence.column.table in chosen:
            yield _Step(sa_schema.CreateSequence(sequence), _sequence_exists(sequence, checkfirst))
    for table, deferred in sort_tables_and_constraints(chosen):
        if table is None:
            for constraint in deferred:
                yield _Step(sa_schema.AddConstraint(constraint), None)
            continue
        for column in table.columns:
            default = column.default
            if isinstance(default, sa_schema.Sequence) and default.metadata is None:
                yield _Step(
                    sa_schema.CreateSequence(default), _sequence_exists(default, checkfirst)
                )
        yield _Step(
            sa_schema.CreateTable(table, include_foreign_key_constraints=deferred),
            _table_exists(table, checkfirst),
        )
        for index in sorted(table.indexes, key=lambda index: index.name or ""):
            yield _Step(sa_schema.CreateIndex(index), _index_exists(index, checkfirst))
        if table.comment is not None:
            yield _Step(sa_schema.SetTableComment(table), None)
        for column in table.columns:
            if column.comment is not None:
                yield _Step(sa_schema.SetColumnComment(column), None)


def _drop_steps(
    metadata: MetaData, tables: Sequence[Table] | None, checkfirst: bool
) -> Iterator[_Step]:
    chosen = list(metadata.sorted_tables if tables is None else tables)
    ordered = list(reversed(sort_tables_and_constraints(chosen)))
    for table, deferred in ordered:
        if table is None:
            for constraint in deferred:
                assert constraint.table is not None
                yield _Step(
                    sa_schema.DropConstraint(constraint),
                    _missing(_table_exists(constraint.table, checkfirst)),
                )
            continue
        yield _Step(sa_schema.DropTable(table), _missing(_table_exists(table, checkfirst)))
    for sequence in metadata._sequences.values():
        if sequence.column is None or sequence.column.table in chosen:
            yield _Step(
                sa_schema.DropSequence(sequence), _missing(_sequence_exists(sequence, checkfirst))
            )


def _table_exists(table: Table, checkfirst: bool) -> Callable[[Connection], bool] | None:
    if not checkfirst:
        return None
    return lambda connection: connection.dialect.has_table(
        connection, table.name, schema=connection.schema_for_object(table)
    )


def _index_exists(index: sa_schema.Index, checkfirst: bool) -> Callable[[Connection], bool] | None:
    if not checkfirst:
        return None
    table = index.table
    assert table is not None
    assert index.name is not None
    name = str(index.name)
    return lambda connection: connection.dialect.has_index(
        connection, table.name, name, schema=connection.schema_for_object(table)
    )


def _sequence_exists(
    sequence: sa_schema.Sequence, checkfirst: bool
) -> Callable[[Connection], bool] | None:
    if not checkfirst:
        return None
    return lambda connection: connection.dialect.has_sequence(
        connection, sequence.name, schema=connection.schema_for_object(sequence)
    )


def _missing(
    exists: Callable[[Connection], bool] | None,
) -> Callable[[Connection], bool] | None:
    """For drops: the step is done when the object is already gone."""
    if exists is None:
        return None
    return lambda connection: not exists(connection)


def _compile_all(steps: list[_Step], dialect: AuroraDSQLDialect) -> None:
    for step in steps:
        step.element.compile(dialect=dialect)


def _run(connection: Connection, step: _Step) -> tuple[str, str | None] | None:
    """Run one step in its own transaction; return its async job (id, name), if any.

    A schema change made just before (an index build finishing, say) can make
    DSQL fail the step with a conflict while the session refreshes its catalog;
    the step did nothing then, so it is run again. A lost connection is not
    retried: the step runs on the caller's connection.
    """
    for attempt in Attempts(
        _STEP_POLICY,
        name=f"schema step {type(step.element).__name__}",
        retry_on={RetryReason.CONFLICT},
    ):
        with attempt:
            try:
                if step.done is not None and step.done(connection):
                    connection.commit()
                    return None
                result = connection.execute(step.element.execution_options(**_NO_WAIT))
                connection.commit()
            except exc.DBAPIError:
                connection.rollback()
                raise
            job: tuple[str, str | None] | None = getattr(result.context, "auroradsql_job", None)
            return job
    raise AssertionError("unreachable: the last attempt returned or raised")


def _wait_for_jobs(
    connection: Connection, dialect: AuroraDSQLDialect, jobs: list[tuple[str, str | None]]
) -> None:
    failures: list[AsyncJobFailed] = []
    for job_id, name in jobs:
        try:
            dialect.wait_for_job(connection.connection, job_id, name, autocommit=False)
        except AsyncJobFailed as failure:
            failures.append(failure)
    if len(failures) == 1:
        raise failures[0]
    if failures:
        raise AsyncJobFailed(
            f"{len(failures)} asynchronous DDL jobs failed: "
            + "; ".join(str(failure) for failure in failures),
            job_id=failures[0].job_id,
            object_name=failures[0].object_name,
        )


def _dsql_dialect(connection: Connection) -> AuroraDSQLDialect:
    dialect = connection.dialect
    if not isinstance(dialect, AuroraDSQLDialect):
        raise exc.ArgumentError(
            f"sqlalchemy_dsql.schema needs an engine on an auroradsql dialect, not "
            f"{dialect.name}+{dialect.driver}: create it with create_async_dsql_engine(), "
            f"or with a URL such as auroradsql+asyncpg://..."
        )
    return dialect


class _sync_connection:
    """A Connection for the work: the given one, or a new one from an Engine."""

    def __init__(self, bind: Engine | Connection) -> None:
        self._bind = bind
        self._owned: Connection | None = None

    def __enter__(self) -> Connection:
        if isinstance(self._bind, Engine):
            self._owned = self._bind.connect()
            return self._owned
        return self._bind

    def __exit__(self, *exc_info: object) -> None:
        if self._owned is not None:
            self._owned.close()


class _connection:
    """An AsyncConnection for the work: the given one, or a new one from an AsyncEngine."""

    def __init__(self, bind: AsyncEngine | AsyncConnection) -> None:
        self._bind = bind
        self._owned: AsyncConnection | None = None

    async def __aenter__(self) -> AsyncConnection:
        if isinstance(self._bind, AsyncEngine):
            self._owned = await self._bind.connect()
            return self._owned
        return self._bind

    async def __aexit__(self, *exc_info: object) -> None:
        if self._owned is not None:
            await self._owned.close()
