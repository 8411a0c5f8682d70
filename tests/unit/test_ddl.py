"""Compile-level tests of the auroradsql DDL and type compilers (no database)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import exc, schema
from sqlalchemy.dialects import postgresql as pg
from sqlalchemy.dialects.postgresql.named_types import CreateEnumType, DropEnumType
from sqlalchemy.engine import Dialect
from sqlalchemy.engine.mock import MockConnection

from sqlalchemy_dsql.dialect.asyncpg import AuroraDSQLDialect_asyncpg
from sqlalchemy_dsql.dialect.psycopg import AuroraDSQLDialect_psycopg
from sqlalchemy_dsql.dialect.psycopg2 import AuroraDSQLDialect_psycopg2

DIALECTS: list[type[Dialect]] = [
    AuroraDSQLDialect_asyncpg,
    AuroraDSQLDialect_psycopg,
    AuroraDSQLDialect_psycopg2,
]
SQLALCHEMY_2_1 = hasattr(sa, "CreateView")
needs_2_1 = pytest.mark.skipif(not SQLALCHEMY_2_1, reason="construct is new in SQLAlchemy 2.1")


@pytest.fixture(params=DIALECTS, ids=lambda cls: cls.driver)
def dialect(request: pytest.FixtureRequest) -> Dialect:
    dialect_cls: type[Dialect] = request.param
    return dialect_cls()


def sql(construct: Any, dialect: Dialect) -> str:
    """The compiled statement with runs of whitespace made single spaces."""
    return " ".join(str(construct.compile(dialect=dialect)).split())


@pytest.fixture
def users() -> sa.Table:
    return sa.Table(
        "users",
        sa.MetaData(),
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("email", sa.String(100)),
        sa.Column("name", sa.String(50)),
        sa.Column("org_id", sa.Integer),
        sa.Column("deleted", sa.Boolean),
    )


def create_index(dialect: Dialect, *keys: Any, **kw: Any) -> str:
    return sql(schema.CreateIndex(sa.Index("ix", *keys, **kw)), dialect)


# --------------------------------------------------------------------------
# Indexes: accepted forms


def test_plain_index_is_async(users: sa.Table, dialect: Dialect) -> None:
    assert create_index(dialect, users.c.email) == "CREATE INDEX ASYNC ix ON users (email)"


def test_unique_index_if_not_exists(users: sa.Table, dialect: Dialect) -> None:
    index = sa.Index("ix_email", users.c.email, unique=True)
    assert (
        sql(schema.CreateIndex(index, if_not_exists=True), dialect)
        == "CREATE UNIQUE INDEX ASYNC IF NOT EXISTS ix_email ON users (email)"
    )


def test_expression_key_is_parenthesised(users: sa.Table, dialect: Dialect) -> None:
    assert (
        create_index(dialect, sa.func.lower(users.c.email), users.c.name)
        == "CREATE INDEX ASYNC ix ON users ((lower(email)), name)"
    )
    assert (
        create_index(dialect, users.c.name, sa.text("lower(email)"))
        == "CREATE INDEX ASYNC ix ON users (name, (lower(email)))"
    )


def test_nulls_order_per_key(users: sa.Table, dialect: Dialect) -> None:
    assert (
        create_index(
            dialect,
            sa.nulls_first(users.c.email),
            sa.nullslast(users.c.name),
            sa.nulls_last(sa.func.lower(users.c.name)),
        )
        == "CREATE INDEX ASYNC ix ON users (email NULLS FIRST, name NULLS LAST, "
        "(lower(name)) NULLS LAST)"
    )


def test_all_options_in_grammar_order(users: sa.Table, dialect: Dialect) -> None:
    assert (
        create_index(
            dialect,
            users.c.email,
            unique=True,
            auroradsql_where=users.c.deleted.is_(False),
            auroradsql_nulls_not_distinct=True,
            auroradsql_include=["name", users.c.org_id],
        )
        == "CREATE UNIQUE INDEX ASYNC ix ON users (email) INCLUDE (name, org_id) "
        "NULLS NOT DISTINCT WHERE deleted IS false"
    )


@pytest.mark.parametrize(
    ("value", "clause"),
    [(True, " NULLS NOT DISTINCT"), (False, " NULLS DISTINCT"), (None, "")],
)
def test_nulls_not_distinct_values(
    users: sa.Table, dialect: Dialect, value: bool | None, clause: str
) -> None:
    assert (
        create_index(dialect, users.c.email, unique=True, auroradsql_nulls_not_distinct=value)
        == "CREATE UNIQUE INDEX ASYNC ix ON users (email)" + clause
    )


@pytest.mark.parametrize("prefix", ["auroradsql", "postgresql"])
def test_option_spellings_are_equivalent(users: sa.Table, dialect: Dialect, prefix: str) -> None:
    options = {
        f"{prefix}_include": ["name"],
        f"{prefix}_where": users.c.org_id > 5,
        f"{prefix}_nulls_not_distinct": True,
    }
    assert (
        create_index(dialect, users.c.email, **options)
        == "CREATE INDEX ASYNC ix ON users (email) INCLUDE (name) NULLS NOT DISTINCT "
        "WHERE org_id > 5"
    )


def test_string_where_and_both_prefixes_agreeing(users: sa.Table, dialect: Dialect) -> None:
    assert (
        create_index(
            dialect,
            users.c.email,
            auroradsql_where=sa.text("org_id > 5"),
            postgresql_where=sa.text("org_id > 5"),
            auroradsql_include=["name"],
            postgresql_include=[users.c.name],
        )
        == "CREATE INDEX ASYNC ix ON users (email) INCLUDE (name) WHERE org_id > 5"
    )


def test_code_written_for_amazons_dialect_compiles(dialect: Dialect) -> None:
    # As in the README of aurora-dsql-sqlalchemy: include as names, nulls_not_distinct.
    table = sa.Table(
        "test_tbl",
        sa.MetaData(),
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("data", sa.String(20)),
        sa.Column("name", sa.String(20)),
        sa.Column("email", sa.String(20)),
    )
    include = sa.Index("include_index", table.c.id, auroradsql_include=["name", "email"])
    distinct = sa.Index("idx_name", table.c.data, unique=True, auroradsql_nulls_not_distinct=True)
    assert (
        sql(schema.CreateIndex(include), dialect)
        == "CREATE INDEX ASYNC include_index ON test_tbl (id) INCLUDE (name, email)"
    )
    assert (
        sql(schema.CreateIndex(distinct), dialect)
        == "CREATE UNIQUE INDEX ASYNC idx_name ON test_tbl (data) NULLS NOT DISTINCT"
    )


def test_btree_is_implied(users: sa.Table, dialect: Dialect) -> None:
    for prefix in ("auroradsql", "postgresql"):
        assert (
            create_index(dialect, users.c.email, **{f"{prefix}_using": "BTREE"})
            == "CREATE INDEX ASYNC ix ON users (email)"
        )


def test_operator_class_follows_its_key(users: sa.Table, dialect: Dialect) -> None:
    assert (
        create_index(
            dialect,
            sa.nulls_first(users.c.email),
            sa.func.lower(users.c.name).label("lname"),
            postgresql_ops={"email": "text_pattern_ops", "lname": "varchar_pattern_ops"},
        )
        == "CREATE INDEX ASYNC ix ON users (email text_pattern_ops NULLS FIRST, "
        "(lower(name)) varchar_pattern_ops)"
    )


def test_index_on_table_in_schema(dialect: Dialect) -> None:
    table = sa.Table("t", sa.MetaData(), sa.Column("a", sa.Integer), schema="app")
    index = sa.Index("ix_a", table.c.a)
    assert sql(schema.CreateIndex(index), dialect) == "CREATE INDEX ASYNC ix_a ON app.t (a)"
    assert sql(schema.DropIndex(index), dialect) == "DROP INDEX app.ix_a"
    assert sql(schema.DropIndex(index, if_exists=True), dialect) == "DROP INDEX IF EXISTS app.ix_a"


def test_eight_keys_are_allowed(dialect: Dialect) -> None:
    table = sa.Table("wide", sa.MetaData(), *(sa.Column(f"c{i}", sa.Integer) for i in range(8)))
    assert sql(schema.CreateIndex(sa.Index("ix", *table.c)), dialect) == (
        "CREATE INDEX ASYNC ix ON wide (c0, c1, c2, c3, c4, c5, c6, c7)"
    )


def test_drop_index_without_concurrently(users: sa.Table, dialect: Dialect) -> None:
    index = sa.Index("ix", users.c.email, postgresql_concurrently=False)
    assert sql(schema.DropIndex(index), dialect) == "DROP INDEX ix"


# --------------------------------------------------------------------------
# Indexes: refusals


@pytest.mark.parametrize(
    ("make_key", "fragment"),
    [
        (lambda t: t.c.email.desc(), r"key 'email DESC' has an explicit DESC.*Remove \.desc\(\)"),
        (lambda t: t.c.email.asc(), r"key 'email ASC' has an explicit ASC.*Remove \.asc\(\)"),
        (
            lambda t: sa.nulls_first(t.c.email.desc()),
            "'email DESC NULLS FIRST' has an explicit DESC",
        ),
        (lambda t: sa.nulls_last(t.c.email).desc(), "'email NULLS LAST DESC' has an explicit DESC"),
        (lambda t: sa.func.lower(t.c.email).asc(), r"'lower\(email\) ASC' has an explicit ASC"),
    ],
)
def test_key_direction_refused(
    users: sa.Table, dialect: Dialect, make_key: Callable[[sa.Table], Any], fragment: str
) -> None:
    with pytest.raises(exc.CompileError, match=f'Index "ix" on table "users": .*{fragment}'):
        create_index(dialect, users.c.name, make_key(users))


@pytest.mark.parametrize(
    ("options", "pattern"),
    [
        ({"postgresql_using": "gin"}, "B-tree and rejects USING gin"),
        ({"auroradsql_using": "hash"}, "B-tree and rejects USING hash"),
        ({"postgresql_concurrently": True}, "no CREATE INDEX CONCURRENTLY.*ASYNC"),
        ({"auroradsql_concurrently": True}, "no CREATE INDEX CONCURRENTLY"),
        ({"postgresql_with": {"fillfactor": 70}}, "takes no storage parameters"),
        ({"auroradsql_with": {"fillfactor": 70}}, "takes no storage parameters"),
        ({"postgresql_tablespace": "fast"}, "no tablespaces.*tablespace='fast'"),
        ({"auroradsql_tablespace": "fast"}, "no tablespaces"),
        ({"postgresql_ops": {"nope": "text_pattern_ops"}}, r"ops names \['nope'\]"),
    ],
)
def test_index_option_refused(
    users: sa.Table, dialect: Dialect, options: dict[str, Any], pattern: str
) -> None:
    with pytest.raises(exc.CompileError, match=f'Index "ix" on table "users": .*{pattern}'):
        create_index(dialect, users.c.email, **options)


def test_more_than_eight_keys_refused(dialect: Dialect) -> None:
    table = sa.Table("wide", sa.MetaData(), *(sa.Column(f"c{i}", sa.Integer) for i in range(9)))
    with pytest.raises(
        exc.CompileError, match=r'Index "ix" on table "wide" has 9 key columns.*at most 8'
    ):
        sql(schema.CreateIndex(sa.Index("ix", *table.c)), dialect)


def test_expression_in_include_refused(users: sa.Table, dialect: Dialect) -> None:
    with pytest.raises(
        exc.CompileError,
        match=r'Index "ix" on table "users": include takes columns of the table, '
        r"not lower\(users.email\).*cannot INCLUDE an expression",
    ):
        create_index(dialect, users.c.name, auroradsql_include=[sa.func.lower(users.c.email)])


def test_unknown_include_column_refused(users: sa.Table, dialect: Dialect) -> None:
    with pytest.raises(exc.CompileError, match='include names "nope", which is not a column'):
        create_index(dialect, users.c.name, postgresql_include=["nope"])


def test_dotted_index_name_is_one_quoted_identifier(dialect: Dialect) -> None:
    # Not a schema-qualified name (which DSQL refuses): one identifier with dots in it.
    table = sa.Table("users", sa.MetaData(), sa.Column("email", sa.String(50)), schema="app")
    index = sa.Index("ix.with.dots", table.c.email)
    assert sql(schema.CreateIndex(index), dialect) == (
        'CREATE INDEX ASYNC "ix.with.dots" ON app.users (email)'
    )
    assert sql(schema.DropIndex(index), dialect) == 'DROP INDEX app."ix.with.dots"'


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ({"auroradsql_include": ["name"]}, {"postgresql_include": ["org_id"]}),
        ({"auroradsql_nulls_not_distinct": True}, {"postgresql_nulls_not_distinct": False}),
        ({"auroradsql_where": sa.text("a > 1")}, {"postgresql_where": sa.text("a > 2")}),
    ],
)
def test_conflicting_spellings_refused(
    users: sa.Table, dialect: Dialect, first: dict[str, Any], second: dict[str, Any]
) -> None:
    option = next(iter(first)).removeprefix("auroradsql_")
    with pytest.raises(
        exc.CompileError,
        match=f'Index "ix" on table "users": auroradsql_{option}=.* and '
        f"postgresql_{option}=.* disagree",
    ):
        create_index(dialect, users.c.email, **first, **second)


@pytest.mark.parametrize("prefix", ["auroradsql", "postgresql"])
def test_drop_index_concurrently_refused(users: sa.Table, dialect: Dialect, prefix: str) -> None:
    index = sa.Index("ix", users.c.email, **{f"{prefix}_concurrently": True})
    with pytest.raises(
        exc.CompileError,
        match=f'Index "ix" on table "users": Aurora DSQL has no DROP INDEX CONCURRENTLY. '
        f"Remove {prefix}_concurrently=True",
    ):
        sql(schema.DropIndex(index), dialect)


# --------------------------------------------------------------------------
# Identity columns


def create_table(dialect: Dialect, *args: Any, **kw: Any) -> str:
    return sql(schema.CreateTable(sa.Table("t", sa.MetaData(), *args, **kw)), dialect)


IDENTITY = "GENERATED BY DEFAULT AS IDENTITY (CACHE 65536)"


@pytest.mark.parametrize("type_", [sa.Integer, sa.BigInteger, sa.SmallInteger])
def test_autoincrement_primary_key_is_bigint_identity(dialect: Dialect, type_: Any) -> None:
    assert create_table(dialect, sa.Column("id", type_, primary_key=True)) == (
        f"CREATE TABLE t ( id BIGINT {IDENTITY}, PRIMARY KEY (id) )"
    )


def test_explicit_autoincrement_in_composite_key(dialect: Dialect) -> None:
    assert create_table(
        dialect,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("part", sa.Integer, primary_key=True),
    ) == (f"CREATE TABLE t ( id BIGINT {IDENTITY}, part INTEGER NOT NULL, PRIMARY KEY (id, part) )")


def test_optional_sequence_still_gives_identity(dialect: Dialect) -> None:
    column = sa.Column("id", sa.Integer, sa.Sequence("t_id_seq", optional=True), primary_key=True)
    assert create_table(dialect, column) == (
        f"CREATE TABLE t ( id BIGINT {IDENTITY}, PRIMARY KEY (id) )"
    )


def test_composite_primary_key_stays_plain(dialect: Dialect) -> None:
    assert create_table(
        dialect,
        sa.Column("a", sa.Integer, primary_key=True),
        sa.Column("b", sa.BigInteger, primary_key=True),
    ) == ("CREATE TABLE t ( a INTEGER NOT NULL, b BIGINT NOT NULL, PRIMARY KEY (a, b) )")


def test_foreign_key_primary_key_stays_plain(dialect: Dialect) -> None:
    metadata = sa.MetaData()
    sa.Table("parent", metadata, sa.Column("id", sa.BigInteger, primary_key=True))
    child = sa.Table(
        "child",
        metadata,
        sa.Column("id", sa.BigInteger, sa.ForeignKey("parent.id"), primary_key=True),
    )
    assert sql(schema.CreateTable(child), dialect) == (
        "CREATE TABLE child ( id BIGINT NOT NULL, PRIMARY KEY (id), "
        "FOREIGN KEY(id) REFERENCES parent (id) )"
    )


@pytest.mark.parametrize(
    ("parent_key", "child_type"),
    [
        (sa.Column("id", sa.Integer, primary_key=True), "BIGINT"),
        (sa.Column("id", sa.SmallInteger, sa.Identity(), primary_key=True), "BIGINT"),
        (sa.Column("id", sa.Integer, primary_key=True, autoincrement=False), "INTEGER"),
        (sa.Column("id", sa.BigInteger, primary_key=True), "INTEGER"),
    ],
    ids=["widened-autoincrement", "widened-identity", "plain-key", "declared-bigint"],
)
def test_foreign_key_follows_a_widened_key(
    dialect: Dialect, parent_key: sa.Column[Any], child_type: str
) -> None:
    metadata = sa.MetaData()
    sa.Table("parent", metadata, parent_key._copy())
    child = sa.Table(
        "child",
        metadata,
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column("parent_id", sa.Integer, sa.ForeignKey("parent.id")),
        sa.Column("owner_id", sa.ForeignKey("parent.id"), primary_key=True),
    )
    # owner_id takes its declared type from parent.id.
    owner_type = "BIGINT" if child_type == "BIGINT" else parent_key.type.compile(dialect)
    assert sql(schema.CreateTable(child), dialect) == (
        f"CREATE TABLE child ( id UUID NOT NULL, parent_id {child_type}, "
        f"owner_id {owner_type} NOT NULL, PRIMARY KEY (id, owner_id), "
        "FOREIGN KEY(parent_id) REFERENCES parent (id), "
        "FOREIGN KEY(owner_id) REFERENCES parent (id) )"
    )


@pytest.mark.parametrize(
    ("options", "default"),
    [
        ({"autoincrement": False}, ""),
        ({"server_default": sa.text("7")}, " DEFAULT 7"),
        ({"default": 7}, ""),
    ],
    ids=["autoincrement-false", "server-default", "python-default"],
)
def test_primary_key_with_its_own_values_stays_plain(
    dialect: Dialect, options: dict[str, Any], default: str
) -> None:
    column = sa.Column("id", sa.Integer, primary_key=True, **options)
    assert create_table(dialect, column) == (
        f"CREATE TABLE t ( id INTEGER{default} NOT NULL, PRIMARY KEY (id) )"
    )


def test_uuid_primary_key(dialect: Dialect) -> None:
    column = sa.Column("id", sa.Uuid, primary_key=True, server_default=sa.text("gen_random_uuid()"))
    assert create_table(dialect, column) == (
        "CREATE TABLE t ( id UUID DEFAULT gen_random_uuid() NOT NULL, PRIMARY KEY (id) )"
    )


@pytest.mark.parametrize(
    ("identity", "clause"),
    [
        (sa.Identity(), "GENERATED BY DEFAULT AS IDENTITY (CACHE 65536)"),
        (sa.Identity(cache=1), "GENERATED BY DEFAULT AS IDENTITY (CACHE 1)"),
        (sa.Identity(cache=65536), "GENERATED BY DEFAULT AS IDENTITY (CACHE 65536)"),
        (sa.Identity(cache=1_000_000), "GENERATED BY DEFAULT AS IDENTITY (CACHE 1000000)"),
        (sa.Identity(always=True), "GENERATED ALWAYS AS IDENTITY (CACHE 65536)"),
        (
            sa.Identity(start=10, increment=5, minvalue=1, maxvalue=10**9, cycle=True),
            "GENERATED BY DEFAULT AS IDENTITY (INCREMENT BY 5 START WITH 10 MINVALUE 1 "
            "MAXVALUE 1000000000 CYCLE CACHE 65536)",
        ),
        (
            sa.Identity(start=1, cache=1, cycle=False),
            "GENERATED BY DEFAULT AS IDENTITY (START WITH 1 CACHE 1 NO CYCLE)",
        ),
    ],
)
def test_explicit_identity(dialect: Dialect, identity: sa.Identity, clause: str) -> None:
    assert create_table(dialect, sa.Column("id", sa.Integer, identity, primary_key=True)) == (
        f"CREATE TABLE t ( id BIGINT {clause}, PRIMARY KEY (id) )"
    )


def test_identity_on_a_non_key_column(dialect: Dialect) -> None:
    assert create_table(
        dialect,
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column("n", sa.SmallInteger, sa.Identity(cache=1)),
    ) == (
        "CREATE TABLE t ( id UUID NOT NULL, "
        "n BIGINT GENERATED BY DEFAULT AS IDENTITY (CACHE 1), PRIMARY KEY (id) )"
    )


@pytest.mark.parametrize("cache", [2, 100, 65535])
def test_identity_cache_refused(dialect: Dialect, cache: int) -> None:
    with pytest.raises(
        exc.CompileError,
        match=f'Identity of Column "id" of table "t" has cache={cache}; Aurora DSQL accepts '
        "only CACHE 1 .* or CACHE >= 65536",
    ):
        create_table(
            dialect, sa.Column("id", sa.Integer, sa.Identity(cache=cache), primary_key=True)
        )


def test_identity_on_non_integer_refused(dialect: Dialect) -> None:
    with pytest.raises(
        exc.CompileError,
        match=r'Column "n" of table "t" has an Identity, but its type is NUMERIC\(10, 0\); '
        "Aurora DSQL generates identity values as BIGINT only",
    ):
        create_table(dialect, sa.Column("n", sa.Numeric(10, 0), sa.Identity()))


def test_numeric_autoincrement_column_refused(dialect: Dialect) -> None:
    with pytest.raises(
        exc.CompileError,
        match='Column "id" of table "t" is the table\'s autoincrement column, but its type is '
        r"NUMERIC\(10, 0\).*or set autoincrement=False",
    ):
        create_table(
            dialect, sa.Column("id", sa.Numeric(10, 0), primary_key=True, autoincrement=True)
        )


# --------------------------------------------------------------------------
# Sequences


@pytest.mark.parametrize(
    ("sequence", "expected"),
    [
        (sa.Sequence("s"), "CREATE SEQUENCE s AS BIGINT CACHE 65536"),
        (sa.Sequence("s", cache=1), "CREATE SEQUENCE s AS BIGINT CACHE 1"),
        (sa.Sequence("s", data_type=sa.BigInteger), "CREATE SEQUENCE s AS BIGINT CACHE 65536"),
        (
            sa.Sequence("s", start=100, increment=10, maxvalue=10**6, cache=70000, cycle=False),
            "CREATE SEQUENCE s AS BIGINT INCREMENT BY 10 START WITH 100 MAXVALUE 1000000 "
            "CACHE 70000 NO CYCLE",
        ),
        (sa.Sequence("s", schema="app"), "CREATE SEQUENCE app.s AS BIGINT CACHE 65536"),
    ],
)
def test_create_sequence(dialect: Dialect, sequence: sa.Sequence, expected: str) -> None:
    assert sql(schema.CreateSequence(sequence), dialect) == expected


@pytest.mark.parametrize("cache", [2, 1000, 65535])
def test_sequence_cache_refused(dialect: Dialect, cache: int) -> None:
    with pytest.raises(
        exc.CompileError,
        match=f'Sequence "s" has cache={cache}; Aurora DSQL accepts only CACHE 1.*Use cache=1 '
        "or cache=65536",
    ):
        sql(schema.CreateSequence(sa.Sequence("s", cache=cache)), dialect)


@pytest.mark.parametrize("type_", [sa.Integer, sa.SmallInteger, sa.BigInteger])
def test_sequence_integer_data_type_is_widened(dialect: Dialect, type_: Any) -> None:
    # As Amazon's dialect does (its test_int_seq): DSQL sequences are BIGINT only.
    sequence = sa.Sequence("s", data_type=type_(), start=42)
    assert sql(schema.CreateSequence(sequence), dialect) == (
        "CREATE SEQUENCE s AS BIGINT START WITH 42 CACHE 65536"
    )


@pytest.mark.parametrize(
    ("type_", "shown"), [(sa.Numeric(20, 0), "NUMERIC"), (sa.DECIMAL(10, 0), "DECIMAL")]
)
def test_sequence_data_type_refused(dialect: Dialect, type_: Any, shown: str) -> None:
    with pytest.raises(
        exc.CompileError,
        match=f'Sequence "s" is declared AS {shown}.*; Aurora DSQL sequences are BIGINT only',
    ):
        sql(schema.CreateSequence(sa.Sequence("s", data_type=type_)), dialect)


def test_column_with_sequence_keeps_its_type(dialect: Dialect) -> None:
    assert create_table(
        dialect, sa.Column("id", sa.Integer, sa.Sequence("t_id_seq"), primary_key=True)
    ) == ("CREATE TABLE t ( id INTEGER NOT NULL, PRIMARY KEY (id) )")


def test_optional_sequence_on_another_column_is_its_server_default(dialect: Dialect) -> None:
    # SQLAlchemy leaves an optional Sequence to the server and omits the column from
    # INSERTs, so without the DEFAULT the column would stay NULL.
    table = sa.Table(
        "t",
        sa.MetaData(),
        sa.Column("id", sa.BigInteger, sa.Sequence("t_seq", optional=True, schema="app")),
        sa.Column("txt", sa.String(50)),
    )
    assert sql(schema.CreateTable(table), dialect) == (
        "CREATE TABLE t ( id BIGINT DEFAULT nextval('app.t_seq'), txt VARCHAR(50) )"
    )
    assert "id" not in sql(table.insert().values(txt="x"), dialect).split("VALUES")[0]


def test_optional_sequence_yields_to_a_server_default(dialect: Dialect) -> None:
    column = sa.Column(
        "n", sa.BigInteger, sa.Sequence("s", optional=True), server_default=sa.text("7")
    )
    assert create_table(dialect, column) == "CREATE TABLE t ( n BIGINT DEFAULT 7 )"


# --------------------------------------------------------------------------
# Constraints


@pytest.fixture
def parent_child() -> tuple[sa.Table, sa.Table]:
    metadata = sa.MetaData()
    parent = sa.Table("parent", metadata, sa.Column("id", sa.BigInteger, primary_key=True))
    child = sa.Table(
        "child",
        metadata,
        sa.Column("id", sa.BigInteger, primary_key=True),
        sa.Column("parent_id", sa.BigInteger),
        sa.Column("n", sa.Integer),
    )
    return parent, child


def test_foreign_key_inline(dialect: Dialect) -> None:
    metadata = sa.MetaData()
    sa.Table("parent", metadata, sa.Column("id", sa.BigInteger, primary_key=True))
    child = sa.Table(
        "child",
        metadata,
        sa.Column("id", sa.BigInteger, primary_key=True),
        sa.Column("parent_id", sa.ForeignKey("parent.id", ondelete="CASCADE")),
        sa.Column("code", sa.String(10), unique=True),
        sa.CheckConstraint("id > 0", name="ck_positive"),
    )
    assert sql(schema.CreateTable(child), dialect) == (
        f"CREATE TABLE child ( id BIGINT {IDENTITY}, parent_id BIGINT, code VARCHAR(10), "
        "PRIMARY KEY (id), CONSTRAINT ck_positive CHECK (id > 0), "
        "FOREIGN KEY(parent_id) REFERENCES parent (id) ON DELETE CASCADE, UNIQUE (code) )"
    )


@pytest.mark.parametrize("match", ["SIMPLE", "FULL", "full"])
def test_foreign_key_match_simple_or_full(
    parent_child: tuple[sa.Table, sa.Table], dialect: Dialect, match: str
) -> None:
    _, child = parent_child
    fk = sa.ForeignKeyConstraint(["parent_id"], ["parent.id"], name="fk_parent", match=match)
    child.append_constraint(fk)
    assert sql(schema.CreateTable(child), dialect).endswith(
        f"FOREIGN KEY(parent_id) REFERENCES parent (id) MATCH {match} )"
    )


@pytest.mark.parametrize("alter", [False, True])
def test_foreign_key_match_partial_refused(
    parent_child: tuple[sa.Table, sa.Table], dialect: Dialect, alter: bool
) -> None:
    _, child = parent_child
    fk = sa.ForeignKeyConstraint(["parent_id"], ["parent.id"], name="fk_parent", match="partial")
    child.append_constraint(fk)
    construct = schema.AddConstraint(fk) if alter else schema.CreateTable(child)
    with pytest.raises(
        exc.CompileError,
        match='Foreign key "fk_parent" on table "child" has match=\'partial\': PostgreSQL '
        "does not implement MATCH PARTIAL, and neither does Aurora DSQL",
    ):
        sql(construct, dialect)


def test_added_foreign_key_is_not_valid(
    parent_child: tuple[sa.Table, sa.Table], dialect: Dialect
) -> None:
    _, child = parent_child
    fk = sa.ForeignKeyConstraint(["parent_id"], ["parent.id"], name="fk_parent")
    child.append_constraint(fk)
    assert sql(schema.AddConstraint(fk), dialect) == (
        "ALTER TABLE child ADD CONSTRAINT fk_parent FOREIGN KEY(parent_id) "
        "REFERENCES parent (id) NOT VALID"
    )


def test_not_valid_is_not_doubled(
    parent_child: tuple[sa.Table, sa.Table], dialect: Dialect
) -> None:
    _, child = parent_child
    check = sa.CheckConstraint("n > 0", name="ck_n", postgresql_not_valid=True)
    child.append_constraint(check)
    assert sql(schema.AddConstraint(check), dialect) == (
        "ALTER TABLE child ADD CONSTRAINT ck_n CHECK (n > 0) NOT VALID"
    )


def test_added_check_is_not_valid(
    parent_child: tuple[sa.Table, sa.Table], dialect: Dialect
) -> None:
    _, child = parent_child
    check = sa.CheckConstraint("n > 0", name="ck_n")
    child.append_constraint(check)
    assert sql(schema.AddConstraint(check), dialect) == (
        "ALTER TABLE child ADD CONSTRAINT ck_n CHECK (n > 0) NOT VALID"
    )


def test_use_alter_foreign_key(dialect: Dialect) -> None:
    metadata = sa.MetaData()
    sa.Table(
        "a",
        metadata,
        sa.Column("id", sa.BigInteger, primary_key=True),
        sa.Column("b_id", sa.ForeignKey("b.id", use_alter=True, name="fk_a_b")),
    )
    sa.Table(
        "b",
        metadata,
        sa.Column("id", sa.BigInteger, primary_key=True),
        sa.Column("a_id", sa.ForeignKey("a.id")),
    )
    statements = create_all(metadata, dialect)
    assert statements == [
        f"CREATE TABLE a ( id BIGINT {IDENTITY}, b_id BIGINT, PRIMARY KEY (id) )",
        f"CREATE TABLE b ( id BIGINT {IDENTITY}, a_id BIGINT, PRIMARY KEY (id), "
        "FOREIGN KEY(a_id) REFERENCES a (id) )",
        "ALTER TABLE a ADD CONSTRAINT fk_a_b FOREIGN KEY(b_id) REFERENCES b (id) NOT VALID",
    ]


@pytest.mark.parametrize(
    ("make", "pattern"),
    [
        (
            lambda: sa.UniqueConstraint("n", name="uq_n"),
            'Constraint "uq_n" on table "child": Aurora DSQL cannot add a UNIQUE constraint.*'
            "CREATE UNIQUE INDEX ASYNC",
        ),
        (
            lambda: sa.PrimaryKeyConstraint("n", name="pk_n"),
            'Constraint "pk_n" on table "child": Aurora DSQL cannot add a PRIMARY KEY.*'
            "Declare the primary key in CREATE TABLE",
        ),
    ],
)
def test_added_unique_or_primary_key_refused(
    dialect: Dialect, make: Callable[[], schema.Constraint], pattern: str
) -> None:
    child = sa.Table("child", sa.MetaData(), sa.Column("n", sa.Integer))
    constraint = make()
    child.append_constraint(constraint)
    with pytest.raises(exc.CompileError, match=pattern):
        sql(schema.AddConstraint(constraint), dialect)


def test_exclusion_constraint_refused(dialect: Dialect) -> None:
    with pytest.raises(
        exc.CompileError,
        match='Exclusion constraint "ex_a" on table "t": Aurora DSQL does not support exclusion',
    ):
        create_table(
            dialect, sa.Column("a", sa.Integer), pg.ExcludeConstraint(("a", "="), name="ex_a")
        )


def test_inline_unique_options(dialect: Dialect) -> None:
    assert create_table(
        dialect,
        sa.Column("a", sa.Integer),
        sa.Column("b", sa.Integer),
        sa.UniqueConstraint(
            "a", name="uq_a", postgresql_include=["b"], postgresql_nulls_not_distinct=True
        ),
    ) == (
        "CREATE TABLE t ( a INTEGER, b INTEGER, CONSTRAINT uq_a UNIQUE NULLS NOT DISTINCT (a) "
        "INCLUDE (b) )"
    )


# --------------------------------------------------------------------------
# Types, tables and columns


def test_supported_types(dialect: Dialect) -> None:
    assert create_table(
        dialect,
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column("amount", sa.Numeric(10, 2)),
        sa.Column("big", sa.Numeric(1000, -1000)),
        sa.Column("flag", sa.Boolean),
        sa.Column("at", sa.DateTime(timezone=True)),
        sa.Column("body", sa.Text),
        sa.Column("blob", sa.LargeBinary),
        sa.Column("doc", sa.JSON),
        sa.Column("docb", pg.JSONB),
        sa.Column("ratio", sa.Float),
    ) == (
        "CREATE TABLE t ( id UUID NOT NULL, amount NUMERIC(10, 2), big NUMERIC(1000, -1000), "
        "flag BOOLEAN, at TIMESTAMP WITH TIME ZONE, body TEXT, blob BYTEA, doc JSON, "
        "docb JSONB, ratio FLOAT, PRIMARY KEY (id) )"
    )


@pytest.mark.parametrize("native", [True, False])
def test_enum_is_varchar_with_check(dialect: Dialect, native: bool) -> None:
    status = sa.Enum(
        "active", "disabled", name="status", native_enum=native, create_constraint=True
    )
    assert create_table(dialect, sa.Column("status", status)) == (
        "CREATE TABLE t ( status VARCHAR(8), "
        "CONSTRAINT status CHECK (status IN ('active', 'disabled')) )"
    )


def test_enum_without_constraint(dialect: Dialect) -> None:
    status = sa.Enum("a", "bb", name="status")
    assert create_table(dialect, sa.Column("status", status)) == (
        "CREATE TABLE t ( status VARCHAR(2) )"
    )


def test_enum_never_creates_a_type(dialect: Dialect) -> None:
    metadata = sa.MetaData()
    sa.Table("t", metadata, sa.Column("s", sa.Enum("a", "b", name="st", native_enum=True)))
    assert create_all(metadata, dialect) == ["CREATE TABLE t ( s VARCHAR(1) )"]


def test_postgresql_enum_refused(dialect: Dialect) -> None:
    with pytest.raises(
        exc.CompileError,
        match='Column "s" of table "t" is a postgresql.ENUM; Aurora DSQL has no CREATE TYPE.*'
        r"Use sqlalchemy.Enum\(...\)",
    ):
        create_table(dialect, sa.Column("s", pg.ENUM("a", "b", name="st")))


def test_enum_type_ddl_refused(dialect: Dialect) -> None:
    enum = pg.ENUM("a", "b", name="st")
    for construct in (CreateEnumType(enum), DropEnumType(enum)):
        with pytest.raises(
            exc.CompileError, match='ENUM type "st"; Aurora DSQL has no CREATE TYPE'
        ):
            sql(construct, dialect)


def test_enum_in_a_cast_still_compiles(dialect: Dialect) -> None:
    expression = sa.cast(sa.literal("a"), pg.ENUM("a", "b", name="st"))
    assert "AS VARCHAR(1)" in str(expression.compile(dialect=dialect))


@pytest.mark.parametrize(
    "type_",
    [sa.ARRAY(sa.Integer), pg.ARRAY(sa.String(10))],
    ids=["sqlalchemy", "postgresql"],
)
def test_array_column_refused(dialect: Dialect, type_: Any) -> None:
    with pytest.raises(
        exc.CompileError,
        match=r'Column "tags" of table "t" is an ARRAY; Aurora DSQL has no array column types\. '
        r"Store the values as JSON/JSONB or in a child table",
    ):
        create_table(dialect, sa.Column("tags", type_))


def test_array_behind_type_decorator_refused(dialect: Dialect) -> None:
    class Tags(sa.TypeDecorator[list[str]]):
        impl = pg.ARRAY(sa.Text)
        cache_ok = True

    with pytest.raises(exc.CompileError, match='Column "tags" of table "t" is an ARRAY'):
        create_table(dialect, sa.Column("tags", Tags()))


def test_collation_refused(dialect: Dialect) -> None:
    with pytest.raises(
        exc.CompileError,
        match='Column "name" of table "t" declares collation \'de_DE\'; Aurora DSQL does not '
        "support COLLATE on columns",
    ):
        create_table(dialect, sa.Column("name", sa.String(20, collation="de_DE")))


def test_numeric_without_precision_warns(dialect: Dialect) -> None:
    with pytest.warns(
        exc.SAWarning,
        match=r'Column "amount" of table "t" is NUMERIC without a precision; Aurora DSQL stores '
        r"it as NUMERIC\(18, 6\)",
    ):
        text = create_table(dialect, sa.Column("amount", sa.Numeric()))
    assert text == "CREATE TABLE t ( amount NUMERIC )"


@pytest.mark.parametrize(
    ("type_", "shown"),
    [(sa.Numeric(1001, 2), r"NUMERIC\(1001, 2\)"), (sa.Numeric(10, 1001), r"NUMERIC\(10, 1001\)")],
)
def test_numeric_bounds_refused(dialect: Dialect, type_: Any, shown: str) -> None:
    with pytest.raises(
        exc.CompileError,
        match=f'Column "n" of table "t" is {shown}; Aurora DSQL allows a precision of 1 to 1000',
    ):
        create_table(dialect, sa.Column("n", type_))


@pytest.mark.parametrize("prefix", ["TEMPORARY", "TEMP", "UNLOGGED"])
def test_table_prefixes_refused(dialect: Dialect, prefix: str) -> None:
    with pytest.raises(
        exc.CompileError,
        match=f"Table \"t\" is declared with prefixes=\\['{prefix}'\\].*neither TEMPORARY nor "
        "UNLOGGED",
    ):
        create_table(dialect, sa.Column("a", sa.Integer), prefixes=[prefix])


TABLE_OPTIONS: list[tuple[str, Any, str]] = [
    ("partition_by", "RANGE (a)", "no partitioned tables"),
    ("inherits", "base", "no table inheritance"),
    ("tablespace", "fast", "no tablespaces"),
    ("using", "heap", "no table access methods"),
    ("with_oids", False, "WITH OIDS / WITHOUT OIDS"),
    ("on_commit", "drop", "no temporary tables"),
]
if SQLALCHEMY_2_1:
    TABLE_OPTIONS.append(("with", {"fillfactor": 70}, "no storage parameters"))


@pytest.mark.parametrize(("option", "value", "reason"), TABLE_OPTIONS)
def test_table_options_refused(dialect: Dialect, option: str, value: Any, reason: str) -> None:
    with pytest.raises(
        exc.CompileError,
        match=f'Table "t": Aurora DSQL .*{reason}.*Remove postgresql_{option}=',
    ):
        create_table(dialect, sa.Column("a", sa.Integer), **{f"postgresql_{option}": value})


def test_table_in_schema_with_comment(dialect: Dialect) -> None:
    metadata = sa.MetaData()
    sa.Table(
        "t",
        metadata,
        sa.Column("id", sa.BigInteger, primary_key=True, comment="the key"),
        schema="app",
        comment="a table",
    )
    assert create_all(metadata, dialect) == [
        f"CREATE TABLE app.t ( id BIGINT {IDENTITY}, PRIMARY KEY (id) )",
        "COMMENT ON TABLE app.t IS 'a table'",
        "COMMENT ON COLUMN app.t.id IS 'the key'",
    ]


def test_too_many_columns_refused(dialect: Dialect) -> None:
    columns = [sa.Column(f"c{i}", sa.Integer) for i in range(256)]
    with pytest.raises(exc.CompileError, match=r'Table "t" has 256 columns; .*at most 255'):
        create_table(dialect, *columns)


@pytest.mark.parametrize("persisted", [None, True])
def test_computed_column_is_stored(dialect: Dialect, persisted: bool | None) -> None:
    assert (
        create_table(
            dialect,
            sa.Column("a", sa.Integer),
            sa.Column("b", sa.Integer, sa.Computed("a + 1", persisted=persisted)),
        )
        == "CREATE TABLE t ( a INTEGER, b INTEGER GENERATED ALWAYS AS (a + 1) STORED )"
    )


def test_virtual_computed_column_refused(dialect: Dialect) -> None:
    with pytest.raises(
        exc.CompileError,
        match=r'Column "b" of table "t" is Computed\(persisted=False\).*only STORED',
    ):
        create_table(
            dialect,
            sa.Column("a", sa.Integer),
            sa.Column("b", sa.Integer, sa.Computed("a + 1", persisted=False)),
        )


@needs_2_1
def test_views(dialect: Dialect, users: sa.Table) -> None:
    select = sa.select(users.c.id).where(users.c.deleted.is_(False))
    view = sa.CreateView(select, "live_users")
    assert sql(view, dialect) == (
        "CREATE VIEW live_users AS SELECT users.id FROM users WHERE users.deleted IS false"
    )
    refusals = [
        (sa.CreateView(select, "v", materialized=True), 'View "v": .*no materialized views'),
        (sa.CreateView(select, "v", temporary=True), 'View "v": .*no temporary views'),
        (sa.CreateTableAs(select, "copy"), 'CREATE TABLE "copy" AS SELECT: .*CREATE TABLE ... AS'),
        (sa.DropView(view.table, materialized=True), 'DROP MATERIALIZED VIEW "live_users"'),
    ]
    for construct, pattern in refusals:
        with pytest.raises(exc.CompileError, match=pattern):
            sql(construct, dialect)


# --------------------------------------------------------------------------
# A broad model, through create_all and drop_all, checked by Amazon's dsql-lint


def create_all(metadata: sa.MetaData, dialect: Dialect) -> list[str]:
    return _run_ddl(metadata.create_all, dialect)


def _run_ddl(method: Callable[..., None], dialect: Dialect) -> list[str]:
    statements: list[str] = []

    def executor(construct: Any, *args: Any, **kw: Any) -> None:
        statements.append(sql(construct, dialect))

    method(MockConnection(dialect, executor), checkfirst=False)
    return statements


def broad_model() -> sa.MetaData:
    metadata = sa.MetaData()
    status = sa.Enum("active", "disabled", name="user_status", create_constraint=True)
    users = sa.Table(
        "users",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("email", sa.String(255), nullable=False, unique=True),
        sa.Column("name", sa.String(100)),
        sa.Column("status", status, nullable=False, server_default="active"),
        sa.Column("balance", sa.Numeric(10, 2), nullable=False, server_default="0"),
        sa.Column("active", sa.Boolean, nullable=False, server_default=sa.true()),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now()),
        sa.Column("bio", sa.Text, comment="free text"),
        sa.Column("avatar", sa.LargeBinary),
        sa.Column("profile", sa.JSON),
        sa.Column("settings", pg.JSONB),
        sa.Column("email_lower", sa.String(255), sa.Computed("lower(email)")),
        sa.CheckConstraint("balance >= 0", name="ck_users_balance"),
        comment="people",
    )
    sa.Index("ix_users_email_lower", sa.func.lower(users.c.email), unique=True)
    sa.Index(
        "ix_users_active_name",
        sa.nulls_first(users.c.name),
        users.c.created_at,
        auroradsql_include=["email"],
        auroradsql_where=users.c.active.is_(True),
    )
    sa.Index("ix_users_status", users.c.status, postgresql_using="btree")
    sa.Index("ix_users_name_pattern", users.c.name, postgresql_ops={"name": "text_pattern_ops"})
    accounts = sa.Table(
        "accounts",
        metadata,
        sa.Column("id", sa.Uuid, primary_key=True, server_default=sa.text("gen_random_uuid()")),
        sa.Column("owner_id", sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
        sa.Column("label", sa.String(50)),
        sa.UniqueConstraint("owner_id", "label", name="uq_accounts_owner_label"),
    )
    sa.Index(
        "ix_accounts_label",
        accounts.c.label,
        unique=True,
        postgresql_nulls_not_distinct=True,
        postgresql_include=[accounts.c.owner_id],
    )
    sa.Table(
        "memberships",
        metadata,
        sa.Column("user_id", sa.ForeignKey("users.id"), primary_key=True),
        sa.Column("account_id", sa.ForeignKey("accounts.id"), primary_key=True),
        sa.Column("role", sa.String(20), nullable=False),
    )
    sa.Table(
        "profiles",
        metadata,
        sa.Column("user_id", sa.ForeignKey("users.id"), primary_key=True),
        sa.Column("headline", sa.String(200)),
    )
    sa.Table(
        "events",
        metadata,
        sa.Column("id", sa.BigInteger, sa.Identity(always=True, cache=1), primary_key=True),
        sa.Column("number", sa.BigInteger, sa.Sequence("event_number_seq", start=1000)),
        sa.Column("counter", sa.Integer, sa.Identity(start=10, increment=10)),
        # Points to a table created later: added afterwards with ALTER TABLE.
        sa.Column(
            "ticket_id", sa.ForeignKey("tickets.id", use_alter=True, name="fk_events_ticket")
        ),
    )
    sa.Table(
        "tickets",
        metadata,
        sa.Column("id", sa.Integer, sa.Sequence("ticket_id_seq", cache=1), primary_key=True),
        sa.Column("event_id", sa.ForeignKey("events.id")),
        sa.Column("price", sa.Numeric(12, 4)),
    )
    audit = sa.Table(
        "audit_log",
        metadata,
        sa.Column("id", sa.BigInteger, primary_key=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        schema="app",
    )
    sa.Index("ix_audit_at", sa.nulls_last(audit.c.at))
    sa.Sequence("invoice_number_seq", metadata=metadata, start=1, cache=65536)
    return metadata


def test_broad_model_statements() -> None:
    statements = create_all(broad_model(), AuroraDSQLDialect_asyncpg())
    assert "CREATE SEQUENCE event_number_seq AS BIGINT START WITH 1000 CACHE 65536" in statements
    assert "CREATE SEQUENCE ticket_id_seq AS BIGINT CACHE 1" in statements
    assert "CREATE SEQUENCE invoice_number_seq AS BIGINT START WITH 1 CACHE 65536" in statements
    assert (
        "ALTER TABLE events ADD CONSTRAINT fk_events_ticket FOREIGN KEY(ticket_id) "
        "REFERENCES tickets (id) NOT VALID"
    ) in statements
    assert (
        "CREATE INDEX ASYNC ix_users_active_name ON users (name NULLS FIRST, created_at) "
        "INCLUDE (email) WHERE active IS true"
    ) in statements
    assert "CREATE INDEX ASYNC ix_audit_at ON app.audit_log (at NULLS LAST)" in statements
    events = next(s for s in statements if s.startswith("CREATE TABLE events"))
    assert events == (
        "CREATE TABLE events ( id BIGINT GENERATED ALWAYS AS IDENTITY (CACHE 1), "
        "number BIGINT, "
        "counter BIGINT GENERATED BY DEFAULT AS IDENTITY (INCREMENT BY 10 START WITH 10 "
        "CACHE 65536), ticket_id INTEGER, PRIMARY KEY (id) )"
    )
    memberships = next(s for s in statements if s.startswith("CREATE TABLE memberships"))
    assert memberships.startswith(
        "CREATE TABLE memberships ( user_id BIGINT NOT NULL, account_id UUID NOT NULL,"
    )
    assert not any("SERIAL" in s or "CREATE TYPE" in s for s in statements)


def _find_dsql_lint() -> str | None:
    beside = Path(sys.executable).with_name("dsql-lint")
    return str(beside) if beside.is_file() else shutil.which("dsql-lint")


@pytest.fixture(scope="module")
def dsql_lint() -> str:
    found = _find_dsql_lint()
    if found is None:
        pytest.skip(
            "Amazon's dsql-lint is not installed (pip install dsql-lint, or the local extra)"
        )
    return found


def test_every_statement_passes_dsql_lint(dsql_lint: str) -> None:
    statements: list[str] = []
    for dialect_cls in DIALECTS:
        metadata = broad_model()
        statements += create_all(metadata, dialect_cls())
        statements += _run_ddl(metadata.drop_all, dialect_cls())
    assert len(statements) > 30
    completed = subprocess.run(
        [dsql_lint, "--format", "json", "-"],
        input=";\n".join(statements) + ";\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    report = json.loads(completed.stdout)
    diagnostics = [
        f"{d['rule']}: {d['message']} [{d['statement_preview']}]"
        for file in report["files"]
        for d in file["diagnostics"]
    ]
    assert diagnostics == []
    assert [file["error"] for file in report["files"]] == [None]
    assert completed.returncode == 0, completed.stderr
