"""The client side's SQL-text classifier, shared by the dialect and the Alembic implementation."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from sqlalchemy_dsql.alembic.impl import _is_ddl
from sqlalchemy_dsql.dialect.statement import (
    AsyncDDL,
    StatementKind,
    async_ddl,
    statement_kind,
    statements,
)

DDL, DML, OTHER = StatementKind.DDL, StatementKind.DML, StatementKind.OTHER


@pytest.mark.parametrize(
    ("sql", "kind"),
    [
        ("CREATE TABLE t (id int PRIMARY KEY)", DDL),
        ("  \n\tcreate table t (id int)", DDL),
        ("-- make the table\nCREATE TABLE t (id int)", DDL),
        ("/* a comment\n over lines */ ALTER TABLE t ADD COLUMN c text", DDL),
        ("DROP TABLE IF EXISTS t", DDL),
        ("CREATE INDEX ASYNC ix ON t (c)", DDL),
        ("ALTER TABLE ASYNC t VALIDATE CONSTRAINT c", DDL),
        ("COMMENT ON TABLE t IS 'insert rows here'", DDL),
        ("GRANT SELECT ON t TO reader", DDL),
        ("REVOKE SELECT ON t FROM reader", DDL),
        ("AWS IAM GRANT app TO 'arn:aws:iam::123456789012:role/app'", DDL),
        ("aws  iam revoke app FROM 'arn:aws:iam::123456789012:role/app'", DDL),
        ("CREATE VIEW v AS SELECT 1; INSERT INTO t VALUES (1)", DDL),  # the first statement
        ("INSERT INTO t VALUES (1)", DML),
        ("  update t SET c = 1", DML),
        ("DELETE FROM t WHERE id = 1", DML),
        ("MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DELETE", DML),
        ("TRUNCATE t", DML),  # refused by DSQL; it would write, not change the schema
        ("-- fill\nINSERT INTO t SELECT * FROM s", DML),
        ("WITH s AS (SELECT 1 AS id) INSERT INTO t SELECT id FROM s", DML),
        ("WITH gone AS (DELETE FROM t RETURNING id) SELECT count(*) FROM gone", DML),
        ("WITH x AS MATERIALIZED (UPDATE t SET c = 1 RETURNING *) SELECT * FROM x", DML),
        ("WITH s AS (SELECT * FROM t FOR UPDATE) SELECT * FROM s", OTHER),
        ("WITH s AS (SELECT 'delete' AS word) SELECT word FROM s", OTHER),
        ('WITH s AS (SELECT "update" FROM t) SELECT * FROM s', OTHER),
        ("SELECT 1", OTHER),
        ("SELECT * FROM t FOR UPDATE", OTHER),
        ("select 'CREATE TABLE t'", OTHER),
        ("-- CREATE TABLE t\nSELECT 1", OTHER),
        ("VALUES (1), (2)", OTHER),
        ("SHOW transaction_isolation", OTHER),
        ("CALL sys.wait_for_job('abc')", OTHER),
        ("SET search_path TO app", OTHER),
        ("BEGIN", OTHER),
        ("", OTHER),
        ("  ; -- nothing\n", OTHER),
    ],
)
def test_statement_kind(sql: str, kind: StatementKind) -> None:
    assert statement_kind(sql) is kind


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("CREATE INDEX ASYNC ix ON t (c)", AsyncDDL("ix")),
        ("create unique index async if not exists ix_2 ON t (c)", AsyncDDL("ix_2")),
        ('-- build it\nCREATE INDEX ASYNC "Mixed Case" ON t (c)', AsyncDDL("Mixed Case")),
        ("ALTER TABLE ASYNC t VALIDATE CONSTRAINT c", AsyncDDL(None)),
        ("CREATE INDEX ix ON t (c)", None),
        ("ALTER TABLE t ADD COLUMN c text", None),
        ("SELECT 'CREATE INDEX ASYNC ix ON t (c)'", None),
    ],
)
def test_async_ddl(sql: str, expected: AsyncDDL | None) -> None:
    assert async_ddl(sql) == expected


def test_statements_split_outside_literals_and_comments() -> None:
    parts = statements(
        "INSERT INTO t VALUES ('a;b'); -- no; statement\n"
        "CREATE FUNCTION f() RETURNS int AS $body$ SELECT 1; $body$ LANGUAGE sql;"
        'SELECT "x;y" FROM t /* ; */'
    )
    assert [" ".join(part.split()) for part in parts] == [
        "INSERT INTO t VALUES ('')",
        "CREATE FUNCTION f() RETURNS int AS '' LANGUAGE sql",
        "SELECT '' FROM t",
    ]


@pytest.mark.parametrize(
    "sql",
    [
        "-- comment first\nCREATE TABLE t (id int)",
        "COMMENT ON TABLE t IS 'x'",
        "AWS IAM GRANT app TO 'arn:aws:iam::123456789012:role/app'",
        "SET search_path TO app",
        "WITH s AS (SELECT 1) INSERT INTO t SELECT * FROM s",
        "SELECT 1",
    ],
)
def test_alembic_calls_ddl_what_the_dialect_does(sql: str) -> None:
    assert _is_ddl(text(sql)) is (statement_kind(sql) is DDL)
