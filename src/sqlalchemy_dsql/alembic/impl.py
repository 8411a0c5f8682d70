"""The Alembic implementation for ``auroradsql``: what :mod:`sqlalchemy_dsql.alembic` describes."""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from alembic.ddl.postgresql import PostgresqlImpl
from alembic.runtime.migration import MigrationContext, RevisionStep
from sqlalchemy import (
    CheckConstraint,
    Column,
    Computed,
    ForeignKeyConstraint,
    Identity,
    MetaData,
    Table,
    exc,
    text,
)
from sqlalchemy.sql.elements import TextClause
from sqlalchemy.util import immutabledict

from ..dialect.statement import StatementKind, statement_kind, statements
from ..errors import AsyncJobFailed, MigrationInterrupted, MigrationRefused
from ..retry import Attempts, RetryReason

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, CursorResult
    from sqlalchemy.sql.base import Executable

__all__ = ["AuroraDSQLImpl"]

_log = logging.getLogger("sqlalchemy_dsql.alembic")

# Rows per transaction when filling a new column or inserting many rows: a third
# of DSQL's 3,000-row limit, which counts index entries changed as well.
ROWS_PER_TRANSACTION = 1000
# Set on the offline context a migration is checked on before it runs.
_CHECKING = "auroradsql_checking"

# What DSQL refuses, as op.execute() would send it: (pattern, what it is, what to do).
_REFUSED_TEXT: tuple[tuple[re.Pattern[str], str, str], ...] = tuple(
    (re.compile(pattern, re.IGNORECASE | re.DOTALL), what, instead)
    for pattern, what, instead in (
        (r"^\s*TRUNCATE\b", "TRUNCATE", "delete the rows in batches of at most 3,000"),
        (
            r"^\s*CREATE\s+(?:UNIQUE\s+)?INDEX\s+(?!ASYNC\b)",
            "CREATE INDEX without ASYNC",
            "use op.create_index(), which emits CREATE INDEX ASYNC and waits for it",
        ),
        (
            r"^\s*ALTER\s+TABLE\b.*\bSET\s+NOT\s+NULL\b",
            "ALTER COLUMN ... SET NOT NULL",
            "add a CHECK (column IS NOT NULL) constraint with op.create_check_constraint()",
        ),
        (
            r"^\s*ALTER\s+TABLE\b.*\bALTER\s+(?:COLUMN\s+)?\S+\s+(?:SET\s+DATA\s+)?TYPE\b",
            "ALTER COLUMN ... TYPE",
            "add a column of the new type, copy the data over, and drop the old column",
        ),
        (
            r"^\s*ALTER\s+TABLE\b.*\bADD\s+(?:COLUMN\s+)?.*\b(?:DEFAULT|NOT\s+NULL)\b",
            "ADD COLUMN with DEFAULT or NOT NULL",
            "use op.add_column(), which adds the column, sets the default and fills the rows",
        ),
        (
            r"^\s*(?:SAVEPOINT|RELEASE|ROLLBACK\s+TO)\b",
            "savepoints",
            "DSQL has none; split the work into migrations",
        ),
        (
            r"^\s*CREATE\s+TYPE\b",
            "CREATE TYPE",
            "use sa.Enum(..., native_enum=False) or a text column with a CHECK constraint",
        ),
        (r"^\s*CREATE\s+EXTENSION\b", "extensions", "DSQL has none"),
        (r"^\s*DO\b", "DO blocks (PL/pgSQL)", "write the steps as separate statements"),
        (
            r"^\s*CREATE\s+(?:OR\s+REPLACE\s+)?(?:CONSTRAINT\s+)?TRIGGER\b",
            "triggers",
            "DSQL has none",
        ),
        (r"^\s*LOCK\b", "LOCK TABLE", "DSQL uses optimistic concurrency; drop the lock"),
        (
            r"^\s*CREATE\s+(?:GLOBAL\s+|LOCAL\s+)?(?:TEMP|TEMPORARY|UNLOGGED)\b",
            "temporary and unlogged tables",
            "create an ordinary table",
        ),
        (r"^\s*CREATE\s+MATERIALIZED\b", "materialized views", "use a view or a table"),
        (r"^\s*(?:LISTEN|NOTIFY|UNLISTEN)\b", "LISTEN / NOTIFY", "DSQL has neither"),
    )
)


class AuroraDSQLImpl(PostgresqlImpl):
    """Alembic's implementation for the ``auroradsql`` dialect; see the module docs."""

    __dialect__ = "auroradsql"
    # Alembic then opens a transaction per migration instead of one for them all.
    transactional_ddl = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.committed: list[str] = []  # this migration's statements, as committed
        self._uncommitted: list[str] = []
        self._not_null_checks: dict[tuple[str | None, str], set[str]] = {}

    @property
    def _checking(self) -> bool:
        return bool(self.context_opts.get(_CHECKING))

    # -- the migrations of a command ----------------------------------------

    def start_migrations(self) -> None:
        super().start_migrations()
        context = _running_context(self)
        if context is not None and not self.as_sql:
            _check_then_watch(context, self)

    # -- statements ----------------------------------------------------------

    def _exec(
        self,
        construct: Executable | str,
        execution_options: Mapping[str, Any] | None = None,
        multiparams: Sequence[Mapping[str, Any]] | None = None,
        params: Mapping[str, Any] = immutabledict(),
    ) -> CursorResult[Any] | None:
        if isinstance(construct, str):
            construct = text(construct)
        if isinstance(construct, TextClause):
            _refuse_text(construct.text)
        if self._checking:
            # Compiling DDL is where the dialect refuses what DSQL lacks; data statements
            # need values offline mode may not be able to render, and nothing here runs.
            if _is_ddl(construct):
                construct.compile(dialect=self.dialect)  # type: ignore[attr-defined]
            return None
        if self.as_sql:
            return super()._exec(construct, execution_options, multiparams, params)
        assert self.connection is not None
        is_ddl = _is_ddl(construct)
        if is_ddl:
            self._commit_data_changes()
        result = super()._exec(construct, execution_options, multiparams, params)
        shown = _shown(construct, self.dialect)
        if is_ddl:
            self.committed.append(shown)  # the dialect committed it
        elif not _is_version_statement(construct, self.context_opts):
            self._uncommitted.append(shown)
        return result

    def _commit_data_changes(self) -> None:
        assert self.connection is not None
        if self.dialect.commit_writes(self.connection):  # type: ignore[attr-defined]
            self.committed.extend(self._uncommitted)
        self._uncommitted.clear()

    # -- operations DSQL runs differently -----------------------------------

    def add_column(
        self,
        table_name: str,
        column: Column[Any],
        *,
        schema: str | None = None,
        **kw: Any,
    ) -> None:
        default = column.server_default
        where = f'op.add_column("{table_name}", "{column.name}")'
        if column.primary_key:
            raise MigrationRefused(
                f"{where}: Aurora DSQL cannot add a primary key column to an existing table; "
                "declare the primary key in create_table (recreate the table)"
            )
        if isinstance(default, (Identity, Computed)) or column.identity is not None:
            raise MigrationRefused(
                f"{where}: Aurora DSQL cannot add an identity or computed column to an existing "
                "table; declare it in create_table, or add a plain column and fill it"
            )
        if not column.nullable and default is None:
            raise MigrationRefused(
                f"{where}: a NOT NULL column needs a server_default to fill the rows already "
                "there, and Aurora DSQL cannot add NOT NULL columns. Give it a server_default "
                "(it is set for new rows and written into existing ones, and the column gets "
                "a validated CHECK (... IS NOT NULL)), or add it nullable"
            )
        if default is None:
            super().add_column(table_name, column, schema=schema, **kw)
            return
        bare = column._copy()
        bare.nullable = True
        bare.server_default = None
        Table(table_name, MetaData(), bare, schema=schema)
        super().add_column(table_name, bare, schema=schema, **kw)
        super().alter_column(
            table_name,
            column.name,
            server_default=default,
            existing_type=column.type,
            schema=schema,
        )
        self._fill(table_name, column.name, schema)
        if not column.nullable:
            self.add_constraint(_not_null_check(table_name, column.name, schema))

    def alter_column(self, table_name: str, column_name: str, **kw: Any) -> None:
        where = f'op.alter_column("{table_name}", "{column_name}")'
        if kw.get("type_") is not None:
            raise MigrationRefused(
                f"{where}, type_={kw['type_']!r}: Aurora DSQL cannot change a column's type; "
                "add a column of the new type, copy the data over (op.execute(update(...))), "
                "and drop the old column"
            )
        if kw.get("nullable") is False and kw.get("existing_nullable") is not False:
            raise MigrationRefused(
                f"{where}, nullable=False: Aurora DSQL has no SET NOT NULL; add a CHECK "
                f"constraint instead: op.create_check_constraint("
                f'"{table_name}_{column_name}_not_null", "{table_name}", '
                f'"{column_name} IS NOT NULL")'
            )
        super().alter_column(table_name, column_name, **kw)

    def add_constraint(self, const: Any, **kw: Any) -> None:
        validate = (
            isinstance(const, (ForeignKeyConstraint, CheckConstraint))
            and not const.dialect_options["postgresql"].get("not_valid")
            and (const._create_rule is None or const._create_rule(self))
        )
        if validate and not const.name:
            raise MigrationRefused(
                f"a {type(const).__name__} added to table "
                f'"{const.table.name}" needs a name: Aurora DSQL adds it NOT VALID and '
                "validates it afterwards by name"
            )
        # Adding the constraint takes it out of its table's CREATE TABLE (and _create_rule).
        super().add_constraint(const, **kw)
        if validate:
            preparer = self.dialect.identifier_preparer
            self._exec(
                text(
                    f"ALTER TABLE ASYNC {preparer.format_table(const.table)} "
                    f"VALIDATE CONSTRAINT {preparer.format_constraint(const)}"
                )
            )

    def create_index(self, index: Any, **kw: Any) -> None:
        try:
            super().create_index(index, **kw)
        except AsyncJobFailed:
            # DSQL may keep the index of a failed build; drop it so the migration can run
            # again. Not a change the migration made, so not listed as one.
            assert self.connection is not None
            with contextlib.suppress(exc.DBAPIError):
                super()._exec(
                    text(
                        f"DROP INDEX IF EXISTS "
                        f"{self.dialect.identifier_preparer.format_index(index)}"
                    )
                )
            raise

    def bulk_insert(self, table: Any, rows: list[dict[str, Any]], multiinsert: bool = True) -> None:
        if self.as_sql or len(rows) <= ROWS_PER_TRANSACTION:
            super().bulk_insert(table, rows, multiinsert=multiinsert)
            return
        for start in range(0, len(rows), ROWS_PER_TRANSACTION):
            super().bulk_insert(
                table, rows[start : start + ROWS_PER_TRANSACTION], multiinsert=multiinsert
            )
            self._commit_data_changes()

    # -- autogenerate ---------------------------------------------------------

    def autogen_column_reflect(self, inspector: Any, table: Table, column_info: Any) -> None:
        super().autogen_column_reflect(inspector, table, column_info)  # type: ignore[no-untyped-call]
        if column_info.get("nullable") and column_info["name"] in self._checked_not_null(
            inspector, table
        ):
            column_info["nullable"] = False

    def _checked_not_null(self, inspector: Any, table: Table) -> set[str]:
        key = (table.schema, table.name)
        found = self._not_null_checks.get(key)
        if found is None:
            found = self._not_null_checks[key] = set()
            for check in inspector.get_check_constraints(table.name, schema=table.schema):
                column = _NOT_NULL_CHECK.fullmatch(check.get("sqltext") or "")
                if column is not None and check.get("name") == _not_null_name(
                    table.name, column.group(1).strip('"')
                ):
                    found.add(column.group(1).strip('"'))
        return found

    # -- internals ------------------------------------------------------------

    def _fill(self, table_name: str, column_name: str, schema: str | None) -> None:
        """Write the new column's default into the rows already there, a batch per transaction."""
        preparer = self.dialect.identifier_preparer
        table = preparer.format_table(Table(table_name, MetaData(), schema=schema))
        column = preparer.quote(column_name)
        if self.as_sql:
            self.static_output(
                f"-- sqlalchemy-dsql fills existing rows in transactions of "
                f"{ROWS_PER_TRANSACTION} rows:\n"
                f"UPDATE {table} SET {column} = DEFAULT WHERE {column} IS NULL"
                + self.command_terminator
            )
            return
        assert self.connection is not None
        primary_key = _primary_key(self.connection, table_name, schema)
        keys = ", ".join(preparer.quote(name) for name in primary_key)
        statement = text(
            f"UPDATE {table} SET {column} = DEFAULT WHERE ({keys}) IN "
            f"(SELECT {keys} FROM {table} WHERE {column} IS NULL LIMIT {ROWS_PER_TRANSACTION})"
        )
        filled = batches = 0
        while True:
            rows = self._run_batch(statement, f"filling {table}.{column}")
            filled += rows
            batches += 1
            if rows < ROWS_PER_TRANSACTION:
                break
        self.committed.append(f"filled {table}.{column} with its default: {filled} rows")
        _log.info("filled %s.%s: %d rows in %d transactions", table, column, filled, batches)

    def _run_batch(self, statement: TextClause, name: str) -> int:
        """Run one data statement in its own transaction, again after write conflicts."""
        assert self.connection is not None
        # A lost connection is not retried here: the migration has only this one.
        for attempt in Attempts(name=name, retry_on={RetryReason.CONFLICT}):
            with attempt:
                try:
                    rows = int(self.connection.execute(statement).rowcount)
                    self.dialect.commit_writes(self.connection)  # type: ignore[attr-defined]
                except exc.DBAPIError:
                    self.dialect.do_rollback(self.connection.connection)
                    raise
                return rows
        raise AssertionError("unreachable: the last attempt returned or raised")


# -- checking migrations before they run ---------------------------------------


def _running_context(impl: AuroraDSQLImpl) -> MigrationContext | None:
    """The MigrationContext of the env.py run that made ``impl``, if any."""
    from alembic import context as environment

    current = getattr(environment, "_proxy", None)
    if current is None:
        return None
    try:
        migration_context = current.get_context()
    except Exception:  # Alembic raises a bare Exception before configure()
        return None
    return migration_context if migration_context.impl is impl else None


def _check_then_watch(context: MigrationContext, impl: AuroraDSQLImpl) -> None:
    """Check every migration of this run on paper first; then run each under watch."""
    steps_of = context._migrations_fn
    if steps_of is None:
        return

    def checked_steps(heads: Any, migration_context: MigrationContext) -> Iterator[Any]:
        steps = list(steps_of(heads, migration_context))
        revisions = [step for step in steps if isinstance(step, RevisionStep)]
        for step in revisions:
            _check_on_paper(migration_context, step)
        for step in revisions:
            step.migration_fn = _watched(impl, step, step.migration_fn)
        yield from steps

    context._migrations_fn = checked_steps


def _check_on_paper(context: MigrationContext, step: RevisionStep) -> None:
    from alembic import op
    from alembic.operations import Operations

    # Alembic announces every context it makes ("Generating static SQL"); this one is ours.
    announcer = logging.getLogger("alembic.runtime.migration")
    was_disabled, announcer.disabled = announcer.disabled, True
    try:
        paper = MigrationContext.configure(
            dialect=context.dialect,
            opts={
                "as_sql": True,
                "output_buffer": io.StringIO(),
                _CHECKING: True,
                "target_metadata": context.opts.get("target_metadata"),
            },
        )
    finally:
        announcer.disabled = was_disabled
    running = getattr(op, "_proxy", None)
    try:
        with Operations.context(paper):
            step.migration_fn()
    except (MigrationRefused, exc.CompileError) as error:
        raise MigrationRefused(
            f"{_describe(step)} was not run: {error}. Nothing of it (or of the migrations "
            "after it) was sent to the database."
        ) from error
    except Exception as error:  # code that needs a live database; checked as it runs instead
        _log.info("%s could not be checked before running (%s)", _describe(step), error)
    finally:
        if running is not None:
            running._install_proxy()


def _watched(impl: AuroraDSQLImpl, step: RevisionStep, fn: Callable[..., Any]) -> Any:
    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        impl.committed = []
        impl._uncommitted = []
        try:
            return fn(*args, **kwargs)
        except Exception as error:
            if not impl.committed:
                raise
            raise _interrupted(step, impl.committed, error) from error

    return run


def _interrupted(
    step: RevisionStep, committed: list[str], error: BaseException
) -> MigrationInterrupted:
    before = ", ".join(step.from_revisions_no_deps) or "base"
    done = "\n".join(f"  {number}. {line}" for number, line in enumerate(committed, 1))
    first_line = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
    return MigrationInterrupted(
        f"{_describe(step)} stopped part-way: {first_line}\n"
        f"Aurora DSQL cannot roll DDL back; this migration had committed:\n{done}\n"
        f"alembic_version still says {before}. Undo the statements above (or finish the "
        f"migration by hand and run `alembic stamp {step.revision.revision}`) before running "
        "it again; docs/alembic.md has the details.",
        revision=step.revision.revision,
        committed=list(committed),
    )


def _describe(step: RevisionStep) -> str:
    doc = f" ({step.revision.doc})" if step.revision.doc else ""
    return f"migration {step.revision.revision}{doc}, {step.name}"


# -- helpers ---------------------------------------------------------------------

_NOT_NULL_CHECK = re.compile(r"\(?\s*(\"(?:[^\"]|\"\")+\"|\w+)\s+IS\s+NOT\s+NULL\s*\)?", re.I)


def _not_null_name(table_name: str, column_name: str) -> str:
    return f"{table_name}_{column_name}_not_null"


def _not_null_check(table_name: str, column_name: str, schema: str | None) -> CheckConstraint:
    table = Table(table_name, MetaData(), Column(column_name), schema=schema)
    check = CheckConstraint(
        table.c[column_name].isnot(None), name=_not_null_name(table_name, column_name)
    )
    table.append_constraint(check)
    return check


def _primary_key(connection: Connection, table_name: str, schema: str | None) -> list[str]:
    from sqlalchemy import inspect

    columns = inspect(connection).get_pk_constraint(table_name, schema=schema)[
        "constrained_columns"
    ]
    if not columns:
        raise MigrationRefused(
            f'table "{table_name}" has no primary key to fill the new column by, in batches '
            "under DSQL's row limit"
        )
    return list(columns)


def _refuse_text(statement: str) -> None:
    parts = statements(statement)
    if len(parts) > 1 and any(statement_kind(part) is StatementKind.DDL for part in parts):
        raise MigrationRefused(
            "op.execute() of several statements including DDL: Aurora DSQL runs each DDL "
            "statement in a transaction of its own; call op.execute() once per statement. "
            f"Statement: {_first_line(statement)}"
        )
    for pattern, what, instead in _REFUSED_TEXT:
        if any(pattern.match(part) for part in parts):
            raise MigrationRefused(
                f"op.execute(): Aurora DSQL does not support {what}; {instead}. "
                f"Statement: {_first_line(statement)}"
            )


def _is_ddl(construct: Any) -> bool:
    from sqlalchemy.sql.ddl import ExecutableDDLElement

    if isinstance(construct, ExecutableDDLElement):
        return True
    # What the dialect commits right after: the same classifier decides.
    return isinstance(construct, TextClause) and statement_kind(construct.text) is StatementKind.DDL


def _is_version_statement(construct: Any, opts: Mapping[str, Any]) -> bool:
    table = getattr(construct, "table", None)
    return bool(getattr(table, "name", None) == opts.get("version_table", "alembic_version"))


def _shown(construct: Any, dialect: Any) -> str:
    try:
        compiled = str(construct.compile(dialect=dialect))
    except exc.SQLAlchemyError:
        compiled = type(construct).__name__
    return _first_line(compiled, 160)


def _first_line(statement: str, limit: int = 200) -> str:
    line = " ".join(statement.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."
