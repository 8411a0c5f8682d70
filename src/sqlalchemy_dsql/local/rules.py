"""Decide whether Aurora DSQL would accept a query string, and what it would do.

The local emulator passes every query string through :func:`check` before it
reaches PostgreSQL.  The verdict says, for each statement, what kind of
statement it is (read, write, DDL, asynchronous DDL, transaction control,
session setting, ...) and which tables it touches, and it carries the first
refusal DSQL would answer with: savepoints, TRUNCATE, temporary tables,
advisory locks, isolation levels other than REPEATABLE READ, synchronous
``CREATE INDEX``, sequences without an explicit CACHE, and the rest of the
documented differences.  Text PostgreSQL cannot parse is passed through, so
that PostgreSQL reports the syntax error in its own words.

:func:`lint_second_opinion` asks Amazon's ``dsql-lint`` about a statement that
:func:`check` accepted; it is slower, so callers cache its answers.
"""

from __future__ import annotations

import enum
import functools
import json
import logging
import shutil
import subprocess
import sys
from bisect import bisect_left
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pglast import ast, enums, parse_sql, scan
from pglast.parser import ParseError, Token

__all__ = [
    "AsyncJob",
    "Kind",
    "Rejection",
    "Statement",
    "Verdict",
    "check",
    "lint_second_opinion",
]

_log = logging.getLogger(__name__)


class Kind(enum.Enum):
    """What a statement does, as far as the emulator's transaction rules care."""

    READ = "read"
    WRITE = "write"
    DDL = "ddl"
    ASYNC_DDL = "async_ddl"
    BEGIN = "begin"
    COMMIT = "commit"
    ROLLBACK = "rollback"
    SESSION = "session"
    WAIT_FOR_JOB = "wait_for_job"
    EMPTY = "empty"


@dataclass(frozen=True, slots=True)
class Rejection:
    """The error DSQL would answer with."""

    sqlstate: str
    message: str
    hint: str | None = None
    detail: str | None = None


@dataclass(frozen=True, slots=True)
class AsyncJob:
    """Work that DSQL runs in the background and reports in ``sys.jobs``."""

    job_type: str
    object_name: str
    table: str
    backend_sql: str


@dataclass(frozen=True, slots=True)
class Statement:
    """One statement of a query string."""

    kind: Kind
    relations: frozenset[str]
    async_job: AsyncJob | None = None
    job_id_literal: str | None = None
    read_only: bool | None = None


@dataclass(frozen=True, slots=True)
class Verdict:
    """Every statement of a query string, and the first refusal among them."""

    statements: tuple[Statement, ...]
    rejection: Rejection | None


_UNSUPPORTED = "0A000"
# DSQL answers a CACHE value it does not accept and a non-bigint sequence type with
# a data exception (SQLAlchemy raises DataError: awslabs/aurora-dsql-orms
# python/sqlalchemy/test); PostgreSQL's own code for such option values is 22023.
_INVALID_VALUE = "22023"
_UNDEFINED_OBJECT = "42704"
_PROGRAM_LIMIT = "54000"
# PostgreSQL's code for "too many columns"; DSQL reports its per-index column
# limit in the 54xxx program-limit class as well.
_TOO_MANY_COLUMNS = "54011"
_MAX_INDEX_KEYS = 8
_MIN_LARGE_CACHE = 65536

_TOO_MANY_KEYS = Rejection(
    _TOO_MANY_COLUMNS,
    f"more than {_MAX_INDEX_KEYS} column keys in an index are not supported",
    "move some columns to INCLUDE (...)",
)

_SYNTAX_ERROR_VERDICT = Verdict((Statement(Kind.READ, frozenset()),), None)
_EMPTY_VERDICT = Verdict((Statement(Kind.EMPTY, frozenset()),), None)

_CACHE_HINT = "use CACHE 1, or CACHE 65536 or more"
_CTAS_HINT = "create the table with CREATE TABLE, then fill it with INSERT INTO ... SELECT"
_VALIDATE_HINT = "run ALTER TABLE ASYNC {table} VALIDATE CONSTRAINT {name}"
_PARAMETER_HINT = (
    "only search_path, application_name, client settings such as timezone and datestyle, "
    "transaction read-only settings and planner switches can be set"
)


def _refuse(message: str, hint: str | None = None, sqlstate: str = _UNSUPPORTED) -> Rejection:
    return Rejection(sqlstate, message, hint)


# --------------------------------------------------------------------------
# Preprocessing: DSQL syntax that PostgreSQL's grammar does not know


_COMMENTS = frozenset({"SQL_COMMENT", "C_COMMENT"})
_SEMICOLON = "ASCII_59"
_DOT = "ASCII_46"
_OPEN_PAREN = "ASCII_40"
# Tokens that may follow "ALTER TABLE async" when "async" is the table's name
# rather than DSQL's keyword.
_ALTER_TABLE_ACTIONS = frozenset(
    {
        "ADD_P",
        "ALTER",
        "ATTACH",
        "CLUSTER",
        "DETACH",
        "DISABLE_P",
        "DROP",
        "ENABLE_P",
        "FORCE",
        "INHERIT",
        "NO",
        "NOT",
        "OF",
        "OWNER",
        "RENAME",
        "REPLICA",
        "RESET",
        "SET",
        "VALIDATE",
        _DOT,
        _SEMICOLON,
    }
)


@dataclass(frozen=True, slots=True)
class _Prepared:
    text: str  # the query with every DSQL ASYNC keyword blanked out, offsets unchanged
    tokens: tuple[Token, ...]  # without comments
    starts: tuple[int, ...]  # tokens' start offsets, for bisecting
    async_at: tuple[int, ...]  # offsets of the blanked ASYNC keywords
    iam: tuple[int, ...]  # offsets of AWS IAM GRANT/REVOKE statements, blanked out too
    early: Rejection | None  # a refusal found in text that PostgreSQL cannot parse

    def tokens_between(self, start: int, end: int) -> Sequence[Token]:
        return self.tokens[bisect_left(self.starts, start) : bisect_left(self.starts, end)]


def _word(sql: str, token: Token) -> str:
    return sql[token.start : token.end + 1].lower()


def _name_at(tokens: Sequence[Token], index: int) -> str:
    return tokens[index].name if index < len(tokens) else ""


def _is_async(sql: str, tokens: Sequence[Token], index: int) -> bool:
    return _name_at(tokens, index) == "IDENT" and _word(sql, tokens[index]) == "async"


def _index_async(sql: str, tokens: Sequence[Token], i: int) -> int | None:
    """Position of ASYNC in ``CREATE [UNIQUE] INDEX [CONCURRENTLY] ASYNC``."""
    j = i + 1
    if _name_at(tokens, j) == "UNIQUE":
        j += 1
    if _name_at(tokens, j) != "INDEX":
        return None
    j += 1
    if _name_at(tokens, j) == "CONCURRENTLY":
        j += 1
    return j if _is_async(sql, tokens, j) else None


def _qualified_index_name(tokens: Sequence[Token], async_index: int) -> bool:
    j = async_index + 1
    if _name_at(tokens, j) == "CONCURRENTLY":
        j += 1
    if _name_at(tokens, j) == "IF_P":
        j += 3
    return _name_at(tokens, j) not in ("ON", "") and _name_at(tokens, j + 1) == _DOT


def _table_async(sql: str, tokens: Sequence[Token], i: int) -> int | None:
    """Position of ASYNC in ``ALTER TABLE ASYNC``, unless async names the table."""
    j = i + 2
    if _name_at(tokens, i + 1) != "TABLE" or not _is_async(sql, tokens, j):
        return None
    following = _name_at(tokens, j + 1)
    return j if following and following not in _ALTER_TABLE_ACTIONS else None


def _iam_statement(sql: str, tokens: Sequence[Token], i: int) -> int | None:
    """Last token of ``AWS IAM GRANT role TO 'arn'`` or ``AWS IAM REVOKE role FROM 'arn'``."""
    verb = _name_at(tokens, i + 2)
    if not (
        _name_at(tokens, i) == "IDENT"
        and _word(sql, tokens[i]) == "aws"
        and _name_at(tokens, i + 1) == "IDENT"
        and _word(sql, tokens[i + 1]) == "iam"
        and verb in ("GRANT", "REVOKE")
        and _name_at(tokens, i + 3) not in ("", _SEMICOLON)
        and _name_at(tokens, i + 4) == ("TO" if verb == "GRANT" else "FROM")
        and _name_at(tokens, i + 5) == "SCONST"
        and _name_at(tokens, i + 6) in ("", _SEMICOLON)
    ):
        return None
    return i + 5


def _prepare(sql: str) -> _Prepared:
    tokens = tuple(t for t in scan(sql) if t.name not in _COMMENTS)
    chars = list(sql)
    async_at: list[int] = []
    iam: list[int] = []
    early: Rejection | None = None
    at_start = True
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if token.name == _SEMICOLON:
            at_start = True
            i += 1
            continue
        if not at_start:
            i += 1
            continue
        at_start = False
        found = None
        if token.name == "CREATE":
            found = _index_async(sql, tokens, i)
            if found is not None and early is None and _qualified_index_name(tokens, found):
                early = _refuse(
                    "the name of an index cannot be schema-qualified",
                    "the index is always created in the schema of its table",
                )
        elif token.name == "ALTER":
            found = _table_async(sql, tokens, i)
        else:
            last = _iam_statement(sql, tokens, i)
            if last is not None:
                iam.append(token.start)
                chars[token.start : tokens[last].end + 1] = " " * (
                    tokens[last].end + 1 - token.start
                )
                i = last + 1
                continue
        if found is not None:
            keyword = tokens[found]
            async_at.append(keyword.start)
            chars[keyword.start : keyword.end + 1] = " " * (keyword.end + 1 - keyword.start)
        i += 1
    return _Prepared(
        "".join(chars),
        tokens,
        tuple(t.start for t in tokens),
        tuple(async_at),
        tuple(iam),
        early,
    )


# --------------------------------------------------------------------------
# Walking the syntax tree


_CHILD_SLOTS: dict[type, tuple[str, ...]] = {}


def _child_slots(cls: type) -> tuple[str, ...]:
    slots = _CHILD_SLOTS.get(cls)
    if slots is None:
        info: dict[str, Any] = getattr(cls, "__slots__", {})
        slots = tuple(
            name
            for name, spec in info.items()
            if spec.c_type.endswith("*") and spec.c_type != "char*"
        )
        _CHILD_SLOTS[cls] = slots
    return slots


def _walk(root: ast.Node) -> Iterator[ast.Node]:
    stack: list[object] = [root]
    while stack:
        item = stack.pop()
        if isinstance(item, ast.Node):
            yield item
            for name in _child_slots(type(item)):
                value = getattr(item, name, None)
                if value is not None:
                    stack.append(value)
        elif isinstance(item, tuple):
            stack.extend(item)


_DML = (ast.InsertStmt, ast.UpdateStmt, ast.DeleteStmt, ast.MergeStmt)
_DROPPED_RELATIONS = frozenset(
    {
        enums.ObjectType.OBJECT_TABLE,
        enums.ObjectType.OBJECT_VIEW,
        enums.ObjectType.OBJECT_INDEX,
        enums.ObjectType.OBJECT_SEQUENCE,
        enums.ObjectType.OBJECT_MATVIEW,
        enums.ObjectType.OBJECT_FOREIGN_TABLE,
    }
)


@dataclass(slots=True)
class _Facts:
    relations: set[str]
    functions: list[ast.FuncCall]
    locks: list[enums.LockClauseStrength]
    writes: bool


def _is_catalog(schema: str | None, name: str) -> bool:
    if schema is None:
        return name.startswith("pg_")
    return schema in ("pg_catalog", "information_schema") or schema.startswith("pg_")


def _relation_name(schema: str | None, name: str) -> str:
    return f"{schema}.{name}" if schema else name


def _collect(root: ast.Node) -> _Facts:
    ranges: list[ast.RangeVar] = []
    ctes: set[str] = set()
    facts = _Facts(set(), [], [], False)
    for node in _walk(root):
        if isinstance(node, ast.RangeVar):
            ranges.append(node)
        elif isinstance(node, ast.FuncCall):
            facts.functions.append(node)
        elif isinstance(node, ast.LockingClause) and node.strength is not None:
            facts.locks.append(node.strength)
        elif isinstance(node, ast.CommonTableExpr) and node.ctename:
            ctes.add(node.ctename)
        elif isinstance(node, _DML):
            facts.writes = True
        elif isinstance(node, ast.DropStmt) and node.removeType in _DROPPED_RELATIONS:
            for obj in node.objects or ():
                parts = [_sval(part) or "" for part in obj] if isinstance(obj, tuple) else []
                if parts and not _is_catalog(parts[-2] if len(parts) > 1 else None, parts[-1]):
                    facts.relations.add(".".join(parts).lower())
    for rv in ranges:
        name = rv.relname
        if not name or (rv.schemaname is None and name in ctes):
            continue
        if not _is_catalog(rv.schemaname, name):
            facts.relations.add(_relation_name(rv.schemaname, name).lower())
    return facts


# --------------------------------------------------------------------------
# Small readers for syntax-tree values


def _sval(node: object) -> str | None:
    if isinstance(node, ast.A_Const):
        node = node.val
    return node.sval if isinstance(node, ast.String) else None


def _number(node: object) -> int | None:
    if isinstance(node, ast.A_Const):
        node = node.val
    if isinstance(node, ast.Integer):
        return node.ival
    if isinstance(node, ast.Float) and node.fval is not None:
        try:
            return int(node.fval)
        except ValueError:
            return None
    return None


def _function_name(call: ast.FuncCall) -> tuple[str | None, str]:
    names = [(_sval(part) or "").lower() for part in call.funcname or ()]
    return (names[-2] if len(names) > 1 else None), (names[-1] if names else "")


def _type_names(type_name: ast.TypeName | None) -> list[str]:
    if type_name is None:
        return []
    return [(_sval(part) or "").lower() for part in type_name.names or ()]


_TYPE_DISPLAY = {"int2": "smallint", "int4": "integer", "int8": "bigint"}


def _type_display(names: Sequence[str]) -> str:
    return _TYPE_DISPLAY.get(names[-1], names[-1]) if names else "unknown"


def _option(options: Sequence[Any] | None, name: str) -> ast.DefElem | None:
    for option in options or ():
        if isinstance(option, ast.DefElem) and option.defname == name:
            return option
    return None


# --------------------------------------------------------------------------
# Shared rules


_SERIAL_TYPES = frozenset({"serial", "serial2", "serial4", "serial8", "smallserial", "bigserial"})
# Types DSQL has in queries only, not as columns (AWS supported data types page, "Query
# runtime data types"; agent-plugins development-guide.md). jsonb was once listed too,
# but a live cluster stored jsonb columns in 2026-09.
_RUNTIME_ONLY_TYPES = frozenset({"inet"})
# The largest declared length DSQL accepts, checked at DDL time (agent-plugins
# limits-and-error-codes.md, observed on a cluster).
_DECLARED_SIZE_LIMITS = {"bpchar": ("char", 4096), "varchar": ("varchar", 65535)}


def _declared_size_problem(
    type_name: ast.TypeName | None, names: Sequence[str]
) -> Rejection | None:
    limit = _DECLARED_SIZE_LIMITS.get(names[-1]) if names else None
    if limit is None or type_name is None or not type_name.typmods:
        return None
    size = _number(type_name.typmods[0])
    shown, most = limit
    if size is None or size <= most:
        return None
    return _refuse(
        f"Datatype limit greater than {most} bytes not supported for {shown}",
        "use text for longer values",
        _PROGRAM_LIMIT,
    )


def _persistence_problem(rel: ast.RangeVar | None, things: str) -> Rejection | None:
    persistence = rel.relpersistence if rel is not None else None
    if persistence == "t":
        if things == "tables":
            # DSQL's words (a live-cluster report, 2026-09-23).
            return _refuse("TEMPORARY or TEMP table not supported for CREATE TABLE", "use a table")
        return _refuse(f"temporary {things} are not supported", f"use regular {things}")
    if persistence == "u":
        return _refuse(f"UNLOGGED {things} are not supported", f"use regular {things}")
    return None


def _cache_problem(options: Sequence[Any] | None, subject: str | None) -> Rejection | None:
    """CACHE must be 1 or at least 65536; ``subject`` is set where it is mandatory."""
    cache = _option(options, "cache")
    if cache is None:
        if subject is None:
            return None
        return _refuse(_MISSING_CACHE[subject], _CACHE_HINT)
    value = _number(cache.arg)
    if value is None or (value != 1 and value < _MIN_LARGE_CACHE):
        shown = value if value is not None else "value"
        return _refuse(
            f"CACHE ({shown}) must be greater than or equal to 65536 or equal to 1",
            _CACHE_HINT,
            _INVALID_VALUE,
        )
    return None


# DSQL's wording, recorded on live clusters (pistachio DSQL.md, 2026-07-23).
_MISSING_CACHE = {
    "CREATE SEQUENCE": (
        "CREATE SEQUENCE is not supported without an explicit cache size. "
        "please define CACHE greater than or equal to 65536 or equal to 1"
    ),
    "identity column": "identity column is not supported without an explicit cache size",
}


def _sequence_type_problem(options: Sequence[Any] | None) -> Rejection | None:
    as_type = _option(options, "as")
    names = _type_names(as_type.arg) if as_type and isinstance(as_type.arg, ast.TypeName) else []
    if names and names[-1] != "int8":
        return _refuse(
            "sequence type must be bigint",
            "use AS bigint or leave AS out",
            _INVALID_VALUE,
        )
    return None


def _identity_problem(constraint: ast.Constraint, column_type: Sequence[str]) -> Rejection | None:
    if column_type and column_type[-1] != "int8":
        return _refuse(
            f"datatype {_type_display(column_type)} not supported, "
            "identity column type must be bigint",
            "declare identity columns as bigint",
        )
    return _cache_problem(constraint.options, "identity column")


_ADDED_COLUMN_CONSTRAINTS: dict[enums.ConstrType, tuple[str, str]] = {
    enums.ConstrType.CONSTR_DEFAULT: (
        "DEFAULT",
        "add the column without a default, then set it with ALTER COLUMN ... SET DEFAULT",
    ),
    enums.ConstrType.CONSTR_NOTNULL: (
        "NOT NULL",
        "add a nullable column; NOT NULL columns can only be declared in CREATE TABLE",
    ),
    enums.ConstrType.CONSTR_IDENTITY: (
        "GENERATED AS IDENTITY",
        "declare identity columns in CREATE TABLE",
    ),
    enums.ConstrType.CONSTR_GENERATED: (
        "GENERATED ALWAYS AS",
        "declare generated columns in CREATE TABLE",
    ),
    enums.ConstrType.CONSTR_FOREIGN: (
        "REFERENCES",
        "add the column, then ADD CONSTRAINT ... FOREIGN KEY ... NOT VALID "
        "and ALTER TABLE ASYNC ... VALIDATE CONSTRAINT",
    ),
    enums.ConstrType.CONSTR_PRIMARY: (
        "PRIMARY KEY",
        "add the column, then CREATE UNIQUE INDEX ASYNC",
    ),
    enums.ConstrType.CONSTR_UNIQUE: ("UNIQUE", "add the column, then CREATE UNIQUE INDEX ASYNC"),
    enums.ConstrType.CONSTR_CHECK: (
        "CHECK",
        "add the column, then ADD CONSTRAINT ... CHECK (...) NOT VALID",
    ),
}


def _column_problem(column: ast.ColumnDef, *, adding: bool) -> Rejection | None:
    names = _type_names(column.typeName)
    if len(names) == 1 and names[0] in _SERIAL_TYPES:
        # DSQL has no serial pseudo-types at all, so it reports an unknown type.
        return _refuse(
            f'type "{names[0]}" does not exist',
            "use bigint GENERATED BY DEFAULT AS IDENTITY (CACHE 1), "
            "or uuid DEFAULT gen_random_uuid()",
            _UNDEFINED_OBJECT,
        )
    if column.typeName is not None and column.typeName.arrayBounds:
        return _refuse(
            f"datatype {_type_display(names)}[] not supported",
            "store the values as json/jsonb, or in a table of their own",
        )
    if names and names[-1] in _RUNTIME_ONLY_TYPES:
        return _refuse(
            f"datatype {names[-1]} not supported",
            "store the address as text and cast it in queries",
        )
    if column.collClause is not None:
        return _refuse("COLLATE clause not supported", "DSQL uses the C collation only")
    if column.compression:
        return _refuse("COMPRESSION clause not supported", "DSQL compresses text with lz4 itself")
    problem = _declared_size_problem(column.typeName, names)
    if problem is not None:
        return problem
    for constraint in column.constraints or ():
        if not isinstance(constraint, ast.Constraint) or constraint.contype is None:
            continue
        if adding and constraint.contype in _ADDED_COLUMN_CONSTRAINTS:
            _what, hint = _ADDED_COLUMN_CONSTRAINTS[constraint.contype]
            return _refuse("ALTER TABLE ADD COLUMN with constraint not supported", hint)
        if constraint.contype == enums.ConstrType.CONSTR_IDENTITY:
            problem = _identity_problem(constraint, names)
            if problem is not None:
                return problem
    return None


# --------------------------------------------------------------------------
# Session parameters and isolation levels


_SETTABLE = frozenset(
    {
        "search_path",
        "application_name",
        "client_encoding",
        "datestyle",
        "timezone",
        "intervalstyle",
        "extra_float_digits",
        "bytea_output",
        # client_min_messages is refused by DSQL (pgAdmin issue 9433, Dec 2025).
        "standard_conforming_strings",
        "transaction_isolation",
        "default_transaction_isolation",
        "transaction_read_only",
        # default_transaction_read_only is refused, also as a startup parameter; SET
        # SESSION CHARACTERISTICS AS TRANSACTION READ ONLY works (pistachio DSQL.md).
        "plan_cache_mode",
        # A planner switch; asyncpg turns it off around its type introspection.
        "jit",
        "random_page_cost",
        "seq_page_cost",
        "join_collapse_limit",
        "from_collapse_limit",
    }
)
_ISOLATION_PARAMETERS = frozenset({"transaction_isolation", "default_transaction_isolation"})


def _settable(parameter: str) -> bool:
    return (
        parameter in _SETTABLE
        or parameter.startswith(("enable_", "geqo"))
        or (parameter.startswith("cpu_") and parameter.endswith("_cost"))
    )


def _isolation_problem(level: str | None) -> Rejection | None:
    if level is None or level.lower() == "repeatable read":
        return None
    return _refuse(
        f"unsupported isolation level: {level.lower()}",
        "DSQL runs every transaction at REPEATABLE READ",
    )


def _parameter_problem(parameter: str, value: str | None) -> Rejection | None:
    parameter = parameter.lower()
    if not _settable(parameter):
        # DSQL's own wording, double quotes included (seen on a live cluster for
        # statement_timeout, 2026-08-18, and default_transaction_read_only).
        return _refuse(
            f'setting configuration parameter "{parameter}" not supported', _PARAMETER_HINT
        )
    if parameter in _ISOLATION_PARAMETERS:
        return _isolation_problem(value)
    return None


def _transaction_modes(options: Sequence[Any] | None) -> tuple[Rejection | None, bool | None]:
    rejection: Rejection | None = None
    read_only: bool | None = None
    for option in options or ():
        if not isinstance(option, ast.DefElem):
            continue
        if option.defname == "transaction_isolation" and rejection is None:
            rejection = _isolation_problem(_sval(option.arg))
        elif option.defname == "transaction_read_only":
            read_only = bool(_number(option.arg))
    return rejection, read_only


# --------------------------------------------------------------------------
# Per-statement classification


@dataclass(frozen=True, slots=True)
class _Result:
    kind: Kind
    rejection: Rejection | None = None
    async_job: AsyncJob | None = None
    job_id_literal: str | None = None
    read_only: bool | None = None


@dataclass(frozen=True, slots=True)
class _Context:
    sql: str
    tokens: Sequence[Token]  # this statement's tokens, offsets into sql
    async_start: int | None  # offset of the ASYNC keyword this statement had
    facts: _Facts

    def without_async(self) -> str:
        """The statement as written, minus ASYNC and the trailing semicolon."""
        body = [t for t in self.tokens if t.name != _SEMICOLON]
        start, end = body[0].start, body[-1].end + 1
        if self.async_start is None:
            return self.sql[start:end]
        head = self.sql[start : self.async_start].rstrip()
        tail = self.sql[self.async_start + len("ASYNC") : end].lstrip()
        return f"{head} {tail}"

    def nested(self) -> _Context:
        return _Context(self.sql, self.tokens, None, self.facts)


def _wait_for_job(call: object) -> tuple[bool, str | None]:
    """Whether ``call`` is sys.wait_for_job(x), and x when it is a string constant."""
    if not isinstance(call, ast.FuncCall) or _function_name(call) != ("sys", "wait_for_job"):
        return False, None
    args = call.args or ()
    arg = args[0] if len(args) == 1 else None
    while isinstance(arg, ast.TypeCast):
        arg = arg.arg
    return True, _sval(arg)


def _select(stmt: ast.SelectStmt, ctx: _Context) -> _Result:
    if stmt.intoClause is not None:
        problem = _persistence_problem(stmt.intoClause.rel, "tables")
        return _Result(Kind.DDL, problem or _refuse("SELECT INTO is not supported", _CTAS_HINT))
    return _Result(Kind.WRITE if ctx.facts.writes else Kind.READ)


def _call(stmt: ast.CallStmt, ctx: _Context) -> _Result:
    is_wait, job_id = _wait_for_job(stmt.funccall)
    if is_wait:
        return _Result(Kind.WAIT_FOR_JOB, job_id_literal=job_id)
    # A procedure may change data, so treat it as a write.
    return _Result(Kind.WRITE)


def _is_true(arg: object) -> bool:
    if arg is None:
        return True
    text = _sval(arg)
    if text is not None:
        return text.lower() not in ("false", "off", "no", "0")
    return bool(_number(arg))


def _explain(stmt: ast.ExplainStmt, ctx: _Context) -> _Result:
    if stmt.query is None:
        return _Result(Kind.READ)
    inner = _classify(stmt.query, ctx)
    analyze = _option(stmt.options, "analyze")
    runs = analyze is not None and _is_true(analyze.arg)
    kind = inner.kind if runs and inner.kind in (Kind.WRITE, Kind.DDL) else Kind.READ
    return _Result(kind, inner.rejection)


_TS = enums.TransactionStmtKind
_TRANSACTION_REFUSALS: dict[enums.TransactionStmtKind, tuple[Kind, Rejection]] = {
    _TS.TRANS_STMT_SAVEPOINT: (
        Kind.SESSION,
        _refuse("SAVEPOINT is not supported", "retry the whole transaction instead"),
    ),
    _TS.TRANS_STMT_RELEASE: (
        Kind.SESSION,
        _refuse("RELEASE SAVEPOINT is not supported", "retry the whole transaction instead"),
    ),
    _TS.TRANS_STMT_ROLLBACK_TO: (
        Kind.SESSION,
        _refuse("ROLLBACK TO SAVEPOINT is not supported", "retry the whole transaction instead"),
    ),
    _TS.TRANS_STMT_PREPARE: (
        Kind.COMMIT,
        _refuse("PREPARE TRANSACTION is not supported", "use COMMIT"),
    ),
    _TS.TRANS_STMT_COMMIT_PREPARED: (Kind.COMMIT, _refuse("COMMIT PREPARED is not supported")),
    _TS.TRANS_STMT_ROLLBACK_PREPARED: (
        Kind.ROLLBACK,
        _refuse("ROLLBACK PREPARED is not supported"),
    ),
}


def _transaction(stmt: ast.TransactionStmt, ctx: _Context) -> _Result:
    kind = stmt.kind
    if kind in (_TS.TRANS_STMT_BEGIN, _TS.TRANS_STMT_START):
        problem, read_only = _transaction_modes(stmt.options)
        return _Result(Kind.BEGIN, problem, read_only=read_only)
    if kind == _TS.TRANS_STMT_COMMIT:
        chain = _refuse("COMMIT AND CHAIN is not supported", "use COMMIT, then BEGIN")
        return _Result(Kind.COMMIT, chain if stmt.chain else None)
    if kind == _TS.TRANS_STMT_ROLLBACK:
        chain = _refuse("ROLLBACK AND CHAIN is not supported", "use ROLLBACK, then BEGIN")
        return _Result(Kind.ROLLBACK, chain if stmt.chain else None)
    refused_kind, rejection = (
        _TRANSACTION_REFUSALS[kind] if kind is not None else (Kind.SESSION, None)
    )
    return _Result(refused_kind, rejection)


_VS = enums.VariableSetKind


def _variable_set(stmt: ast.VariableSetStmt, ctx: _Context) -> _Result:
    kind = stmt.kind
    if kind == _VS.VAR_RESET_ALL:
        return _Result(Kind.SESSION)
    if kind == _VS.VAR_SET_MULTI:  # SET TRANSACTION / SET SESSION CHARACTERISTICS
        problem, _read_only = _transaction_modes(stmt.args)
        return _Result(Kind.SESSION, problem)
    name = (stmt.name or "").lower()
    if name == "session_authorization" and kind in (_VS.VAR_SET_DEFAULT, _VS.VAR_RESET):
        return _Result(Kind.SESSION)
    args = stmt.args or ()
    value = _sval(args[0]) if kind == _VS.VAR_SET_VALUE and args else None
    return _Result(Kind.SESSION, _parameter_problem(name, value))


def _deallocate(stmt: ast.DeallocateStmt, ctx: _Context) -> _Result:
    if stmt.isall:
        return _Result(Kind.SESSION)
    return _Result(
        Kind.SESSION,
        _refuse("DEALLOCATE of a single prepared statement is not supported", "use DEALLOCATE ALL"),
    )


def _prepare_statement(stmt: ast.PrepareStmt, ctx: _Context) -> _Result:
    inner = _classify(stmt.query, ctx) if stmt.query is not None else _Result(Kind.READ)
    return _Result(
        inner.kind,
        _refuse("PREPARE is not supported", "use the driver's protocol-level prepared statements"),
    )


def _copy(stmt: ast.CopyStmt, ctx: _Context) -> _Result:
    return _Result(Kind.WRITE if stmt.is_from else Kind.READ)


def _vacuum(stmt: ast.VacuumStmt, ctx: _Context) -> _Result:
    if stmt.is_vacuumcmd:
        return _Result(
            Kind.DDL,
            _refuse("VACUUM is not supported", "DSQL maintains storage without VACUUM"),
        )
    # ANALYZE only refreshes planner statistics: no schema change, no user data.
    return _Result(Kind.READ)


def _create_table(stmt: ast.CreateStmt, ctx: _Context) -> _Result:
    return _Result(Kind.DDL, _create_table_problem(stmt))


def _create_table_problem(stmt: ast.CreateStmt) -> Rejection | None:
    problem = _persistence_problem(stmt.relation, "tables")
    if problem is not None:
        return problem
    if stmt.partbound is not None:
        return _refuse(
            "PARTITION OF clause not supported for CREATE TABLE",
            "DSQL distributes tables by itself",
        )
    if stmt.partspec is not None:
        return _refuse(
            "PARTITION BY clause not supported for CREATE TABLE",
            "DSQL distributes tables by itself",
        )
    if stmt.inhRelations:
        return _refuse("INHERITS is not supported", "declare every column in the table itself")
    if stmt.options:
        return _refuse("storage parameters (WITH ...) are not supported", "leave WITH out")
    if stmt.tablespacename:
        return _refuse("TABLESPACE is not supported", "leave TABLESPACE out")
    for element in stmt.tableElts or ():
        if isinstance(element, ast.ColumnDef):
            problem = _column_problem(element, adding=False)
            if problem is not None:
                return problem
        elif isinstance(element, ast.Constraint):
            if element.contype == enums.ConstrType.CONSTR_EXCLUSION:
                return _refuse("exclusion constraints are not supported")
            if len(element.keys or ()) > _MAX_INDEX_KEYS:
                # A key is an index on DSQL, with an index's limit (agent-plugins
                # troubleshooting.md: "Columns per index or primary key").
                return _TOO_MANY_KEYS
    return None


def _create_table_as(stmt: ast.CreateTableAsStmt, ctx: _Context) -> _Result:
    if stmt.objtype == enums.ObjectType.OBJECT_MATVIEW:
        return _Result(
            Kind.DDL,
            _refuse("unsupported statement: CreateTableAs", "use a regular view"),
        )
    rel = stmt.into.rel if stmt.into is not None else None
    problem = _persistence_problem(rel, "tables")
    return _Result(Kind.DDL, problem or _refuse("CREATE TABLE AS is not supported", _CTAS_HINT))


def _create_view(stmt: ast.ViewStmt, ctx: _Context) -> _Result:
    return _Result(Kind.DDL, _persistence_problem(stmt.view, "views"))


def _create_sequence(stmt: ast.CreateSeqStmt, ctx: _Context) -> _Result:
    problem = (
        _persistence_problem(stmt.sequence, "sequences")
        or _sequence_type_problem(stmt.options)
        or _cache_problem(stmt.options, "CREATE SEQUENCE")
    )
    return _Result(Kind.DDL, problem)


def _alter_sequence(stmt: ast.AlterSeqStmt, ctx: _Context) -> _Result:
    problem = _sequence_type_problem(stmt.options) or _cache_problem(stmt.options, None)
    return _Result(Kind.DDL, problem)


def _create_function(stmt: ast.CreateFunctionStmt, ctx: _Context) -> _Result:
    if stmt.is_procedure:
        # Refused in any language (agent-plugins troubleshooting.md, observed 2026-10-01).
        return _Result(
            Kind.DDL, _refuse("PROCEDURE is not supported", "write a LANGUAGE sql function")
        )
    language = _option(stmt.options, "language")
    name = _sval(language.arg) if language is not None else None
    if name is None or name.lower() == "sql":
        return _Result(Kind.DDL)
    return _Result(
        Kind.DDL,
        _refuse(
            f"CREATE FUNCTION with language {name.lower()} not supported",
            "write it in LANGUAGE sql",
        ),
    )


def _create_schema(stmt: ast.CreateSchemaStmt, ctx: _Context) -> _Result:
    for element in stmt.schemaElts or ():
        problem = _classify(element, ctx.nested()).rejection
        if problem is not None:
            return _Result(Kind.DDL, problem)
    return _Result(Kind.DDL)


def _define(stmt: ast.DefineStmt, ctx: _Context) -> _Result:
    if stmt.kind == enums.ObjectType.OBJECT_TYPE:
        return _create_type(stmt, ctx)
    return _Result(Kind.DDL)


def _create_type(stmt: ast.Node, ctx: _Context) -> _Result:
    return _Result(
        Kind.DDL,
        _refuse(
            _unsupported_statement(stmt),
            "use a text column with a CHECK constraint instead of an enum",
        ),
    )


def _unsupported_statement(stmt: ast.Node) -> str:
    """DSQL's words for a statement it has no support for at all: PostgreSQL's node name.

    Recorded for CreateEnum, CompositeType, CreatePolicy, CreateExtension, Createdb,
    CreateTableAs and Truncate (pistachio DSQL.md; agent-plugins troubleshooting.md).
    """
    name = type(stmt).__name__
    return f"unsupported statement: {name.removesuffix('Stmt')}"


def _unsupported(kind: Kind, hint: str | None = None) -> Callable[[Any, _Context], _Result]:
    def handler(stmt: Any, ctx: _Context) -> _Result:
        return _Result(kind, _refuse(_unsupported_statement(stmt), hint))

    return handler


def _alter_statistics(stmt: ast.AlterStatsStmt, ctx: _Context) -> _Result:
    target = _number(stmt.stxstattarget)
    if target is None or target <= _MAX_STATISTICS_TARGET:
        return _Result(Kind.DDL)
    # DSQL's words (agent-plugins troubleshooting.md, observed 2026-10-01).
    return _Result(
        Kind.DDL,
        _refuse(
            f"statistics target {target} exceeds maximum allowed value of {_MAX_STATISTICS_TARGET}",
            None,
            _INVALID_VALUE,
        ),
    )


_MAX_STATISTICS_TARGET = 100


def _alter_domain(stmt: ast.AlterDomainStmt, ctx: _Context) -> _Result:
    # A live cluster refused both, without a recorded message (pistachio DSQL.md).
    words = _DOMAIN_REFUSALS.get(stmt.subtype or "")
    if words is None:
        return _Result(Kind.DDL)
    return _Result(Kind.DDL, _refuse(f"unsupported ALTER DOMAIN {words} statement"))


_DOMAIN_REFUSALS = {"C": "ADD CONSTRAINT", "O": "SET NOT NULL"}


def _rename(stmt: ast.RenameStmt, ctx: _Context) -> _Result:
    # ALTER INDEX ... RENAME included: a live cluster renamed an index (pistachio
    # DSQL.md, 2026-10-10), though AWS documents no ALTER INDEX at all.
    return _Result(Kind.DDL)


def _drop(stmt: ast.DropStmt, ctx: _Context) -> _Result:
    if stmt.concurrent:
        # DSQL's words even for a DROP INDEX CONCURRENTLY sent on its own (pistachio
        # DSQL.md, 2026-10-10): it never runs one.
        return _Result(
            Kind.DDL,
            _refuse(
                "DROP INDEX CONCURRENTLY must be first action in transaction", "use DROP INDEX"
            ),
        )
    return _Result(Kind.DDL)


_ALTER_INDEX = _refuse(
    "ALTER INDEX is not supported", "drop the index and create it again with CREATE INDEX ASYNC"
)


# --------------------------------------------------------------------------
# CREATE INDEX ASYNC


def _writes_using(ctx: _Context) -> bool:
    """Whether USING <method> was written; the parser fills in btree either way."""
    seen_on = False
    for token in ctx.tokens:
        if token.name == "ON":
            seen_on = True
        elif seen_on and token.name == _OPEN_PAREN:
            return False
        elif seen_on and token.name == "USING":
            return True
    return False


_CONCURRENT_INDEX = _refuse(
    "CONCURRENTLY not supported for CREATE INDEX",
    "use CREATE INDEX ASYNC: it builds the index in the background",
)


def _index_problem(stmt: ast.IndexStmt, ctx: _Context) -> Rejection | None:
    if _writes_using(ctx):
        return _refuse("USING not supported for CREATE INDEX", "leave USING out: indexes are btree")
    keys = [p for p in stmt.indexParams or () if isinstance(p, ast.IndexElem)]
    for key in keys:
        if key.opclass:
            return _refuse("opclass not supported for index keys", "leave the operator class out")
        if key.ordering in (enums.SortByDir.SORTBY_ASC, enums.SortByDir.SORTBY_DESC):
            return _refuse(
                "specifying sort order not supported for index keys",
                "leave ASC/DESC out; NULLS FIRST/LAST may stay",
            )
    if len(keys) > _MAX_INDEX_KEYS:
        return _TOO_MANY_KEYS
    for included in stmt.indexIncludingParams or ():
        if isinstance(included, ast.IndexElem) and included.expr is not None:
            return _refuse("expressions in INCLUDE are not supported", "INCLUDE plain columns only")
    if stmt.tableSpace:
        return _refuse("TABLESPACE is not supported", "leave TABLESPACE out")
    return None


def _key_name(element: object) -> str:
    if not isinstance(element, ast.IndexElem):
        return "expr"
    if element.name:
        return element.name
    # PostgreSQL names an expression column after its function, if it has one.
    if isinstance(element.expr, ast.FuncCall):
        return _function_name(element.expr)[1]
    return "expr"


def _default_index_name(stmt: ast.IndexStmt) -> str:
    """PostgreSQL's choice of name for an unnamed index, without collision suffixes."""
    elements = (*(stmt.indexParams or ()), *(stmt.indexIncludingParams or ()))
    columns = [_key_name(element) for element in elements]
    table = stmt.relation.relname if stmt.relation is not None else ""
    return f"{table}_{'_'.join(columns)}_idx"


def _relation_as_written(rel: ast.RangeVar | None) -> str:
    if rel is None or not rel.relname:
        return ""
    return _relation_name(rel.schemaname, rel.relname)


def _index(stmt: ast.IndexStmt, ctx: _Context) -> _Result:
    if stmt.concurrent:
        return _Result(
            Kind.ASYNC_DDL if ctx.async_start is not None else Kind.DDL, _CONCURRENT_INDEX
        )
    if ctx.async_start is None:
        return _Result(
            Kind.DDL,
            _refuse(
                "unsupported mode. please use CREATE INDEX ASYNC.",
                "CREATE INDEX ASYNC builds the index in the background and returns a job_id "
                "to wait for with CALL sys.wait_for_job(job_id)",
            ),
        )
    problem = _index_problem(stmt, ctx)
    if problem is not None:
        return _Result(Kind.ASYNC_DDL, problem)
    job = AsyncJob(
        "INDEX_BUILD",
        stmt.idxname or _default_index_name(stmt),
        _relation_as_written(stmt.relation),
        ctx.without_async(),
    )
    return _Result(Kind.ASYNC_DDL, async_job=job)


# --------------------------------------------------------------------------
# ALTER TABLE


_AT = enums.AlterTableType
_ALLOWED_SUBCOMMANDS = frozenset(
    {
        _AT.AT_DropColumn,
        _AT.AT_DropNotNull,
        _AT.AT_ColumnDefault,
        _AT.AT_DropConstraint,
        _AT.AT_ChangeOwner,
        _AT.AT_DropIdentity,
        _AT.AT_DropExpression,
        _AT.AT_SetStorage,
        # ALTER CONSTRAINT ... [NOT] DEFERRABLE is in AWS's ALTER TABLE syntax page.
        _AT.AT_AlterConstraint,
        # DSQL accepts the ALL and USER forms; there are no triggers to name.
        _AT.AT_EnableTrigAll,
        _AT.AT_DisableTrigAll,
        _AT.AT_EnableTrigUser,
        _AT.AT_DisableTrigUser,
    }
)
_SUBCOMMAND_NAMES: dict[enums.AlterTableType, tuple[str, str | None]] = {
    _AT.AT_SetNotNull: (
        "ALTER COLUMN ... SET NOT NULL",
        "NOT NULL columns can only be declared in CREATE TABLE",
    ),
    _AT.AT_AlterColumnType: (
        "ALTER COLUMN ... SET DATA TYPE",
        "add a new column, copy the data over and drop the old column",
    ),
    _AT.AT_SetCompression: ("ALTER COLUMN ... SET COMPRESSION", "DSQL manages compression"),
    _AT.AT_SetExpression: ("ALTER COLUMN ... SET EXPRESSION", None),
    _AT.AT_SetOptions: ("ALTER COLUMN ... SET (...)", None),
    _AT.AT_ResetOptions: ("ALTER COLUMN ... RESET (...)", None),
    _AT.AT_ClusterOn: ("CLUSTER ON", None),
    _AT.AT_DropCluster: ("SET WITHOUT CLUSTER", None),
    _AT.AT_SetLogged: ("SET LOGGED", None),
    _AT.AT_SetUnLogged: ("SET UNLOGGED", None),
    _AT.AT_SetAccessMethod: ("SET ACCESS METHOD", None),
    _AT.AT_SetTableSpace: ("SET TABLESPACE", None),
    _AT.AT_SetRelOptions: ("SET (...)", None),
    _AT.AT_ResetRelOptions: ("RESET (...)", None),
    _AT.AT_EnableTrig: ("ENABLE TRIGGER", None),
    _AT.AT_EnableAlwaysTrig: ("ENABLE ALWAYS TRIGGER", None),
    _AT.AT_EnableReplicaTrig: ("ENABLE REPLICA TRIGGER", None),
    _AT.AT_DisableTrig: ("DISABLE TRIGGER", None),
    _AT.AT_EnableRule: ("ENABLE RULE", None),
    _AT.AT_EnableAlwaysRule: ("ENABLE ALWAYS RULE", None),
    _AT.AT_EnableReplicaRule: ("ENABLE REPLICA RULE", None),
    _AT.AT_DisableRule: ("DISABLE RULE", None),
    _AT.AT_AddInherit: ("INHERIT", None),
    _AT.AT_DropInherit: ("NO INHERIT", None),
    _AT.AT_AddOf: ("OF", None),
    _AT.AT_DropOf: ("NOT OF", None),
    _AT.AT_ReplicaIdentity: ("REPLICA IDENTITY", None),
    _AT.AT_EnableRowSecurity: ("ENABLE ROW SECURITY", None),
    _AT.AT_DisableRowSecurity: ("DISABLE ROW SECURITY", None),
    _AT.AT_ForceRowSecurity: ("FORCE ROW SECURITY", None),
    _AT.AT_NoForceRowSecurity: ("NO FORCE ROW SECURITY", None),
    _AT.AT_AttachPartition: ("ATTACH PARTITION", None),
    _AT.AT_DetachPartition: ("DETACH PARTITION", None),
    _AT.AT_DetachPartitionFinalize: ("DETACH PARTITION ... FINALIZE", None),
    _AT.AT_GenericOptions: ("OPTIONS (...)", None),
}
_ALTER_OBJECTS = {
    enums.ObjectType.OBJECT_VIEW: "ALTER VIEW",
    enums.ObjectType.OBJECT_SEQUENCE: "ALTER SEQUENCE",
    enums.ObjectType.OBJECT_FOREIGN_TABLE: "ALTER FOREIGN TABLE",
}
_VIEW_OPTIONS = frozenset({_AT.AT_SetRelOptions, _AT.AT_ResetRelOptions})


# DSQL names every ALTER TABLE form it refuses this way (pistachio DSQL.md; agent-plugins
# troubleshooting.md, observed 2026-10-01).
_UNSUPPORTED_ADD_CONSTRAINT = "unsupported ALTER TABLE ADD CONSTRAINT statement"


def _added_constraint_problem(constraint: object, table: str) -> Rejection | None:
    if not isinstance(constraint, ast.Constraint):
        return None
    kind = constraint.contype
    if kind in (enums.ConstrType.CONSTR_FOREIGN, enums.ConstrType.CONSTR_CHECK):
        if constraint.skip_validation:
            return None
        what = "FOREIGN KEY" if kind == enums.ConstrType.CONSTR_FOREIGN else "CHECK"
        name = constraint.conname or "<constraint>"
        return _refuse(
            _UNSUPPORTED_ADD_CONSTRAINT,
            f"add the {what} with NOT VALID, then " + _VALIDATE_HINT.format(table=table, name=name),
        )
    if kind == enums.ConstrType.CONSTR_UNIQUE and constraint.indexname:
        # UNIQUE USING INDEX over a valid unique index built with CREATE UNIQUE INDEX
        # ASYNC: in AWS's ALTER TABLE grammar, and applied on a live cluster
        # (pistachio DSQL.md).
        return None
    if kind in (enums.ConstrType.CONSTR_PRIMARY, enums.ConstrType.CONSTR_UNIQUE):
        what = "PRIMARY KEY" if kind == enums.ConstrType.CONSTR_PRIMARY else "UNIQUE"
        return _refuse(
            _UNSUPPORTED_ADD_CONSTRAINT,
            f"declare the {what} in CREATE TABLE; for UNIQUE, build CREATE UNIQUE INDEX ASYNC "
            "and add it with UNIQUE USING INDEX",
        )
    if kind == enums.ConstrType.CONSTR_EXCLUSION:
        return _refuse("exclusion constraints are not supported")
    return None


def _subcommand_problem(cmd: ast.AlterTableCmd, verb: str, table: str) -> Rejection | None:
    subtype = cmd.subtype
    if subtype in _ALLOWED_SUBCOMMANDS:
        return None
    if verb == "ALTER VIEW" and subtype in _VIEW_OPTIONS:
        # A view's SET (...) and RESET (...) work on a live cluster (pistachio DSQL.md,
        # 2026-10-10).
        return None
    if subtype == _AT.AT_AddColumn:
        if isinstance(cmd.def_, ast.ColumnDef):
            return _column_problem(cmd.def_, adding=True)
        return None
    if subtype == _AT.AT_AddConstraint:
        return _added_constraint_problem(cmd.def_, table)
    if subtype == _AT.AT_AddIdentity:
        if isinstance(cmd.def_, ast.Constraint):
            return _identity_problem(cmd.def_, ())
        return None
    if subtype == _AT.AT_SetIdentity:
        return _cache_problem(cmd.def_ if isinstance(cmd.def_, tuple) else None, None)
    if subtype == _AT.AT_SetStatistics:
        # Refused at any value (agent-plugins troubleshooting.md, observed 2026-10-01).
        return _refuse(f"unsupported {verb} ALTER COLUMN ... SET STATISTICS statement")
    if subtype == _AT.AT_ValidateConstraint:
        return _refuse(
            f"unsupported {verb} VALIDATE CONSTRAINT statement",
            _VALIDATE_HINT.format(table=table, name=cmd.name or "<constraint>"),
        )
    words, hint = (
        _SUBCOMMAND_NAMES.get(subtype, (subtype.name, None)) if subtype else ("this form", None)
    )
    return _refuse(f"unsupported {verb} {words} statement", hint)


def _alter_table(stmt: ast.AlterTableStmt, ctx: _Context) -> _Result:
    if stmt.objtype == enums.ObjectType.OBJECT_INDEX:
        return _Result(Kind.DDL, _ALTER_INDEX)
    if stmt.objtype == enums.ObjectType.OBJECT_MATVIEW:
        return _Result(Kind.DDL, _refuse("materialized views are not supported"))
    table = _relation_as_written(stmt.relation)
    cmds = [c for c in stmt.cmds or () if isinstance(c, ast.AlterTableCmd)]
    if ctx.async_start is not None:
        if len(cmds) == 1 and cmds[0].subtype == _AT.AT_ValidateConstraint and cmds[0].name:
            job = AsyncJob("VALIDATE_CONSTRAINT", cmds[0].name, table, ctx.without_async())
            return _Result(Kind.ASYNC_DDL, async_job=job)
        return _Result(Kind.ASYNC_DDL, _ASYNC_ONLY_VALIDATE)
    verb = _ALTER_OBJECTS.get(stmt.objtype, "ALTER TABLE") if stmt.objtype else "ALTER TABLE"
    for cmd in cmds:
        problem = _subcommand_problem(cmd, verb, table)
        if problem is not None:
            return _Result(Kind.DDL, problem)
    return _Result(Kind.DDL)


_ASYNC_ONLY_VALIDATE = _refuse(
    "ALTER TABLE ASYNC supports only VALIDATE CONSTRAINT",
    "run other changes as ALTER TABLE without ASYNC",
)


# --------------------------------------------------------------------------
# Dispatch


def _fixed(kind: Kind, message: str, hint: str | None = None) -> Callable[[Any, _Context], _Result]:
    result = _Result(kind, _refuse(message, hint))

    def handler(stmt: Any, ctx: _Context) -> _Result:
        return result

    return handler


def _always(kind: Kind) -> Callable[[Any, _Context], _Result]:
    result = _Result(kind)

    def handler(stmt: Any, ctx: _Context) -> _Result:
        return result

    return handler


def _writes(stmt: Any, ctx: _Context) -> _Result:
    return _Result(Kind.WRITE)


_NO_LISTEN = "DSQL has no LISTEN/NOTIFY; use a message queue"
_NO_CURSOR = "page with LIMIT and a WHERE condition on the last key instead"
_ONE_DATABASE = "a cluster has one database, postgres; use schemas to separate data"


def _grant(node: ast.GrantStmt, ctx: _Context) -> _Result:
    # Privileges on DSQL's own schemas cannot be changed: "feature not supported on
    # system entity" for GRANT ... ON SCHEMA public (a live run, 2026-09-23).
    if node.objtype == enums.ObjectType.OBJECT_SCHEMA and any(
        getattr(name, "sval", None) in ("public", "sys") for name in node.objects or ()
    ):
        return _Result(Kind.DDL, _refuse("feature not supported on system entity"))
    return _Result(Kind.DDL)


_HANDLERS: dict[type, Callable[[Any, _Context], _Result]] = {
    ast.SelectStmt: _select,
    ast.InsertStmt: _writes,
    ast.UpdateStmt: _writes,
    ast.DeleteStmt: _writes,
    ast.MergeStmt: _writes,
    ast.CallStmt: _call,
    # EXECUTE runs whatever was prepared, which may write.
    ast.ExecuteStmt: _writes,
    ast.CopyStmt: _copy,
    ast.ExplainStmt: _explain,
    ast.VariableShowStmt: _always(Kind.READ),
    ast.TransactionStmt: _transaction,
    ast.VariableSetStmt: _variable_set,
    ast.DeallocateStmt: _deallocate,
    ast.PrepareStmt: _prepare_statement,
    ast.ClosePortalStmt: _always(Kind.SESSION),
    ast.ConstraintsSetStmt: _always(Kind.SESSION),
    ast.CheckPointStmt: _always(Kind.SESSION),
    ast.VacuumStmt: _vacuum,
    ast.CreateStmt: _create_table,
    ast.CreateTableAsStmt: _create_table_as,
    ast.ViewStmt: _create_view,
    ast.IndexStmt: _index,
    ast.AlterTableStmt: _alter_table,
    ast.RenameStmt: _rename,
    ast.DropStmt: _drop,
    ast.CreateSeqStmt: _create_sequence,
    ast.AlterSeqStmt: _alter_sequence,
    ast.CreateFunctionStmt: _create_function,
    ast.CreateSchemaStmt: _create_schema,
    ast.DefineStmt: _define,
    ast.CreateEnumStmt: _create_type,
    ast.CompositeTypeStmt: _create_type,
    ast.CreateRangeStmt: _create_type,
    ast.TruncateStmt: _unsupported(
        Kind.WRITE, "use DELETE in batches of up to 3,000 rows, or DROP TABLE and CREATE TABLE"
    ),
    ast.DoStmt: _fixed(Kind.WRITE, "DO is not supported", "DSQL runs LANGUAGE sql only"),
    ast.LockStmt: _fixed(
        Kind.SESSION, "LOCK TABLE is not supported", "DSQL uses optimistic concurrency control"
    ),
    ast.ListenStmt: _fixed(Kind.SESSION, "LISTEN is not supported", _NO_LISTEN),
    ast.UnlistenStmt: _fixed(Kind.SESSION, "UNLISTEN is not supported", _NO_LISTEN),
    ast.NotifyStmt: _fixed(Kind.SESSION, "NOTIFY is not supported", _NO_LISTEN),
    ast.DeclareCursorStmt: _fixed(Kind.READ, "DECLARE CURSOR is not supported", _NO_CURSOR),
    ast.FetchStmt: _fixed(Kind.READ, "FETCH and MOVE are not supported (no cursors)", _NO_CURSOR),
    ast.DiscardStmt: _fixed(
        Kind.SESSION,
        "DISCARD is not supported",
        "use RESET ALL for settings and DEALLOCATE ALL for prepared statements",
    ),
    ast.ClusterStmt: _fixed(Kind.DDL, "CLUSTER is not supported"),
    ast.LoadStmt: _fixed(Kind.SESSION, "LOAD is not supported"),
    ast.AlterSystemStmt: _fixed(Kind.SESSION, "ALTER SYSTEM is not supported"),
    ast.CreatedbStmt: _unsupported(Kind.DDL, _ONE_DATABASE),
    ast.DropdbStmt: _unsupported(Kind.DDL, _ONE_DATABASE),
    ast.CreateTableSpaceStmt: _fixed(Kind.DDL, "CREATE TABLESPACE is not supported"),
    ast.CreateTrigStmt: _fixed(
        Kind.DDL, "CREATE TRIGGER not supported", "move the trigger's logic into the application"
    ),
    ast.CreateEventTrigStmt: _fixed(Kind.DDL, "CREATE EVENT TRIGGER is not supported"),
    ast.CreateExtensionStmt: _unsupported(Kind.DDL),
    ast.RefreshMatViewStmt: _fixed(
        Kind.DDL, "REFRESH MATERIALIZED VIEW is not supported", "use a regular view"
    ),
    ast.CreatePolicyStmt: _unsupported(Kind.DDL),
    ast.AlterPolicyStmt: _unsupported(Kind.DDL),
    ast.AlterDomainStmt: _alter_domain,
    ast.AlterStatsStmt: _alter_statistics,
    ast.GrantStmt: _grant,
}


def _classify(node: ast.Node, ctx: _Context) -> _Result:
    if ctx.async_start is not None and not isinstance(node, (ast.IndexStmt, ast.AlterTableStmt)):
        # ALTER TABLE ASYNC t RENAME ... parses as a RenameStmt, and the like.
        return _Result(Kind.ASYNC_DDL, _ASYNC_ONLY_VALIDATE)
    handler = _HANDLERS.get(type(node))
    # The statements left over (GRANT, CREATE ROLE, COMMENT, DROP, ...) all
    # change the catalog synchronously.
    return handler(node, ctx) if handler is not None else _Result(Kind.DDL)


# sys.wait_for_job is a procedure on DSQL: only CALL runs it (live clusters, 2026-07 and
# 2026-09: aws-samples/aurora-dsql-samples#1492 and a spike report). PostgreSQL's words.
_WAIT_IS_A_PROCEDURE = _refuse(
    "sys.wait_for_job(unknown) is a procedure", "To call a procedure, use CALL.", "42809"
)


def _expression_problem(facts: _Facts, called: ast.FuncCall | None) -> Rejection | None:
    """Refusals found anywhere in the statement; ``called`` is a CALL statement's own call."""
    for strength in facts.locks:
        if strength == enums.LockClauseStrength.LCS_FORSHARE:
            return _refuse("locking clauses other than FOR UPDATE/FOR KEY SHARE are not supported")
        if strength == enums.LockClauseStrength.LCS_FORNOKEYUPDATE:
            return _refuse("locking clauses other than FOR UPDATE/FOR KEY SHARE are not supported")
    for call in facts.functions:
        schema, name = _function_name(call)
        if (schema, name) == ("sys", "wait_for_job") and call is not called:
            return _WAIT_IS_A_PROCEDURE
        if schema not in (None, "pg_catalog"):
            continue
        if name.startswith(("pg_advisory_", "pg_try_advisory_")):
            # DSQL's wording (pistachio DSQL.md; a live-cluster report quotes
            # "function pg_advisory_lock not supported"); no source records the code.
            return _refuse(
                f"function {name} not supported",
                "DSQL has no advisory locks; it uses optimistic concurrency control",
            )
        if name == "pg_backend_pid":
            # A live-cluster report (beekeeper-studio#3224); drivers read the session's id
            # from the startup reply (BackendKeyData) instead.
            return _refuse("function pg_backend_pid not supported")
        if name == "pg_notify":
            return _refuse("pg_notify() is not supported", _NO_LISTEN)
        if name == "set_config":
            args = call.args or ()
            parameter = _sval(args[0]) if args else None
            if parameter is not None:
                problem = _parameter_problem(parameter, _sval(args[1]) if len(args) > 1 else None)
                if problem is not None:
                    return problem
    return None


def _statement(node: ast.Node, ctx: _Context) -> tuple[Statement, Rejection | None]:
    result = _classify(node, ctx)
    called = node.funccall if isinstance(node, ast.CallStmt) else None
    rejection = result.rejection or _expression_problem(ctx.facts, called)
    relations = frozenset() if result.kind is Kind.WAIT_FOR_JOB else frozenset(ctx.facts.relations)
    statement = Statement(
        result.kind, relations, result.async_job, result.job_id_literal, result.read_only
    )
    return statement, rejection


_MULTI_STATEMENT_ASYNC = _refuse(
    "asynchronous DDL cannot be part of a multi-statement query",
    "send CREATE INDEX ASYNC and ALTER TABLE ASYNC as queries of their own",
)


def _check(sql: str) -> Verdict:
    prepared = _prepare(sql)
    try:
        raw_statements = parse_sql(prepared.text)
    except ParseError:
        if prepared.early is None:
            raise
        return Verdict((Statement(Kind.ASYNC_DDL, frozenset()),), prepared.early)
    entries: list[tuple[int, Statement, Rejection | None]] = []
    for raw in raw_statements:
        if raw.stmt is None:
            continue
        start = raw.stmt_location or 0
        end = start + raw.stmt_len if raw.stmt_len else len(sql)
        async_start = next((p for p in prepared.async_at if start <= p < end), None)
        ctx = _Context(sql, prepared.tokens_between(start, end), async_start, _collect(raw.stmt))
        entries.append((start, *_statement(raw.stmt, ctx)))
    iam = Statement(Kind.DDL, frozenset())
    entries.extend((start, iam, None) for start in prepared.iam)
    if not entries:
        return _EMPTY_VERDICT
    entries.sort(key=lambda entry: entry[0])
    rejection: Rejection | None = None
    for _, statement, problem in entries:
        if problem is None and len(entries) > 1 and statement.kind is Kind.ASYNC_DDL:
            problem = _MULTI_STATEMENT_ASYNC
        if problem is not None:
            rejection = problem
            break
    return Verdict(tuple(statement for _, statement, _ in entries), rejection)


@functools.lru_cache(maxsize=4096)
def check(sql: str) -> Verdict:
    """Classify ``sql`` and find the first statement DSQL would refuse.

    Never raises: text PostgreSQL cannot parse comes back as a single READ
    statement without a rejection, so that PostgreSQL reports the error.
    """
    try:
        return _check(sql)
    except ParseError:
        return _SYNTAX_ERROR_VERDICT
    except Exception:
        # A gap in these rules must not take the emulator down; PostgreSQL
        # still gets to judge the query.
        _log.warning("could not classify query %.200r; passing it through", sql, exc_info=True)
        return _SYNTAX_ERROR_VERDICT


# --------------------------------------------------------------------------
# dsql-lint


_LINT_TIMEOUT = 5.0
# dsql-lint diagnostics that are not refusals of the statement itself.
_LINT_ADVISORIES = frozenset(
    {
        # dsql-lint's parser is not PostgreSQL's: failing to parse says nothing about DSQL.
        "parse_error",
        # About the surrounding transaction, which the emulator tracks itself.
        "multi_ddl_transaction",
        "mixed_ddl_dml_transaction",
        # Rewrites of pg_dump idioms for --fix; the refusals underneath are reported
        # by their own rules, and DSQL accepts a standalone ADD GENERATED ... IDENTITY.
        "serial_sequence_idiom",
        "alter_add_unique_collapse",
        "alter_add_primary_key_collapse",
        "identity_add_generated_collapse",
        # PostgreSQL's own error is DSQL's here (NUMERIC precision n must be between 1
        # and 1000, 22023: agent-plugins limits-and-error-codes.md), not dsql-lint's.
        "numeric_bounds",
        # A live cluster renames indexes (pistachio DSQL.md, 2026-10-10); the ALTER
        # INDEX forms DSQL refuses are refused by the rules above.
        "unsupported_alter_index",
    }
)


def _find_dsql_lint() -> str | None:
    found = shutil.which("dsql-lint")
    if found is not None:
        return found
    beside = Path(sys.executable).with_name("dsql-lint")
    return str(beside) if beside.is_file() else None


def _entries(container: object, key: str) -> list[dict[str, Any]]:
    """The dict items of ``container[key]``, tolerating any other JSON shape."""
    items = container.get(key) if isinstance(container, dict) else None
    return [item for item in items if isinstance(item, dict)] if isinstance(items, list) else []


def lint_second_opinion(sql: str) -> Rejection | None:
    """Ask dsql-lint whether DSQL refuses ``sql``; None if it does not, or cannot tell."""
    executable = _find_dsql_lint()
    if executable is None:
        return None
    try:
        completed = subprocess.run(
            [executable, "--format", "json", "-"],
            input=sql,
            capture_output=True,
            text=True,
            timeout=_LINT_TIMEOUT,
            check=False,
        )
        report: object = json.loads(completed.stdout)
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    # Exit code 1 means "found something"; anything else is a usage or tool failure.
    if completed.returncode not in (0, 1):
        return None
    for file in _entries(report, "files"):
        for diagnostic in _entries(file, "diagnostics"):
            rule = diagnostic.get("rule")
            message = diagnostic.get("message")
            if not isinstance(rule, str) or not isinstance(message, str):
                continue
            # mysql_* rules only describe --dialect mysql translations.
            if rule in _LINT_ADVISORIES or rule.startswith("mysql_"):
                continue
            suggestion = diagnostic.get("suggestion")
            return _refuse(message, suggestion if isinstance(suggestion, str) else None)
    return None
