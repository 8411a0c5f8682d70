"""Aurora DSQL behaviour shared by every driver of the ``auroradsql`` dialect.

Aurora DSQL speaks the PostgreSQL protocol, so the dialect builds on
SQLAlchemy's PostgreSQL dialect and changes what DSQL does differently:

Transactions
    DSQL has one isolation level, REPEATABLE READ. It is the default; the only
    other accepted ``isolation_level`` is ``AUTOCOMMIT``. Anything else raises
    :class:`~sqlalchemy.exc.ArgumentError` before a connection is made.
    Read-only transactions (``postgresql_readonly`` execution option) work.
    A connection with the ``auroradsql_read_only`` execution option (the read
    path of ``run_transaction(..., read_only=True)``) refuses DML and DDL with
    :class:`~sqlalchemy_dsql.errors.ReadOnlyViolation` before sending them.

Savepoints
    DSQL has none. ``Connection.begin_nested()`` and a ``Session`` that joins
    an outer transaction in ``create_savepoint`` mode raise
    :class:`~sqlalchemy_dsql.errors.SavepointsNotSupported` before anything is
    sent to the server.

DDL
    DSQL runs at most one DDL statement per transaction and never DDL and DML
    in the same transaction. The dialect therefore commits the transaction
    right after each DDL statement (compiled DDL and DDL sent as ``text()``
    alike), so ``conn.run_sync(metadata.create_all)`` inside ``engine.begin()``
    works. If the transaction has already written data, the DDL statement is
    refused with :class:`~sqlalchemy_dsql.errors.DDLAfterDMLError` and nothing
    is committed. ``CREATE INDEX ASYNC`` returns a job id; unless the engine
    is created with ``wait_for_jobs=False`` the dialect waits for the job with
    ``sys.wait_for_job`` and raises
    :class:`~sqlalchemy_dsql.errors.AsyncJobFailed`, naming the index, when the
    build fails (a UNIQUE index over duplicate rows, for example).

Many rows at once
    ``conn.execute(table.insert(), [row, row, ...])`` is sent as multi-row
    ``INSERT ... VALUES`` statements of up to 1,000 rows (SQLAlchemy's
    "insertmanyvalues"), with every driver, instead of one execution per row.

Errors
    A server error's DETAIL and HINT are part of the message with every
    driver, as libpq shows them (SQLAlchemy's asyncpg adapter keeps only the
    primary message, and DSQL's advice is often in the hint); DSQL's limit
    errors (SQLSTATE 54000), which carry no advice of their own, get a HINT
    that says how to stay under the limit.

Reflection
    Reflected index options come back under the ``auroradsql_`` prefix
    (``auroradsql_include``, ``auroradsql_where``,
    ``auroradsql_nulls_not_distinct``), so a reflected table compiles back to
    DDL that DSQL accepts.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from sqlalchemy import event, exc, schema
from sqlalchemy.dialects.postgresql.base import PGCompiler, PGDialect
from sqlalchemy.engine.interfaces import IsolationLevel
from sqlalchemy.sql.elements import TextClause

from ..connector import Connector
from ..errors import (
    AsyncJobFailed,
    ConfigurationError,
    DDLAfterDMLError,
    ReadOnlyViolation,
    SavepointsNotSupported,
)
from ..pool import AsyncDSQLQueuePool, DSQLQueuePool
from ..settings import ConnectionSettings, DriverFamily
from .ddl import DSQLDDLCompiler, DSQLTypeCompiler
from .statement import StatementKind, async_ddl, statement_kind

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from sqlalchemy.engine import URL, Connection, Engine, ExceptionContext
    from sqlalchemy.engine.default import DefaultExecutionContext
    from sqlalchemy.engine.interfaces import DBAPIConnection, DBAPICursor, ExecutionContext
    from sqlalchemy.pool import Pool

ISOLATION_LEVELS: tuple[IsolationLevel, ...] = ("REPEATABLE READ", "AUTOCOMMIT")

_JOB_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# Per DBAPI connection (``PoolProxiedConnection.info``): has the open transaction written?
_WROTE = "auroradsql_transaction_wrote"
# DSQL's limit errors (54000) and transaction-rule refusals (0A000) name the rule but not
# the way around it: (SQLSTATE, a phrase of DSQL's message, the advice).
_SERVER_ADVICE = (
    (
        "54000",
        "row limit",
        "Aurora DSQL changes at most 3,000 rows per transaction (index entries and cascaded "
        "rows count too): split the work into several transactions; sqlalchemy_dsql.batch "
        "does that for inserts, upserts and deletes",
    ),
    (
        "54000",
        "size limit",
        "Aurora DSQL writes at most 10 MiB per transaction: split the work into several "
        "transactions (sqlalchemy_dsql.batch does, with max_batch_bytes)",
    ),
    (
        "54000",
        "age limit",
        "an Aurora DSQL transaction may last at most 5 minutes: split the work into shorter "
        "transactions, and do slow work outside them",
    ),
    (
        "0A000",
        "ddl and dml are not supported in the same transaction",
        "commit the data changes, then run the DDL in a transaction of its own",
    ),
    (
        "0A000",
        "multiple ddl statements not supported in a transaction",
        "run each DDL statement in its own transaction",
    ),
)
_SAVEPOINT_MESSAGE = (
    "Aurora DSQL does not support savepoints, so begin_nested() and sessions that "
    "join an outer transaction in 'create_savepoint' mode cannot work. Run the inner "
    "unit of work as its own transaction (and retry it as a whole on conflict), or "
    "create the Session with join_transaction_mode='conditional_savepoint' or "
    "'rollback_only'."
)


class DSQLCompilerMixin:
    """Refuses the row-locking clauses DSQL lacks; mixed into each driver's compiler."""

    def for_update_clause(self, select: Any, **kw: Any) -> str:
        lock = select._for_update_arg
        if lock.read and not lock.key_share:
            raise exc.CompileError(
                "Aurora DSQL does not support SELECT ... FOR SHARE (with_for_update(read=True)); "
                "use with_for_update() (FOR UPDATE) or with_for_update(read=True, "
                "key_share=True) (FOR KEY SHARE)"
            )
        if lock.key_share and not lock.read:
            raise exc.CompileError(
                "Aurora DSQL does not support SELECT ... FOR NO KEY UPDATE "
                "(with_for_update(key_share=True)); use with_for_update() (FOR UPDATE)"
            )
        return str(super().for_update_clause(select, **kw))  # type: ignore[misc]


class DSQLCompiler(DSQLCompilerMixin, PGCompiler):
    pass


class AuroraDSQLDialect(PGDialect):
    """The shared base of ``auroradsql+<driver>`` dialects; see the module docs."""

    name = "auroradsql"
    supports_statement_cache = True
    supports_native_enum = False
    supports_identity_columns = True
    statement_compiler: type[PGCompiler] = DSQLCompiler
    ddl_compiler = DSQLDDLCompiler
    type_compiler_cls = DSQLTypeCompiler
    # An executemany INSERT is sent as multi-row INSERT ... VALUES pages of up to 1,000 rows,
    # not as the driver's one execution per row: one statement per page for DSQL to plan and
    # run, the way Amazon's own DSQL bulk loader writes.
    use_insertmanyvalues_wo_returning = True

    # SQLAlchemy's own attribute: the dialect options each schema item accepts.
    construct_arguments = [  # noqa: RUF012
        (
            schema.Index,
            {
                "include": None,
                "where": None,
                "nulls_not_distinct": None,
                "using": False,
                "ops": {},
                "concurrently": False,
                "with": {},
                "tablespace": None,
            },
        ),
        (schema.Table, {"ignore_search_path": False}),
    ]

    # Set by the psycopg drivers, whose SQLAlchemy dialects look for hstore at
    # first connect inside a savepoint; DSQL has neither extensions nor savepoints.
    _has_hstore_probe = False

    # Which driver options a URL may carry besides the dialect's own settings.
    _driver_family = DriverFamily.LIBPQ

    # Not keyword-only: create_engine() routes to the dialect only the arguments
    # it finds among __init__'s positional-or-keyword parameters.
    def __init__(
        self,
        wait_for_jobs: bool = True,
        region: str | None = None,
        profile: str | None = None,
        port: int | None = None,
        hostaddr: str | None = None,
        sslmode: str | None = None,
        sslrootcert: str | None = None,
        direct_tls: bool | None = None,
        application_name: str | None = None,
        schema: str | None = None,
        token_lifetime: int | None = None,
        max_connection_age: float | None = None,
        connection_age_jitter: float | None = None,
        connect_timeout: float | None = None,
        allow_insecure_tls: bool | None = None,
        session: Any = None,
        credentials_provider: Any = None,
        **kwargs: Any,
    ) -> None:
        level = kwargs.get("isolation_level")
        if level is not None:
            _check_isolation_level(level)
        if self._has_hstore_probe:
            kwargs.setdefault("use_native_hstore", False)
        super().__init__(**kwargs)
        self.wait_for_jobs = wait_for_jobs
        # The connection settings given as keyword arguments; the URL and the
        # environment fill in the rest when the engine is created.
        self._connection_options: dict[str, Any] = {
            "region": region,
            "profile": profile,
            "port": port,
            "hostaddr": hostaddr,
            "sslmode": sslmode,
            "sslrootcert": sslrootcert,
            "direct_tls": direct_tls,
            "application_name": application_name,
            "schema": schema,
            "token_lifetime": token_lifetime,
            "max_connection_age": max_connection_age,
            "connection_age_jitter": connection_age_jitter,
            "connect_timeout": connect_timeout,
            "allow_insecure_tls": allow_insecure_tls,
            "session": session,
            "credentials_provider": credentials_provider,
        }
        self.connector: Connector | None = None
        self._unconfigured: ConfigurationError | None = None

    @classmethod
    def engine_created(cls, engine: Engine) -> None:
        super().engine_created(engine)
        # Called once per dialect class involved (sync and async variants): listen once.
        if not event.contains(engine, "handle_error", _add_server_advice):
            event.listen(engine, "handle_error", _add_server_advice)
        connector = getattr(engine.dialect, "connector", None)
        if connector is not None:
            connector.install(engine)

    @classmethod
    def get_pool_class(cls, url: URL) -> type[Pool]:
        # SQLAlchemy's queue pools, also timing checkouts that wait (pool_counters()).
        return AsyncDSQLQueuePool if cls.is_async else DSQLQueuePool

    # -- connections: a token each, TLS, explained errors ------------------------------

    def create_connect_args(self, url: URL) -> Any:
        try:
            settings, driver_options = ConnectionSettings.from_url(
                url, self._connection_options, self._driver_family
            )
        except ConfigurationError as error:
            if url.host:
                raise
            # A URL without a host is fine with creator= / async_creator=, which make
            # the connections themselves; without one, connect() says what is missing.
            self._unconfigured = error
            return super().create_connect_args(url)
        self.connector = Connector(settings)
        cargs, cparams = super().create_connect_args(url.set(query={}))
        cparams.update(self._driver_arguments(self.connector))
        cparams.update(self._driver_options(driver_options))
        return cargs, cparams

    def _driver_arguments(self, connector: Connector) -> dict[str, Any]:
        """What this driver's connect() is given, but for the password."""
        return connector.libpq_arguments(self._libpq_version())

    def _driver_options(self, options: dict[str, str]) -> dict[str, Any]:
        """The driver options of the URL, as the driver takes them."""
        return dict(options)

    def _libpq_version(self) -> int:
        raise NotImplementedError

    def _async_driver_connect(self) -> Callable[..., Awaitable[Any]]:
        raise NotImplementedError

    def connect(self, *cargs: Any, **cparams: Any) -> Any:
        connector = self.connector
        if connector is None:
            raise self._unconfigured or ConfigurationError(
                "this auroradsql engine has no connection settings"
            )
        if self.is_async:
            driver_connect = cparams.pop("async_creator_fn", None) or self._async_driver_connect()
            return self.loaded_dbapi.connect(
                *cargs, async_creator_fn=connector.async_creator(driver_connect), **cparams
            )
        return connector.connect(self.loaded_dbapi.connect, cargs, cparams)

    # -- transactions ----------------------------------------------------

    def get_isolation_level_values(self, dbapi_connection: Any) -> list[IsolationLevel]:
        return list(ISOLATION_LEVELS)

    def get_default_isolation_level(self, dbapi_conn: Any) -> IsolationLevel:
        return "REPEATABLE READ"  # DSQL has no other; no need to ask the server

    def _assert_and_set_isolation_level(self, dbapi_conn: Any, level: IsolationLevel) -> None:
        _check_isolation_level(level)
        super()._assert_and_set_isolation_level(dbapi_conn, level)

    def do_savepoint(self, connection: Any, name: str) -> None:
        raise SavepointsNotSupported(_SAVEPOINT_MESSAGE)

    def do_rollback_to_savepoint(self, connection: Any, name: str) -> None:
        raise SavepointsNotSupported(_SAVEPOINT_MESSAGE)

    def do_release_savepoint(self, connection: Any, name: str) -> None:
        raise SavepointsNotSupported(_SAVEPOINT_MESSAGE)

    def do_commit(self, dbapi_connection: Any) -> None:
        _forget_writes(dbapi_connection)
        super().do_commit(dbapi_connection)

    def do_rollback(self, dbapi_connection: Any) -> None:
        _forget_writes(dbapi_connection)
        super().do_rollback(dbapi_connection)

    # -- statement execution: the one-DDL-per-transaction rule -----------------

    def do_execute(
        self,
        cursor: DBAPICursor,
        statement: str,
        parameters: Any,
        context: ExecutionContext | None = None,
    ) -> None:
        self._execute(cursor, statement, parameters, _default(context))

    def do_execute_no_params(
        self,
        cursor: DBAPICursor,
        statement: str,
        context: ExecutionContext | None = None,
    ) -> None:
        self._execute(cursor, statement, None, _default(context))

    def do_executemany(
        self,
        cursor: DBAPICursor,
        statement: str,
        parameters: Any,
        context: ExecutionContext | None = None,
    ) -> None:
        default = _default(context)
        if default is not None:
            kind = _kind(default, statement)
            _refuse_in_read_only(default, kind, statement)
            if kind is StatementKind.DDL:
                raise exc.InvalidRequestError("DDL cannot be executed with many parameter sets")
            _remember_write(default)
        super().do_executemany(cursor, statement, parameters, context)

    def _execute(
        self,
        cursor: DBAPICursor,
        statement: str,
        parameters: Any,
        context: DefaultExecutionContext | None,
    ) -> None:
        kind = _kind(context, statement) if context is not None else StatementKind.OTHER
        if kind is not StatementKind.OTHER:
            assert context is not None
            _refuse_in_read_only(context, kind, statement)
        if kind is StatementKind.DDL:
            assert context is not None
            self._execute_ddl(cursor, statement, parameters, context)
            return
        if kind is StatementKind.DML:
            assert context is not None
            _remember_write(context)
        _run(cursor, statement, parameters)

    def _execute_ddl(
        self,
        cursor: DBAPICursor,
        statement: str,
        parameters: Any,
        context: DefaultExecutionContext,
    ) -> None:
        connection = context._dbapi_connection
        autocommit = context.root_connection._is_autocommit_isolation()
        if not autocommit and connection.info.get(_WROTE):
            raise DDLAfterDMLError(
                "Aurora DSQL cannot run DDL in a transaction that has already written data, "
                "and this transaction has. Nothing was committed. Commit the data changes "
                "first, then run the DDL in a transaction of its own. Statement: "
                + statement.strip().splitlines()[0][:200]
            )
        _run(cursor, statement, parameters)
        job = async_ddl(statement)
        job_id = None
        if job is not None and cursor.description:
            row = cursor.fetchone()
            job_id = str(row[0]) if row else None
        if not autocommit:
            # DSQL allows one DDL statement per transaction: end it here, so
            # that the next statement (DDL or not) starts a fresh one.
            connection.commit()
        if job_id is None:
            return
        name = _object_name(context, job.index if job else None)
        # Callers that batch their waits (schema.create_all) read the job here.
        context.auroradsql_job = (job_id, name)  # type: ignore[attr-defined]
        if context.execution_options.get("auroradsql_wait_for_job", self.wait_for_jobs):
            self.wait_for_job(connection, job_id, name, autocommit=autocommit)

    def commit_writes(self, connection: Connection) -> bool:
        """Commit ``connection``'s transaction now if it has written data; True if it did.

        For callers that run DDL after data changes on one connection, as
        Alembic migrations do: DSQL needs the data committed first. The
        SQLAlchemy transaction stays open, as after a DDL statement; the next
        statement starts a new transaction on the server.
        """
        dbapi_connection = connection.connection
        if not dbapi_connection.info.get(_WROTE):
            return False
        dbapi_connection.commit()
        _forget_writes(dbapi_connection)
        return True

    def wait_for_job(
        self, connection: DBAPIConnection, job_id: str, name: str | None, *, autocommit: bool
    ) -> None:
        """Block until an async DDL job ends; raise :class:`AsyncJobFailed` if it failed.

        ``connection`` is a DBAPI connection outside any transaction; unless
        ``autocommit``, the read transaction the wait opens is committed again.
        """
        if not _JOB_ID.match(job_id):
            raise exc.InvalidRequestError(f"unexpected job id {job_id!r} from CREATE ... ASYNC")
        cursor = connection.cursor()
        try:
            cursor.execute(f"CALL sys.wait_for_job('{job_id}')")
            row = cursor.fetchone()
            succeeded = bool(row[0]) if row else False
            details = None
            if not succeeded:
                if not autocommit:
                    # A snapshot taken before the job ended still shows it running.
                    connection.commit()
                cursor.execute(f"SELECT status, details FROM sys.jobs WHERE job_id = '{job_id}'")
                found = cursor.fetchone()
                details = f"{found[0]}: {found[1]}" if found else "no such job"
        finally:
            cursor.close()
            if not autocommit:
                connection.commit()
        if not succeeded:
            what = f'index "{name}"' if name else "the asynchronous DDL job"
            raise AsyncJobFailed(
                f"Aurora DSQL could not build {what} (job {job_id}): {details}",
                job_id=job_id,
                object_name=name,
            )

    # -- reflection --------------------------------------------------------

    # PGDialect's own signature already departs from the Dialect interface's.
    def get_multi_indexes(  # type: ignore[override]
        self, connection: Any, schema: Any, filter_names: Any, scope: Any, kind: Any, **kw: Any
    ) -> Any:
        result = super().get_multi_indexes(connection, schema, filter_names, scope, kind, **kw)
        return [(key, [_dsql_index(index) for index in indexes]) for key, indexes in result]


def _default(context: ExecutionContext | None) -> DefaultExecutionContext | None:
    # Every SQLAlchemy dialect's execution context derives from the default one.
    return context  # type: ignore[return-value]


def _add_server_advice(context: ExceptionContext) -> None:
    """Put the server's DETAIL and HINT, or advice for DSQL's rules, into the error's message.

    The message is changed in place, so the exception keeps its class and
    ``orig``; text already in the message (libpq drivers include DETAIL and
    HINT themselves) is not repeated.
    """
    error = context.sqlalchemy_exception
    if not isinstance(error, exc.DBAPIError) or not error.args:
        return
    message = error.args[0]
    if not isinstance(message, str):
        return
    orig = error.orig
    # asyncpg's own exception (with .detail and .hint) is the cause of the adapted one.
    cause = getattr(orig, "__cause__", None)
    driver = cause if cause is not None and hasattr(cause, "sqlstate") else orig
    added = []
    for label, attribute in (("DETAIL", "detail"), ("HINT", "hint")):
        value = getattr(driver, attribute, None)
        if isinstance(value, str) and value.strip() and value not in message:
            added.append(f"{label}:  {value.strip()}")
    sqlstate = getattr(driver, "sqlstate", None) or getattr(driver, "pgcode", None)
    hinted = "HINT:" in message or any(line.startswith("HINT:") for line in added)
    if not hinted:
        lowered = message.lower()
        added.extend(
            f"HINT:  {advice}"
            for state, marker, advice in _SERVER_ADVICE
            if state == sqlstate and marker in lowered
        )
    if added:
        error.args = (message.rstrip() + "\n" + "\n".join(added), *error.args[1:])


def _check_isolation_level(level: str) -> None:
    if level not in ISOLATION_LEVELS:
        # SQLAlchemy's own wording first, so that code matching it keeps working.
        raise exc.ArgumentError(
            f"Invalid value {level!r} for isolation_level. Valid isolation levels for "
            f"'auroradsql' are {', '.join(ISOLATION_LEVELS)}: Aurora DSQL runs every "
            "transaction at REPEATABLE READ (the default); AUTOCOMMIT runs each statement "
            "on its own."
        )


def _kind(context: DefaultExecutionContext, statement: str) -> StatementKind:
    if context.isddl:
        return StatementKind.DDL
    if context.isinsert or context.isupdate or context.isdelete:
        return StatementKind.DML
    compiled = context.compiled
    if compiled is None or isinstance(compiled.statement, TextClause):
        return statement_kind(statement)
    return StatementKind.OTHER


def _refuse_in_read_only(
    context: DefaultExecutionContext, kind: StatementKind, statement: str
) -> None:
    if context.execution_options.get("auroradsql_read_only"):
        what = "DDL" if kind is StatementKind.DDL else "a write"
        raise ReadOnlyViolation(
            f"this unit of work is read-only (read_only=True) and {what} was about to run; "
            "nothing was sent. Outside a transaction each write would commit on its own: "
            "run the unit without read_only=True. Statement: "
            + statement.strip().splitlines()[0][:200]
        )


def _remember_write(context: DefaultExecutionContext) -> None:
    info = context._dbapi_connection.info
    if not info.get(_WROTE):
        info[_WROTE] = True


def _forget_writes(dbapi_connection: Any) -> None:
    try:
        info = dbapi_connection.info
    except (AttributeError, NotImplementedError):  # the ad-hoc proxy of a first connect
        return
    info.pop(_WROTE, None)


def _run(cursor: DBAPICursor, statement: str, parameters: Any) -> None:
    if parameters is None:
        cursor.execute(statement)
    else:
        cursor.execute(statement, parameters)


def _object_name(context: DefaultExecutionContext, from_text: str | None) -> str | None:
    compiled = context.compiled
    element = getattr(getattr(compiled, "statement", None), "element", None)
    name = getattr(element, "name", None)
    if name is not None:
        return str(name)
    return from_text.strip('"') if from_text else None


_INDEX_PREFIX = "postgresql_"
# Reflected-only keys such as postgresql_invalid stay PostgreSQL's.
_OUR_INDEX_OPTIONS = frozenset(AuroraDSQLDialect.construct_arguments[0][1])
# PostgreSQL reports btree; DSQL's catalog calls its only method btree_index.
_DEFAULT_INDEX_METHODS = frozenset({"btree", "btree_index"})


def _dsql_index(index: dict[str, Any]) -> dict[str, Any]:
    """A reflected index with its options under our prefix; DSQL's only method is implied."""
    options = index.get("dialect_options")
    if not options:
        return index
    renamed = {}
    for key, value in options.items():
        option = key[len(_INDEX_PREFIX) :]
        if key.startswith(_INDEX_PREFIX) and option in _OUR_INDEX_OPTIONS:
            key = "auroradsql_" + option
        if key == "auroradsql_using" and value in _DEFAULT_INDEX_METHODS:
            continue
        renamed[key] = value
    return {**index, "dialect_options": renamed}
