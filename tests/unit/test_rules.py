"""Unit tests for the statement classifier behind the local DSQL emulator."""

from __future__ import annotations

import json
import re
import stat
import subprocess
from pathlib import Path

import pytest
from pglast import ast, parse_sql

from sqlalchemy_dsql.local import rules
from sqlalchemy_dsql.local.rules import AsyncJob, Kind, Rejection, Statement, Verdict, check

UNSUPPORTED = "0A000"


def _refusal(sql: str) -> Rejection:
    verdict = check(sql)
    assert verdict.rejection is not None, f"expected a refusal for {sql!r}"
    return verdict.rejection


def _only(sql: str) -> Statement:
    verdict = check(sql)
    assert len(verdict.statements) == 1, verdict
    return verdict.statements[0]


# --------------------------------------------------------------------------
# Refusals: (sql, sqlstate, text the message must contain)

REFUSALS = [
    # transactions
    ("SAVEPOINT sp", UNSUPPORTED, "SAVEPOINT"),
    ("RELEASE SAVEPOINT sp", UNSUPPORTED, "RELEASE SAVEPOINT"),
    ("RELEASE sp", UNSUPPORTED, "RELEASE SAVEPOINT"),
    ("ROLLBACK TO SAVEPOINT sp", UNSUPPORTED, "ROLLBACK TO SAVEPOINT"),
    ("ROLLBACK TO sp", UNSUPPORTED, "ROLLBACK TO SAVEPOINT"),
    ("COMMIT AND CHAIN", UNSUPPORTED, "COMMIT AND CHAIN"),
    ("END AND CHAIN", UNSUPPORTED, "COMMIT AND CHAIN"),
    ("ROLLBACK AND CHAIN", UNSUPPORTED, "ROLLBACK AND CHAIN"),
    ("ABORT AND CHAIN", UNSUPPORTED, "ROLLBACK AND CHAIN"),
    ("PREPARE TRANSACTION 'tx1'", UNSUPPORTED, "PREPARE TRANSACTION"),
    ("COMMIT PREPARED 'tx1'", UNSUPPORTED, "COMMIT PREPARED"),
    ("ROLLBACK PREPARED 'tx1'", UNSUPPORTED, "ROLLBACK PREPARED"),
    ("LOCK TABLE t", UNSUPPORTED, "LOCK TABLE"),
    ("LOCK t IN ACCESS EXCLUSIVE MODE", UNSUPPORTED, "LOCK TABLE"),
    # isolation levels
    ("BEGIN ISOLATION LEVEL READ COMMITTED", UNSUPPORTED, "isolation level: read committed"),
    (
        "BEGIN TRANSACTION ISOLATION LEVEL SERIALIZABLE",
        UNSUPPORTED,
        "isolation level: serializable",
    ),
    (
        "START TRANSACTION READ WRITE, ISOLATION LEVEL READ UNCOMMITTED",
        UNSUPPORTED,
        "isolation level: read uncommitted",
    ),
    ("SET TRANSACTION ISOLATION LEVEL READ COMMITTED", UNSUPPORTED, "isolation level"),
    (
        "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE",
        UNSUPPORTED,
        "isolation level: serializable",
    ),
    ("SET transaction_isolation = 'read committed'", UNSUPPORTED, "isolation level"),
    ("SET default_transaction_isolation TO serializable", UNSUPPORTED, "isolation level"),
    (
        "SELECT set_config('default_transaction_isolation', 'read committed', false)",
        UNSUPPORTED,
        "isolation level",
    ),
    # configuration parameters
    (
        "SET statement_timeout = 1000",
        UNSUPPORTED,
        'setting configuration parameter "statement_timeout" not supported',
    ),
    ("SET default_transaction_read_only = on", UNSUPPORTED, '"default_transaction_read_only"'),
    ("SET default_transaction_read_only TO off", UNSUPPORTED, '"default_transaction_read_only"'),
    ("SET LOCAL work_mem = '64MB'", UNSUPPORTED, '"work_mem"'),
    ("SET SESSION lock_timeout TO 10", UNSUPPORTED, '"lock_timeout"'),
    (
        "SET idle_in_transaction_session_timeout = 0",
        UNSUPPORTED,
        '"idle_in_transaction_session_timeout"',
    ),
    ("SET session_replication_role = replica", UNSUPPORTED, '"session_replication_role"'),
    ("SET work_mem TO DEFAULT", UNSUPPORTED, '"work_mem"'),
    ("SET client_min_messages = warning", UNSUPPORTED, '"client_min_messages"'),
    ("SET myapp.tenant = 'acme'", UNSUPPORTED, '"myapp.tenant"'),
    ("RESET statement_timeout", UNSUPPORTED, '"statement_timeout"'),
    ("SET ROLE app", UNSUPPORTED, '"role"'),
    ("SET SESSION AUTHORIZATION app", UNSUPPORTED, '"session_authorization"'),
    ("SELECT set_config('statement_timeout', '5s', false)", UNSUPPORTED, '"statement_timeout"'),
    ("SELECT 1 WHERE set_config('work_mem', '1MB', true) IS NOT NULL", UNSUPPORTED, '"work_mem"'),
    ("DISCARD ALL", UNSUPPORTED, "DISCARD"),
    ("DISCARD PLANS", UNSUPPORTED, "DISCARD"),
    ("ALTER SYSTEM SET work_mem = '1MB'", UNSUPPORTED, "ALTER SYSTEM"),
    ("LOAD 'auto_explain'", UNSUPPORTED, "LOAD"),
    # SQL-level prepared statements
    ("PREPARE q AS SELECT 1", UNSUPPORTED, "PREPARE"),
    ("DEALLOCATE q", UNSUPPORTED, "DEALLOCATE"),
    ("DEALLOCATE PREPARE q", UNSUPPORTED, "DEALLOCATE"),
    # plain DML-ish refusals
    ("TRUNCATE t", UNSUPPORTED, "TRUNCATE"),
    ("TRUNCATE TABLE a, b RESTART IDENTITY", UNSUPPORTED, "TRUNCATE"),
    ("DO $$ BEGIN PERFORM 1; END $$", UNSUPPORTED, "DO"),
    ("LISTEN jobs", UNSUPPORTED, "LISTEN"),
    ("NOTIFY jobs, 'payload'", UNSUPPORTED, "NOTIFY"),
    ("UNLISTEN *", UNSUPPORTED, "UNLISTEN"),
    ("SELECT pg_notify('jobs', 'payload')", UNSUPPORTED, "pg_notify"),
    ("DECLARE c CURSOR FOR SELECT * FROM t", UNSUPPORTED, "DECLARE CURSOR"),
    ("DECLARE c NO SCROLL CURSOR WITH HOLD FOR SELECT 1", UNSUPPORTED, "DECLARE CURSOR"),
    ("FETCH NEXT FROM c", UNSUPPORTED, "FETCH"),
    ("MOVE FORWARD 5 IN c", UNSUPPORTED, "MOVE"),
    ("VACUUM", UNSUPPORTED, "VACUUM"),
    ("VACUUM (ANALYZE) t", UNSUPPORTED, "VACUUM"),
    ("CLUSTER t USING t_pkey", UNSUPPORTED, "CLUSTER"),
    # a live-cluster report (beekeeper-studio#3224): drivers keep the pid from BackendKeyData
    ("SELECT pg_backend_pid()", UNSUPPORTED, "function pg_backend_pid not supported"),
    # advisory locks, anywhere in an expression
    ("SELECT pg_advisory_lock(1)", UNSUPPORTED, "function pg_advisory_lock not supported"),
    (
        "SELECT pg_try_advisory_lock(1, 2)",
        UNSUPPORTED,
        "function pg_try_advisory_lock not supported",
    ),
    (
        "SELECT pg_advisory_xact_lock(hashtext('x'))",
        UNSUPPORTED,
        "function pg_advisory_xact_lock not supported",
    ),
    (
        "SELECT pg_advisory_unlock_all()",
        UNSUPPORTED,
        "function pg_advisory_unlock_all not supported",
    ),
    (
        "SELECT pg_catalog.pg_advisory_unlock(1)",
        UNSUPPORTED,
        "function pg_advisory_unlock not supported",
    ),
    (
        "SELECT CASE WHEN pg_try_advisory_xact_lock(7) THEN 1 END FROM t",
        UNSUPPORTED,
        "function pg_try_advisory_xact_lock not supported",
    ),
    (
        "UPDATE t SET a = 1 WHERE pg_try_advisory_lock_shared(t.id)",
        UNSUPPORTED,
        "function pg_try_advisory_lock_shared not supported",
    ),
    (
        "SELECT * FROM t WHERE id IN (SELECT pg_advisory_lock(id) FROM u)",
        UNSUPPORTED,
        "function pg_advisory_lock not supported",
    ),
    # row locks
    # DSQL's words, as a live comparison reports them (ministackorg/ministack#1442)
    ("SELECT * FROM t FOR SHARE", UNSUPPORTED, "locking clauses other than FOR UPDATE/FOR KEY"),
    ("SELECT * FROM t FOR NO KEY UPDATE", UNSUPPORTED, "locking clauses other than"),
    ("SELECT * FROM (SELECT * FROM t FOR SHARE) s", UNSUPPORTED, "locking clauses other than"),
    ("SELECT * FROM t FOR UPDATE OF t FOR SHARE OF t", UNSUPPORTED, "locking clauses other"),
    ("EXPLAIN SELECT * FROM t FOR SHARE", UNSUPPORTED, "locking clauses other than"),
    # privileges on DSQL's own schemas (a live run, 2026-09-23)
    ("GRANT USAGE ON SCHEMA public TO app", UNSUPPORTED, "feature not supported on system entity"),
    ("REVOKE CREATE ON SCHEMA public FROM app", UNSUPPORTED, "not supported on system entity"),
    # tables and objects DSQL does not have
    (
        "CREATE TEMP TABLE t (a int)",
        UNSUPPORTED,
        "TEMPORARY or TEMP table not supported for CREATE TABLE",
    ),
    (
        "CREATE TEMPORARY TABLE t (a int) ON COMMIT DROP",
        UNSUPPORTED,
        "TEMPORARY or TEMP table not supported for CREATE TABLE",
    ),
    (
        "CREATE GLOBAL TEMPORARY TABLE t (a int)",
        UNSUPPORTED,
        "TEMPORARY or TEMP table not supported for CREATE TABLE",
    ),
    ("CREATE UNLOGGED TABLE t (a int)", UNSUPPORTED, "UNLOGGED tables"),
    ("CREATE TEMP VIEW v AS SELECT 1", UNSUPPORTED, "temporary views"),
    ("CREATE TEMPORARY SEQUENCE s CACHE 1", UNSUPPORTED, "temporary sequences"),
    (
        "SELECT 1 AS a INTO TEMP t",
        UNSUPPORTED,
        "TEMPORARY or TEMP table not supported for CREATE TABLE",
    ),
    (
        "SELECT * INTO TEMPORARY TABLE t FROM u",
        UNSUPPORTED,
        "TEMPORARY or TEMP table not supported for CREATE TABLE",
    ),
    (
        "CREATE TEMP TABLE t AS SELECT 1",
        UNSUPPORTED,
        "TEMPORARY or TEMP table not supported for CREATE TABLE",
    ),
    ("SELECT * INTO t2 FROM t", UNSUPPORTED, "SELECT INTO"),
    ("CREATE TABLE t2 AS SELECT * FROM t", UNSUPPORTED, "CREATE TABLE AS"),
    (
        "CREATE TRIGGER tr BEFORE INSERT ON t FOR EACH ROW EXECUTE FUNCTION f()",
        UNSUPPORTED,
        "TRIGGER",
    ),
    (
        "CREATE EVENT TRIGGER et ON ddl_command_start EXECUTE FUNCTION f()",
        UNSUPPORTED,
        "EVENT TRIGGER",
    ),
    (
        "CREATE FUNCTION f() RETURNS int LANGUAGE plpgsql AS $$ BEGIN RETURN 1; END $$",
        UNSUPPORTED,
        "LANGUAGE plpgsql",
    ),
    (
        "CREATE OR REPLACE FUNCTION f(int) RETURNS int AS 'lib', 'f' LANGUAGE c",
        UNSUPPORTED,
        "LANGUAGE c",
    ),
    (
        "CREATE PROCEDURE p() LANGUAGE plpgsql AS $$ BEGIN NULL; END $$",
        UNSUPPORTED,
        "PROCEDURE is not supported",
    ),
    (
        "CREATE PROCEDURE touch() LANGUAGE sql AS $$ UPDATE t SET a = a $$",
        UNSUPPORTED,
        "PROCEDURE is not supported",
    ),
    ("CREATE EXTENSION pgcrypto", UNSUPPORTED, "unsupported statement: CreateExtension"),
    (
        "CREATE EXTENSION IF NOT EXISTS vector",
        UNSUPPORTED,
        "unsupported statement: CreateExtension",
    ),
    ("CREATE TABLE m (d date, v int) PARTITION BY RANGE (d)", UNSUPPORTED, "PARTITION BY"),
    (
        "CREATE TABLE m2024 PARTITION OF m FOR VALUES FROM ('2024-01-01') TO ('2025-01-01')",
        UNSUPPORTED,
        "PARTITION OF",
    ),
    ("CREATE TABLE child (extra int) INHERITS (parent)", UNSUPPORTED, "INHERITS"),
    (
        "CREATE MATERIALIZED VIEW mv AS SELECT 1",
        UNSUPPORTED,
        "unsupported statement: CreateTableAs",
    ),
    ("REFRESH MATERIALIZED VIEW mv", UNSUPPORTED, "MATERIALIZED VIEW"),
    ("REFRESH MATERIALIZED VIEW CONCURRENTLY mv", UNSUPPORTED, "MATERIALIZED VIEW"),
    (
        "CREATE TYPE mood AS ENUM ('sad', 'happy')",
        UNSUPPORTED,
        "unsupported statement: CreateEnum",
    ),
    (
        "CREATE TYPE pair AS (a int, b text)",
        UNSUPPORTED,
        "unsupported statement: CompositeType",
    ),
    (
        "CREATE TYPE span AS RANGE (subtype = int4)",
        UNSUPPORTED,
        "unsupported statement: CreateRange",
    ),
    ("CREATE TYPE shell", UNSUPPORTED, "unsupported statement: Define"),
    ("CREATE DATABASE other", UNSUPPORTED, "unsupported statement: Createdb"),
    ("DROP DATABASE other", UNSUPPORTED, "unsupported statement: Dropdb"),
    ("CREATE TABLESPACE fast LOCATION '/ssd'", UNSUPPORTED, "CREATE TABLESPACE"),
    (
        "CREATE POLICY p ON t USING (owner = current_user)",
        UNSUPPORTED,
        "unsupported statement: CreatePolicy",
    ),
    # CREATE TABLE details
    ("CREATE TABLE t (tags int[])", UNSUPPORTED, "datatype integer[] not supported"),
    ("CREATE TABLE t (tags text ARRAY)", UNSUPPORTED, "datatype text[] not supported"),
    ("CREATE TABLE t (grid int[3][3])", UNSUPPORTED, "datatype integer[] not supported"),
    ("CREATE TABLE t (body text COMPRESSION lz4)", UNSUPPORTED, "COMPRESSION clause not supported"),
    ("CREATE TABLE t (addr inet)", UNSUPPORTED, "datatype inet not supported"),
    ("ALTER TABLE t ADD COLUMN addr inet", UNSUPPORTED, "datatype inet not supported"),
    ("CREATE TABLE t (code char(4097))", "54000", "greater than 4096 bytes not supported for char"),
    ("CREATE TABLE t (code character(5000))", "54000", "4096 bytes not supported for char"),
    (
        "CREATE TABLE t (name varchar(70000))",
        "54000",
        "Datatype limit greater than 65535 bytes not supported for varchar",
    ),
    ("CREATE TABLE t (name character varying(65536))", "54000", "65535 bytes"),
    ('CREATE TABLE t (name text COLLATE "C")', UNSUPPORTED, "COLLATE"),
    ('CREATE TABLE t (name varchar(20) COLLATE "en_US" NOT NULL)', UNSUPPORTED, "COLLATE"),
    ("CREATE TABLE t (id serial PRIMARY KEY)", "42704", 'type "serial" does not exist'),
    ("CREATE TABLE t (id bigserial)", "42704", 'type "bigserial" does not exist'),
    ("CREATE TABLE t (id smallserial)", "42704", 'type "smallserial" does not exist'),
    ("CREATE TABLE t (id serial2)", "42704", 'type "serial2" does not exist'),
    ("CREATE TABLE t (id serial4)", "42704", 'type "serial4" does not exist'),
    ("CREATE TABLE t (id SERIAL8)", "42704", 'type "serial8" does not exist'),
    ("CREATE TABLE t (a int) WITH (fillfactor = 70)", UNSUPPORTED, "storage parameters"),
    ("CREATE TABLE t (a int) TABLESPACE fast", UNSUPPORTED, "TABLESPACE"),
    ("CREATE TABLE t (p int, EXCLUDE USING gist (p WITH =))", UNSUPPORTED, "exclusion constraints"),
    ("CREATE SCHEMA s CREATE TABLE t (id serial)", "42704", 'type "serial" does not exist'),
    # identity columns
    (
        "CREATE TABLE t (id int GENERATED ALWAYS AS IDENTITY (CACHE 1))",
        UNSUPPORTED,
        "datatype integer not supported, identity column type must be bigint",
    ),
    (
        "CREATE TABLE t (id smallint GENERATED BY DEFAULT AS IDENTITY (CACHE 65536))",
        UNSUPPORTED,
        "datatype smallint not supported, identity column type must be bigint",
    ),
    (
        "CREATE TABLE t (id bigint GENERATED ALWAYS AS IDENTITY)",
        UNSUPPORTED,
        "identity column is not supported without an explicit cache size",
    ),
    (
        "CREATE TABLE t (id bigint GENERATED BY DEFAULT AS IDENTITY (START WITH 10))",
        UNSUPPORTED,
        "identity column is not supported without an explicit cache size",
    ),
    (
        "CREATE TABLE t (id bigint GENERATED ALWAYS AS IDENTITY (CACHE 1000))",
        "22023",
        "CACHE (1000) must be greater than or equal to 65536 or equal to 1",
    ),
    (
        "CREATE TABLE t (id int8 GENERATED ALWAYS AS IDENTITY (CACHE 65535) PRIMARY KEY)",
        "22023",
        "CACHE (65535) must be greater than or equal to 65536 or equal to 1",
    ),
    (
        "ALTER TABLE t ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY",
        UNSUPPORTED,
        "identity column is not supported without an explicit cache size",
    ),
    (
        "ALTER TABLE t ALTER COLUMN id ADD GENERATED BY DEFAULT AS IDENTITY (CACHE 20)",
        "22023",
        "CACHE (20) must be greater than or equal to 65536 or equal to 1",
    ),
    ("ALTER TABLE t ALTER COLUMN id SET CACHE 10", "22023", "CACHE (10) must be greater"),
    # sequences
    (
        "CREATE SEQUENCE s",
        UNSUPPORTED,
        "CREATE SEQUENCE is not supported without an explicit cache size. "
        "please define CACHE greater than or equal to 65536 or equal to 1",
    ),
    ("CREATE SEQUENCE IF NOT EXISTS s START 100", UNSUPPORTED, "without an explicit cache size"),
    (
        "CREATE SEQUENCE s CACHE 100",
        "22023",
        "CACHE (100) must be greater than or equal to 65536 or equal to 1",
    ),
    ("CREATE SEQUENCE s CACHE 65535", "22023", "CACHE (65535) must be"),
    ("CREATE SEQUENCE s AS integer CACHE 1", "22023", "sequence type must be bigint"),
    ("CREATE SEQUENCE s AS smallint CACHE 65536", "22023", "sequence type must be bigint"),
    ("CREATE SEQUENCE s AS numeric(10, 0) CACHE 1", "22023", "sequence type must be bigint"),
    ("ALTER SEQUENCE s CACHE 10", "22023", "CACHE (10) must be"),
    ("ALTER SEQUENCE s AS int", "22023", "sequence type must be bigint"),
    # CREATE INDEX
    ("CREATE INDEX i ON t (a)", UNSUPPORTED, "unsupported mode. please use CREATE INDEX ASYNC."),
    ("CREATE UNIQUE INDEX i ON t (a)", UNSUPPORTED, "please use CREATE INDEX ASYNC"),
    (
        "CREATE INDEX CONCURRENTLY i ON t (a)",
        UNSUPPORTED,
        "CONCURRENTLY not supported for CREATE INDEX",
    ),
    ("CREATE INDEX ON t (a)", UNSUPPORTED, "please use CREATE INDEX ASYNC"),
    ("CREATE INDEX ASYNC i ON t (a ASC)", UNSUPPORTED, "specifying sort order not supported"),
    ("CREATE INDEX ASYNC i ON t (a, b DESC NULLS LAST)", UNSUPPORTED, "sort order not supported"),
    (
        "CREATE INDEX ASYNC i ON t USING btree (a)",
        UNSUPPORTED,
        "USING not supported for CREATE INDEX",
    ),
    (
        "CREATE INDEX ASYNC i ON t USING hash (a)",
        UNSUPPORTED,
        "USING not supported for CREATE INDEX",
    ),
    (
        "CREATE INDEX ASYNC i ON ONLY t USING gin (doc)",
        UNSUPPORTED,
        "USING not supported for CREATE INDEX",
    ),
    ("CREATE INDEX ASYNC CONCURRENTLY i ON t (a)", UNSUPPORTED, "CONCURRENTLY"),
    ("CREATE INDEX CONCURRENTLY ASYNC i ON t (a)", UNSUPPORTED, "CONCURRENTLY"),
    (
        "CREATE INDEX ASYNC i ON t (a, b, c, d, e, f, g, h, k)",
        "54011",
        "more than 8 column keys in an index are not supported",
    ),
    ("CREATE INDEX ASYNC i ON t (a) INCLUDE ((lower(b)))", UNSUPPORTED, "INCLUDE"),
    ("CREATE INDEX ASYNC i ON t (a) TABLESPACE fast", UNSUPPORTED, "TABLESPACE"),
    ("CREATE INDEX ASYNC s.i ON t (a)", UNSUPPORTED, "schema-qualified"),
    ("CREATE UNIQUE INDEX ASYNC IF NOT EXISTS s.i ON s.t (a)", UNSUPPORTED, "schema-qualified"),
    # ALTER TABLE ... ADD COLUMN
    (
        "ALTER TABLE t ADD COLUMN b int DEFAULT 0",
        UNSUPPORTED,
        "ALTER TABLE ADD COLUMN with constraint not supported",
    ),
    (
        "ALTER TABLE t ADD b text NOT NULL",
        UNSUPPORTED,
        "ALTER TABLE ADD COLUMN with constraint not supported",
    ),
    (
        "ALTER TABLE t ADD COLUMN id bigint GENERATED ALWAYS AS IDENTITY (CACHE 1)",
        UNSUPPORTED,
        "ALTER TABLE ADD COLUMN with constraint not supported",
    ),
    (
        "ALTER TABLE t ADD COLUMN c int GENERATED ALWAYS AS (a + 1) STORED",
        UNSUPPORTED,
        "ALTER TABLE ADD COLUMN with constraint not supported",
    ),
    (
        "ALTER TABLE t ADD COLUMN u uuid REFERENCES u (id)",
        UNSUPPORTED,
        "ALTER TABLE ADD COLUMN with constraint not supported",
    ),
    (
        "ALTER TABLE t ADD COLUMN code text UNIQUE",
        UNSUPPORTED,
        "ALTER TABLE ADD COLUMN with constraint not supported",
    ),
    (
        "ALTER TABLE t ADD COLUMN k int PRIMARY KEY",
        UNSUPPORTED,
        "ALTER TABLE ADD COLUMN with constraint not supported",
    ),
    (
        "ALTER TABLE t ADD COLUMN n int CHECK (n > 0)",
        UNSUPPORTED,
        "ALTER TABLE ADD COLUMN with constraint not supported",
    ),
    ("ALTER TABLE t ADD COLUMN tags text[]", UNSUPPORTED, "datatype text[] not supported"),
    ("ALTER TABLE t ADD COLUMN tags int ARRAY", UNSUPPORTED, "datatype integer[] not supported"),
    ("ALTER TABLE t ADD COLUMN id serial", "42704", 'type "serial" does not exist'),
    ("ALTER TABLE t ADD COLUMN code char(9999)", "54000", "4096 bytes not supported for char"),
    ('ALTER TABLE t ADD COLUMN name text COLLATE "C"', UNSUPPORTED, "COLLATE"),
    # ALTER TABLE ... constraints
    (
        "ALTER TABLE t ADD CONSTRAINT t_u_fk FOREIGN KEY (u) REFERENCES u (id)",
        UNSUPPORTED,
        "unsupported ALTER TABLE ADD CONSTRAINT statement",
    ),
    (
        "ALTER TABLE t ADD FOREIGN KEY (u) REFERENCES u",
        UNSUPPORTED,
        "unsupported ALTER TABLE ADD CONSTRAINT statement",
    ),
    (
        "ALTER TABLE t ADD CONSTRAINT positive CHECK (n > 0)",
        UNSUPPORTED,
        "unsupported ALTER TABLE ADD CONSTRAINT statement",
    ),
    (
        "ALTER TABLE t ADD CONSTRAINT t_code UNIQUE (code)",
        UNSUPPORTED,
        "unsupported ALTER TABLE ADD CONSTRAINT statement",
    ),
    (
        "ALTER TABLE t ADD PRIMARY KEY (id)",
        UNSUPPORTED,
        "unsupported ALTER TABLE ADD CONSTRAINT statement",
    ),
    (
        "ALTER TABLE t ADD CONSTRAINT t_pk PRIMARY KEY USING INDEX t_id_idx",
        UNSUPPORTED,
        "unsupported ALTER TABLE ADD CONSTRAINT statement",
    ),
    ("ALTER TABLE t ADD EXCLUDE USING gist (p WITH &&)", UNSUPPORTED, "exclusion constraints"),
    (
        "ALTER TABLE t VALIDATE CONSTRAINT t_u_fk",
        UNSUPPORTED,
        "unsupported ALTER TABLE VALIDATE CONSTRAINT statement",
    ),
    # ALTER TABLE ... ALTER COLUMN and the rest
    ("ALTER TABLE t ALTER COLUMN a TYPE bigint", UNSUPPORTED, "TYPE"),
    ("ALTER TABLE t ALTER a SET DATA TYPE text USING a::text", UNSUPPORTED, "TYPE"),
    ("ALTER TABLE t ALTER COLUMN a SET NOT NULL", UNSUPPORTED, "SET NOT NULL"),
    ("ALTER TABLE t ALTER COLUMN a SET COMPRESSION lz4", UNSUPPORTED, "SET COMPRESSION"),
    (
        "ALTER TABLE t ALTER COLUMN a SET STATISTICS 1000",
        UNSUPPORTED,
        "unsupported ALTER TABLE ALTER COLUMN ... SET STATISTICS statement",
    ),
    ("ALTER TABLE t ALTER COLUMN a SET (n_distinct = 10)", UNSUPPORTED, "SET (...)"),
    ("ALTER TABLE t SET TABLESPACE fast", UNSUPPORTED, "SET TABLESPACE"),
    ("ALTER TABLE t CLUSTER ON t_pkey", UNSUPPORTED, "CLUSTER ON"),
    ("ALTER TABLE t SET WITHOUT CLUSTER", UNSUPPORTED, "SET WITHOUT CLUSTER"),
    ("ALTER TABLE t SET LOGGED", UNSUPPORTED, "SET LOGGED"),
    ("ALTER TABLE t SET UNLOGGED", UNSUPPORTED, "SET UNLOGGED"),
    ("ALTER TABLE t SET (fillfactor = 50)", UNSUPPORTED, "SET (...)"),
    ("ALTER TABLE t ENABLE TRIGGER audit", UNSUPPORTED, "ENABLE TRIGGER"),
    ("ALTER TABLE t DISABLE TRIGGER audit", UNSUPPORTED, "DISABLE TRIGGER"),
    (
        "ALTER TABLE t ENABLE ROW LEVEL SECURITY",
        UNSUPPORTED,
        "unsupported ALTER TABLE ENABLE ROW SECURITY statement",
    ),
    ("ALTER TABLE t REPLICA IDENTITY FULL", UNSUPPORTED, "REPLICA IDENTITY"),
    ("ALTER TABLE t INHERIT parent", UNSUPPORTED, "INHERIT"),
    ("ALTER TABLE m ATTACH PARTITION m2024 DEFAULT", UNSUPPORTED, "ATTACH PARTITION"),
    ("DROP INDEX CONCURRENTLY i", UNSUPPORTED, "DROP INDEX CONCURRENTLY must be first action"),
    (
        "ALTER DOMAIN d ADD CONSTRAINT positive CHECK (VALUE > 0)",
        UNSUPPORTED,
        "unsupported ALTER DOMAIN ADD CONSTRAINT statement",
    ),
    ("ALTER DOMAIN d SET NOT NULL", UNSUPPORTED, "unsupported ALTER DOMAIN SET NOT NULL statement"),
    (
        "ALTER STATISTICS s SET STATISTICS 200",
        "22023",
        "statistics target 200 exceeds maximum allowed value of 100",
    ),
    ("CREATE INDEX ASYNC i ON t (a text_pattern_ops)", UNSUPPORTED, "opclass not supported"),
    (
        "CREATE TABLE t (a int, b int, c int, d int, e int, f int, g int, h int, i int, "
        "PRIMARY KEY (a, b, c, d, e, f, g, h, i))",
        "54011",
        "more than 8 column keys in an index are not supported",
    ),
    (
        "CREATE TABLE t (a int, b int, c int, d int, e int, f int, g int, h int, i int, "
        "UNIQUE (a, b, c, d, e, f, g, h, i))",
        "54011",
        "more than 8 column keys",
    ),
    ("DROP INDEX CONCURRENTLY IF EXISTS s.i", UNSUPPORTED, "DROP INDEX CONCURRENTLY"),
    ("ALTER INDEX i SET (fillfactor = 50)", UNSUPPORTED, "ALTER INDEX"),
    ("ALTER MATERIALIZED VIEW mv SET (fillfactor = 50)", UNSUPPORTED, "materialized views"),
    # ALTER TABLE ASYNC
    ("ALTER TABLE ASYNC t ADD COLUMN b int", UNSUPPORTED, "ALTER TABLE ASYNC"),
    (
        "ALTER TABLE ASYNC t VALIDATE CONSTRAINT c, DROP COLUMN x",
        UNSUPPORTED,
        "ALTER TABLE ASYNC supports only VALIDATE CONSTRAINT",
    ),
    ("ALTER TABLE ASYNC t RENAME TO u", UNSUPPORTED, "ALTER TABLE ASYNC"),
    ("ALTER TABLE ASYNC t SET SCHEMA s", UNSUPPORTED, "ALTER TABLE ASYNC"),
    # asynchronous DDL inside a multi-statement query
    (
        "CREATE INDEX ASYNC i ON t (a); SELECT 1",
        UNSUPPORTED,
        "asynchronous DDL cannot be part of a multi-statement query",
    ),
    (
        "BEGIN; ALTER TABLE ASYNC t VALIDATE CONSTRAINT c; COMMIT",
        UNSUPPORTED,
        "multi-statement",
    ),
]


@pytest.mark.parametrize(("sql", "sqlstate", "feature"), REFUSALS, ids=[r[0] for r in REFUSALS])
def test_refusals_name_the_feature(sql: str, sqlstate: str, feature: str) -> None:
    rejection = _refusal(sql)
    assert rejection.sqlstate == sqlstate
    assert feature.lower() in rejection.message.lower()
    assert rejection.message == rejection.message.strip()


def test_refusals_offer_hints_for_the_common_mistakes() -> None:
    for sql in (
        "CREATE INDEX i ON t (a)",
        "SAVEPOINT sp",
        "TRUNCATE t",
        "ALTER TABLE t ADD CONSTRAINT fk FOREIGN KEY (u) REFERENCES u (id)",
        "CREATE SEQUENCE s",
        "CREATE TABLE t (id serial)",
    ):
        assert _refusal(sql).hint, sql


def test_foreign_key_hint_names_the_async_validation() -> None:
    hint = _refusal("ALTER TABLE s.t ADD CONSTRAINT t_fk FOREIGN KEY (u) REFERENCES u (id)").hint
    assert hint is not None
    assert "NOT VALID" in hint
    assert "ALTER TABLE ASYNC s.t VALIDATE CONSTRAINT t_fk" in hint


def test_plain_validate_hint_points_to_async() -> None:
    hint = _refusal("ALTER TABLE t VALIDATE CONSTRAINT c").hint
    assert hint == "run ALTER TABLE ASYNC t VALIDATE CONSTRAINT c"


def test_unique_constraint_hint_points_to_unique_index_async() -> None:
    hint = _refusal("ALTER TABLE t ADD CONSTRAINT u UNIQUE (code)").hint
    assert hint is not None
    assert "CREATE UNIQUE INDEX ASYNC" in hint


# --------------------------------------------------------------------------
# Accepted statements, by kind

ACCEPTED = [
    # READ
    ("SELECT 1", Kind.READ),
    ("select now()", Kind.READ),
    ("VALUES (1, 'a'), (2, 'b')", Kind.READ),
    ("TABLE t", Kind.READ),
    ("SELECT * FROM t FOR UPDATE", Kind.READ),
    ("SELECT * FROM t FOR UPDATE OF t SKIP LOCKED", Kind.READ),
    ("SELECT * FROM t FOR KEY SHARE", Kind.READ),
    (
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 5) "
        "SELECT * FROM n",
        Kind.READ,
    ),
    ("SHOW search_path", Kind.READ),
    ("SHOW statement_timeout", Kind.READ),
    ("SHOW ALL", Kind.READ),
    ("SHOW TRANSACTION ISOLATION LEVEL", Kind.READ),
    ("EXPLAIN SELECT * FROM t", Kind.READ),
    ("EXPLAIN DELETE FROM t", Kind.READ),
    ("EXPLAIN (ANALYZE false) UPDATE t SET a = 1", Kind.READ),
    ("EXPLAIN (ANALYZE off) INSERT INTO t VALUES (1)", Kind.READ),
    ("EXPLAIN ANALYZE SELECT * FROM t", Kind.READ),
    ("EXPLAIN (FORMAT JSON) SELECT 1", Kind.READ),
    ("ANALYZE t", Kind.READ),
    ("ANALYZE", Kind.READ),
    ("COPY t TO STDOUT", Kind.READ),
    ("COPY (SELECT * FROM t) TO STDOUT WITH (FORMAT csv)", Kind.READ),
    ("SELECT set_config('search_path', 'app, public', false)", Kind.READ),
    ("SELECT current_setting('statement_timeout')", Kind.READ),
    ("SELECT * FROM pg_catalog.pg_class", Kind.READ),
    ("SELECT other.wait_for_job('x')", Kind.READ),
    ("SELECT * FROM sys.jobs", Kind.READ),
    ("SELECT gen_random_uuid()", Kind.READ),
    # WRITE
    ("INSERT INTO t (a) VALUES (1)", Kind.WRITE),
    (
        "INSERT INTO t VALUES (1) ON CONFLICT (a) DO UPDATE SET a = excluded.a RETURNING *",
        Kind.WRITE,
    ),
    ("UPDATE t SET a = a + 1 WHERE id = $1", Kind.WRITE),
    ("DELETE FROM t WHERE id = $1", Kind.WRITE),
    ("MERGE INTO t USING u ON t.id = u.id WHEN MATCHED THEN UPDATE SET a = u.a", Kind.WRITE),
    ("WITH n AS (SELECT 1 AS a) INSERT INTO t SELECT a FROM n", Kind.WRITE),
    ("WITH gone AS (DELETE FROM t RETURNING *) SELECT count(*) FROM gone", Kind.WRITE),
    ("EXPLAIN ANALYZE INSERT INTO t VALUES (1)", Kind.WRITE),
    ("EXPLAIN (ANALYZE, BUFFERS) UPDATE t SET a = 1", Kind.WRITE),
    ("EXPLAIN (ANALYZE true, FORMAT JSON) DELETE FROM t", Kind.WRITE),
    ("COPY t FROM STDIN", Kind.WRITE),
    ("COPY t (a, b) FROM STDIN WITH (FORMAT csv)", Kind.WRITE),
    ("CALL app.archive_orders(30)", Kind.WRITE),
    ("EXECUTE q(1)", Kind.WRITE),
    # DDL
    (
        "CREATE TABLE owner (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), name text NOT NULL)",
        Kind.DDL,
    ),
    (
        "CREATE TABLE pet (id uuid PRIMARY KEY, owner_id uuid NOT NULL REFERENCES owner (id) "
        "ON DELETE CASCADE, weight numeric CHECK (weight > 0), born date, "
        "UNIQUE (owner_id, born), FOREIGN KEY (owner_id) REFERENCES owner (id) MATCH FULL "
        "DEFERRABLE INITIALLY DEFERRED)",
        Kind.DDL,
    ),
    ("CREATE TABLE IF NOT EXISTS t (price numeric, doc jsonb, meta json)", Kind.DDL),
    ("CREATE TABLE t (id bigint GENERATED ALWAYS AS IDENTITY (CACHE 1) PRIMARY KEY)", Kind.DDL),
    ("CREATE TABLE t (id int8 GENERATED BY DEFAULT AS IDENTITY (CACHE 65536))", Kind.DDL),
    (
        "CREATE TABLE t (id bigint GENERATED BY DEFAULT AS IDENTITY "
        "(START WITH 100 INCREMENT BY 5 CACHE 1000000))",
        Kind.DDL,
    ),
    ("CREATE TABLE t (LIKE other INCLUDING DEFAULTS)", Kind.DDL),
    ("CREATE SEQUENCE s CACHE 1", Kind.DDL),
    ("CREATE SEQUENCE s AS bigint START 10 INCREMENT 2 CACHE 65536", Kind.DDL),
    ("CREATE SEQUENCE s CACHE 100000000000", Kind.DDL),
    ("ALTER SEQUENCE s RESTART WITH 5", Kind.DDL),
    ("ALTER SEQUENCE s CACHE 70000", Kind.DDL),
    ("ALTER SEQUENCE s OWNED BY t.id", Kind.DDL),
    ("CREATE VIEW v AS SELECT * FROM t", Kind.DDL),
    ("CREATE OR REPLACE VIEW v AS SELECT a FROM t WHERE a > 0", Kind.DDL),
    ("CREATE SCHEMA app", Kind.DDL),
    ("CREATE SCHEMA IF NOT EXISTS app AUTHORIZATION app_user", Kind.DDL),
    ("CREATE SCHEMA app CREATE TABLE t (a int) CREATE VIEW v AS SELECT 1", Kind.DDL),
    ("CREATE ROLE app WITH LOGIN", Kind.DDL),
    ("CREATE USER reporter", Kind.DDL),
    ("GRANT SELECT, INSERT ON t TO app", Kind.DDL),
    ("GRANT USAGE ON SCHEMA app TO app", Kind.DDL),
    ("GRANT app TO admin", Kind.DDL),
    ("REVOKE ALL ON t FROM app", Kind.DDL),
    ("DROP ROLE app", Kind.DDL),
    ("DROP TABLE IF EXISTS t CASCADE", Kind.DDL),
    ("DROP INDEX t_a_idx", Kind.DDL),
    ("DROP VIEW v", Kind.DDL),
    ("DROP SEQUENCE s", Kind.DDL),
    ("DROP SCHEMA app CASCADE", Kind.DDL),
    ("COMMENT ON TABLE t IS 'things'", Kind.DDL),
    ("COMMENT ON COLUMN t.a IS 'the a'", Kind.DDL),
    ("CREATE FUNCTION add(a int, b int) RETURNS int LANGUAGE sql AS 'SELECT a + b'", Kind.DDL),
    (
        "CREATE FUNCTION one() RETURNS int LANGUAGE SQL IMMUTABLE BEGIN ATOMIC SELECT 1; END",
        Kind.DDL,
    ),
    ("CREATE OR REPLACE FUNCTION two() RETURNS int AS $$ SELECT 2 $$ LANGUAGE sql", Kind.DDL),
    ("DROP FUNCTION add(int, int)", Kind.DDL),
    ("CREATE DOMAIN positive AS int CHECK (VALUE > 0)", Kind.DDL),
    ("CREATE STATISTICS t_stats (dependencies) ON a, b FROM t", Kind.DDL),
    ("ALTER TABLE t ADD COLUMN b text", Kind.DDL),
    ("ALTER TABLE t ADD b int NULL", Kind.DDL),
    ("ALTER TABLE IF EXISTS t ADD COLUMN IF NOT EXISTS c numeric(10, 2)", Kind.DDL),
    ("ALTER TABLE t ADD COLUMN c int, ADD COLUMN d text", Kind.DDL),
    ("ALTER TABLE t DROP COLUMN b", Kind.DDL),
    ("ALTER TABLE t DROP COLUMN IF EXISTS b CASCADE", Kind.DDL),
    ("ALTER TABLE t ALTER COLUMN a DROP NOT NULL", Kind.DDL),
    ("ALTER TABLE t ALTER COLUMN a SET DEFAULT 0", Kind.DDL),
    ("ALTER TABLE t ALTER COLUMN a DROP DEFAULT", Kind.DDL),
    ("ALTER TABLE t RENAME TO u", Kind.DDL),
    ("ALTER TABLE t RENAME COLUMN a TO b", Kind.DDL),
    ("ALTER TABLE t RENAME CONSTRAINT c1 TO c2", Kind.DDL),
    ("ALTER TABLE t ALTER CONSTRAINT t_fk DEFERRABLE INITIALLY DEFERRED", Kind.DDL),
    ("ALTER TABLE t OWNER TO app", Kind.DDL),
    ("ALTER TABLE t SET SCHEMA archive", Kind.DDL),
    ("ALTER TABLE t ADD CONSTRAINT t_u_fk FOREIGN KEY (u) REFERENCES u (id) NOT VALID", Kind.DDL),
    ("ALTER TABLE t ADD CONSTRAINT positive CHECK (n > 0) NOT VALID", Kind.DDL),
    ("ALTER TABLE t DROP CONSTRAINT positive", Kind.DDL),
    ("ALTER TABLE t DROP CONSTRAINT IF EXISTS positive CASCADE", Kind.DDL),
    ("ALTER TABLE t ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY (CACHE 1)", Kind.DDL),
    ("ALTER TABLE t ALTER COLUMN id SET GENERATED BY DEFAULT", Kind.DDL),
    ("ALTER TABLE t ALTER COLUMN id RESTART WITH 1000", Kind.DDL),
    ("ALTER TABLE t ALTER COLUMN id SET CACHE 65536", Kind.DDL),
    ("ALTER TABLE t ALTER COLUMN id DROP IDENTITY IF EXISTS", Kind.DDL),
    ("ALTER TABLE t ALTER COLUMN a SET STORAGE PLAIN", Kind.DDL),
    ("ALTER TABLE t ENABLE TRIGGER ALL", Kind.DDL),
    ("ALTER TABLE t DISABLE TRIGGER USER", Kind.DDL),
    ("ALTER VIEW v RENAME TO w", Kind.DDL),
    ("ALTER VIEW v SET (security_barrier = true)", Kind.DDL),
    ("ALTER VIEW v RESET (security_barrier)", Kind.DDL),
    ("ALTER INDEX i RENAME TO j", Kind.DDL),
    ("ALTER DOMAIN d SET DEFAULT 1", Kind.DDL),
    ("ALTER STATISTICS s SET STATISTICS 100", Kind.DDL),
    ("ALTER STATISTICS s SET STATISTICS -1", Kind.DDL),
    ("ALTER DOMAIN d DROP NOT NULL", Kind.DDL),
    ("ALTER INDEX IF EXISTS s.i RENAME TO j", Kind.DDL),
    ("ALTER TABLE t ADD CONSTRAINT t_code UNIQUE USING INDEX t_code_idx", Kind.DDL),
    ("ALTER TABLE t ADD UNIQUE USING INDEX t_code_idx", Kind.DDL),
    ("DROP INDEX i", Kind.DDL),
    ("CREATE TABLE t (code char(4096), name varchar(65535), price numeric)", Kind.DDL),
    ("CREATE TABLE t (doc jsonb, body json)", Kind.DDL),
    ("SELECT '10.0.0.1'::inet << '10.0.0.0/8'::inet", Kind.READ),
    ("CREATE TABLE t (id bigint GENERATED ALWAYS AS IDENTITY (CACHE 65536))", Kind.DDL),
    ("ALTER VIEW v OWNER TO app", Kind.DDL),
    ("ALTER SCHEMA app RENAME TO app2", Kind.DDL),
    ("ALTER TABLE async ADD COLUMN b int", Kind.DDL),
    ("AWS IAM GRANT app TO 'arn:aws:iam::123456789012:role/app'", Kind.DDL),
    ("aws iam revoke app from 'arn:aws:iam::123456789012:role/app';", Kind.DDL),
    # BEGIN
    ("BEGIN", Kind.BEGIN),
    ("BEGIN WORK", Kind.BEGIN),
    ("begin transaction", Kind.BEGIN),
    ("START TRANSACTION", Kind.BEGIN),
    ("BEGIN ISOLATION LEVEL REPEATABLE READ", Kind.BEGIN),
    ("BEGIN READ ONLY", Kind.BEGIN),
    ("START TRANSACTION READ WRITE, ISOLATION LEVEL REPEATABLE READ", Kind.BEGIN),
    # COMMIT
    ("COMMIT", Kind.COMMIT),
    ("COMMIT WORK", Kind.COMMIT),
    ("END", Kind.COMMIT),
    ("COMMIT AND NO CHAIN", Kind.COMMIT),
    # ROLLBACK
    ("ROLLBACK", Kind.ROLLBACK),
    ("ROLLBACK TRANSACTION", Kind.ROLLBACK),
    ("ABORT", Kind.ROLLBACK),
    ("ROLLBACK AND NO CHAIN", Kind.ROLLBACK),
    # SESSION
    ("SET search_path TO app, public", Kind.SESSION),
    ("SET search_path TO DEFAULT", Kind.SESSION),
    ("SET SCHEMA 'app'", Kind.SESSION),
    ("SET LOCAL search_path = app", Kind.SESSION),
    ("SET SESSION application_name = 'api'", Kind.SESSION),
    ("SET TIME ZONE 'UTC'", Kind.SESSION),
    ("SET TIME ZONE LOCAL", Kind.SESSION),
    ("SET timezone TO 'Europe/Paris'", Kind.SESSION),
    ("SET TimeZone = 'UTC'", Kind.SESSION),
    ("SET NAMES 'UTF8'", Kind.SESSION),
    ("SET client_encoding = 'UTF8'", Kind.SESSION),
    ("SET datestyle = 'ISO, MDY'", Kind.SESSION),
    ("SET intervalstyle = 'iso_8601'", Kind.SESSION),
    ("SET extra_float_digits = 3", Kind.SESSION),
    ("SET bytea_output = 'hex'", Kind.SESSION),
    ("SET jit = off", Kind.SESSION),
    ("SELECT set_config('jit', 'off', false)", Kind.READ),
    ("SET standard_conforming_strings = on", Kind.SESSION),
    ("SET enable_seqscan = off", Kind.SESSION),
    ("SET enable_nestloop TO false", Kind.SESSION),
    ("SET plan_cache_mode = force_generic_plan", Kind.SESSION),
    ("SET random_page_cost = 1.1", Kind.SESSION),
    ("SET seq_page_cost = 1", Kind.SESSION),
    ("SET cpu_tuple_cost = 0.02", Kind.SESSION),
    ("SET cpu_operator_cost = 0.0025", Kind.SESSION),
    ("SET join_collapse_limit = 1", Kind.SESSION),
    ("SET from_collapse_limit = 8", Kind.SESSION),
    ("SET geqo = off", Kind.SESSION),
    ("SET geqo_threshold = 14", Kind.SESSION),
    ("SET transaction_isolation = 'repeatable read'", Kind.SESSION),
    ("SET default_transaction_isolation TO 'REPEATABLE READ'", Kind.SESSION),
    ("SET default_transaction_isolation TO DEFAULT", Kind.SESSION),
    ("SET transaction_read_only = on", Kind.SESSION),
    ("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ", Kind.SESSION),
    ("SET TRANSACTION READ ONLY", Kind.SESSION),
    ("SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL REPEATABLE READ", Kind.SESSION),
    ("SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE", Kind.SESSION),
    ("RESET ALL", Kind.SESSION),
    ("RESET search_path", Kind.SESSION),
    ("RESET TIME ZONE", Kind.SESSION),
    ("RESET TRANSACTION ISOLATION LEVEL", Kind.SESSION),
    ("SET SESSION AUTHORIZATION DEFAULT", Kind.SESSION),
    ("RESET SESSION AUTHORIZATION", Kind.SESSION),
    ("DEALLOCATE ALL", Kind.SESSION),
    ("DEALLOCATE PREPARE ALL", Kind.SESSION),
    ("CLOSE ALL", Kind.SESSION),
    ("CLOSE c", Kind.SESSION),
    ("SET CONSTRAINTS ALL DEFERRED", Kind.SESSION),
    # EMPTY
    ("", Kind.EMPTY),
    ("   \n\t", Kind.EMPTY),
    ("-- nothing to see", Kind.EMPTY),
    ("/* a block */ -- and a line", Kind.EMPTY),
    (";", Kind.EMPTY),
    (" ; ;\n", Kind.EMPTY),
]


@pytest.mark.parametrize(("sql", "kind"), ACCEPTED, ids=[f"{k.value}:{s}" for s, k in ACCEPTED])
def test_accepted_statements(sql: str, kind: Kind) -> None:
    verdict = check(sql)
    assert verdict.rejection is None, verdict.rejection
    assert [s.kind for s in verdict.statements] == [kind]


@pytest.mark.parametrize(
    ("sql", "read_only"),
    [
        ("BEGIN", None),
        ("BEGIN READ ONLY", True),
        ("BEGIN READ WRITE", False),
        ("START TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY", True),
        ("START TRANSACTION READ ONLY, READ WRITE", False),
        ("BEGIN ISOLATION LEVEL REPEATABLE READ", None),
    ],
)
def test_begin_reports_read_only(sql: str, read_only: bool | None) -> None:
    statement = _only(sql)
    assert statement.kind is Kind.BEGIN
    assert statement.read_only is read_only


def test_read_only_is_only_reported_for_begin() -> None:
    assert _only("SET TRANSACTION READ ONLY").read_only is None


# --------------------------------------------------------------------------
# Relations

RELATIONS = [
    (
        "SELECT o.name, p.name FROM public.owner o JOIN pet p ON p.owner_id = o.id",
        {"public.owner", "pet"},
    ),
    ("SELECT * FROM Public.Owner", {"public.owner"}),
    ('SELECT * FROM "MixedCase"', {"mixedcase"}),
    (
        "SELECT * FROM a WHERE id IN (SELECT a_id FROM b) AND EXISTS (SELECT 1 FROM c)",
        {"a", "b", "c"},
    ),
    ("SELECT (SELECT max(x) FROM s.m) FROM n", {"s.m", "n"}),
    (
        "WITH recent AS (SELECT * FROM orders) SELECT * FROM recent JOIN customers ON true",
        {"orders", "customers"},
    ),
    ("INSERT INTO t (a) SELECT a FROM u", {"t", "u"}),
    ("UPDATE t SET a = u.a FROM u WHERE t.id = u.id", {"t", "u"}),
    ("DELETE FROM t USING u WHERE t.id = u.id", {"t", "u"}),
    ("MERGE INTO t USING u ON t.id = u.id WHEN NOT MATCHED THEN INSERT VALUES (u.id)", {"t", "u"}),
    ("SELECT * FROM pg_catalog.pg_class JOIN pg_namespace ON true", set()),
    ("SELECT * FROM information_schema.columns", set()),
    ("SELECT * FROM pg_toast.pg_toast_1", set()),
    ("SELECT 1", set()),
    ("ALTER TABLE s.t ADD COLUMN c int", {"s.t"}),
    ("ALTER TABLE t RENAME TO u", {"t"}),
    ("CREATE INDEX ASYNC i ON s.t (a)", {"s.t"}),
    ("CREATE TABLE t (a uuid REFERENCES u (id))", {"t", "u"}),
    ("CREATE VIEW v AS SELECT * FROM t", {"v", "t"}),
    ("DROP TABLE a, s.b, pg_temp.c", {"a", "s.b"}),
    ("DROP INDEX IF EXISTS i", {"i"}),
    ("DROP SCHEMA s", set()),
    ("GRANT SELECT ON t TO app", {"t"}),
    ("COPY t FROM STDIN", {"t"}),
    ("TRUNCATE t", {"t"}),
    ("EXPLAIN ANALYZE UPDATE t SET a = 1", {"t"}),
    ("CALL sys.wait_for_job('x')", set()),
    ("ALTER TABLE ASYNC t VALIDATE CONSTRAINT c", {"t"}),
    ('SELECT * FROM "tâble"', {"tâble"}),
]


@pytest.mark.parametrize(("sql", "relations"), RELATIONS, ids=[r[0] for r in RELATIONS])
def test_relations(sql: str, relations: set[str]) -> None:
    assert _only(sql).relations == frozenset(relations)


def test_relations_are_per_statement() -> None:
    verdict = check("SELECT * FROM a; UPDATE b SET x = 1; SELECT 1")
    assert [s.relations for s in verdict.statements] == [
        frozenset({"a"}),
        frozenset({"b"}),
        frozenset(),
    ]


# --------------------------------------------------------------------------
# Asynchronous jobs

INDEX_BUILDS = [
    (
        "CREATE INDEX ASYNC t_a_idx ON t (a)",
        "t_a_idx",
        "t",
        "CREATE INDEX t_a_idx ON t (a)",
    ),
    (
        "CREATE UNIQUE INDEX ASYNC owner_email ON public.owner (email)",
        "owner_email",
        "public.owner",
        "CREATE UNIQUE INDEX owner_email ON public.owner (email)",
    ),
    (
        "CREATE INDEX ASYNC IF NOT EXISTS i ON t (a)",
        "i",
        "t",
        "CREATE INDEX IF NOT EXISTS i ON t (a)",
    ),
    (
        "CREATE INDEX ASYNC i ON t (a) INCLUDE (b, c)",
        "i",
        "t",
        "CREATE INDEX i ON t (a) INCLUDE (b, c)",
    ),
    (
        "CREATE UNIQUE INDEX ASYNC i ON t (a) NULLS NOT DISTINCT",
        "i",
        "t",
        "CREATE UNIQUE INDEX i ON t (a) NULLS NOT DISTINCT",
    ),
    (
        "CREATE UNIQUE INDEX ASYNC i ON t (a) NULLS DISTINCT",
        "i",
        "t",
        "CREATE UNIQUE INDEX i ON t (a) NULLS DISTINCT",
    ),
    (
        "CREATE INDEX ASYNC i ON t (a) WHERE deleted_at IS NULL",
        "i",
        "t",
        "CREATE INDEX i ON t (a) WHERE deleted_at IS NULL",
    ),
    (
        "CREATE INDEX ASYNC i ON t (a NULLS FIRST, b NULLS LAST)",
        "i",
        "t",
        "CREATE INDEX i ON t (a NULLS FIRST, b NULLS LAST)",
    ),
    (
        "CREATE INDEX ASYNC i ON t ((lower(email)), (a + b))",
        "i",
        "t",
        "CREATE INDEX i ON t ((lower(email)), (a + b))",
    ),
    (
        "CREATE INDEX ASYNC i ON t (lower(email))",
        "i",
        "t",
        "CREATE INDEX i ON t (lower(email))",
    ),
    (
        "create unique index async if not exists everything on app.t "
        "(a nulls first, (lower(b)) nulls last) include (c) nulls not distinct where c > 0;",
        "everything",
        "app.t",
        "create unique index if not exists everything on app.t "
        "(a nulls first, (lower(b)) nulls last) include (c) nulls not distinct where c > 0",
    ),
    (
        "-- build it\nCREATE INDEX /* why */ ASYNC\n  i ON t (a) -- trailing\n;",
        "i",
        "t",
        "CREATE INDEX /* why */ i ON t (a)",
    ),
    (
        'CREATE INDEX ASYNC "Mixed" ON "Tbl" ("Col")',
        "Mixed",
        "Tbl",
        'CREATE INDEX "Mixed" ON "Tbl" ("Col")',
    ),
    (
        "CREATE INDEX ASYNC i ON ONLY t (a)",
        "i",
        "t",
        "CREATE INDEX i ON ONLY t (a)",
    ),
    (
        "CREATE INDEX ASYNC ON t (a, b)",
        "t_a_b_idx",
        "t",
        "CREATE INDEX ON t (a, b)",
    ),
    (
        "CREATE INDEX ASYNC ON t ((lower(email))) INCLUDE (id)",
        "t_lower_id_idx",
        "t",
        "CREATE INDEX ON t ((lower(email))) INCLUDE (id)",
    ),
    (
        "CREATE INDEX ASYNC i ON t (a, b, c, d, e, f, g, h)",
        "i",
        "t",
        "CREATE INDEX i ON t (a, b, c, d, e, f, g, h)",
    ),
]


@pytest.mark.parametrize(
    ("sql", "name", "table", "backend_sql"), INDEX_BUILDS, ids=[b[0] for b in INDEX_BUILDS]
)
def test_index_build_jobs(sql: str, name: str, table: str, backend_sql: str) -> None:
    verdict = check(sql)
    assert verdict.rejection is None
    (statement,) = verdict.statements
    assert statement.kind is Kind.ASYNC_DDL
    assert statement.async_job == AsyncJob("INDEX_BUILD", name, table, backend_sql)
    # The backend runs the statement as plain PostgreSQL: it must parse, and
    # mean the same as the original without its ASYNC keyword.
    (raw,) = parse_sql(backend_sql)
    assert isinstance(raw.stmt, ast.IndexStmt)
    (original,) = parse_sql(re.sub(r"\basync\b", "", sql, count=1, flags=re.IGNORECASE))
    assert raw.stmt == original.stmt


def test_index_build_job_keeps_every_option() -> None:
    job = _only(
        "CREATE UNIQUE INDEX ASYNC IF NOT EXISTS i ON s.t (a NULLS FIRST, (lower(b)) NULLS LAST) "
        "INCLUDE (c) NULLS NOT DISTINCT WHERE c > 0"
    ).async_job
    assert job is not None
    (raw,) = parse_sql(job.backend_sql)
    index = raw.stmt
    assert isinstance(index, ast.IndexStmt)
    assert index.unique
    assert index.if_not_exists
    assert index.nulls_not_distinct
    assert index.whereClause is not None
    assert [e.name for e in index.indexIncludingParams or ()] == ["c"]
    keys = index.indexParams or ()
    assert keys[0].name == "a"
    assert keys[1].expr is not None
    assert [k.nulls_ordering.name for k in keys] == ["SORTBY_NULLS_FIRST", "SORTBY_NULLS_LAST"]
    assert index.relation is not None
    assert (index.relation.schemaname, index.relation.relname) == ("s", "t")


VALIDATIONS = [
    ("ALTER TABLE ASYNC t VALIDATE CONSTRAINT c", "c", "t", "ALTER TABLE t VALIDATE CONSTRAINT c"),
    (
        "alter table async app.orders validate constraint orders_customer_fk;",
        "orders_customer_fk",
        "app.orders",
        "alter table app.orders validate constraint orders_customer_fk",
    ),
    (
        'ALTER TABLE ASYNC "Order" VALIDATE CONSTRAINT "Fk"',
        "Fk",
        "Order",
        'ALTER TABLE "Order" VALIDATE CONSTRAINT "Fk"',
    ),
    (
        "ALTER TABLE ASYNC IF EXISTS ONLY t VALIDATE CONSTRAINT c",
        "c",
        "t",
        "ALTER TABLE IF EXISTS ONLY t VALIDATE CONSTRAINT c",
    ),
]


@pytest.mark.parametrize(
    ("sql", "name", "table", "backend_sql"), VALIDATIONS, ids=[v[0] for v in VALIDATIONS]
)
def test_validate_constraint_jobs(sql: str, name: str, table: str, backend_sql: str) -> None:
    verdict = check(sql)
    assert verdict.rejection is None
    (statement,) = verdict.statements
    assert statement.kind is Kind.ASYNC_DDL
    assert statement.async_job == AsyncJob("VALIDATE_CONSTRAINT", name, table, backend_sql)
    (raw,) = parse_sql(backend_sql)
    assert isinstance(raw.stmt, ast.AlterTableStmt)


def test_refused_async_ddl_carries_no_job() -> None:
    verdict = check("CREATE INDEX ASYNC i ON t (a DESC)")
    assert verdict.statements[0].kind is Kind.ASYNC_DDL
    assert verdict.statements[0].async_job is None


def test_a_table_named_async_is_not_the_keyword() -> None:
    verdict = check("ALTER TABLE async RENAME COLUMN a TO b")
    assert verdict.rejection is None
    assert verdict.statements[0].kind is Kind.DDL
    assert verdict.statements[0].relations == frozenset({"async"})


# --------------------------------------------------------------------------
# sys.wait_for_job

WAITS = [
    ("CALL sys.wait_for_job('4xkzbdbq6wu5ej7tzpuqeowgfu')", "4xkzbdbq6wu5ej7tzpuqeowgfu"),
    ("call SYS.WAIT_FOR_JOB('abc');", "abc"),
    ("CALL sys.wait_for_job('abc'::text)", "abc"),
    ("CALL sys.wait_for_job($1)", None),
    ("CALL sys.wait_for_job(CAST($1 AS text))", None),
]


@pytest.mark.parametrize(("sql", "job_id"), WAITS, ids=[w[0] for w in WAITS])
def test_wait_for_job(sql: str, job_id: str | None) -> None:
    verdict = check(sql)
    assert verdict.rejection is None
    assert verdict.statements == (Statement(Kind.WAIT_FOR_JOB, frozenset(), job_id_literal=job_id),)


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT sys.wait_for_job('abc')",
        "SELECT sys.wait_for_job($1)",
        "SELECT sys.wait_for_job('a'), 1",
        "SELECT 1 WHERE sys.wait_for_job('a')",
        "CALL app.p(sys.wait_for_job('a'))",
    ],
)
def test_wait_for_job_is_a_procedure(sql: str) -> None:
    rejection = _refusal(sql)
    assert (rejection.sqlstate, rejection.message) == (
        "42809",
        "sys.wait_for_job(unknown) is a procedure",
    )
    assert rejection.hint == "To call a procedure, use CALL."


def test_other_procedures_are_writes() -> None:
    statement = _only("CALL app.wait_for_job('abc')")
    assert statement.kind is Kind.WRITE
    assert statement.job_id_literal is None


# --------------------------------------------------------------------------
# Multi-statement query strings


def test_multi_statement_kinds_in_order() -> None:
    verdict = check("BEGIN; INSERT INTO t VALUES (1); SELECT * FROM t; COMMIT;")
    assert verdict.rejection is None
    assert [s.kind for s in verdict.statements] == [Kind.BEGIN, Kind.WRITE, Kind.READ, Kind.COMMIT]


def test_multi_statement_lists_every_statement_and_the_first_refusal() -> None:
    verdict = check("SELECT 1; SAVEPOINT a; TRUNCATE t; SELECT 2")
    assert [s.kind for s in verdict.statements] == [
        Kind.READ,
        Kind.SESSION,
        Kind.WRITE,
        Kind.READ,
    ]
    assert verdict.rejection is not None
    assert "SAVEPOINT" in verdict.rejection.message


def test_multi_statement_refusal_order_follows_the_text() -> None:
    rejection = _refusal("TRUNCATE t; SAVEPOINT a")
    assert rejection.message == "unsupported statement: Truncate"


def test_single_async_statement_with_semicolon_is_not_multi() -> None:
    verdict = check("CREATE INDEX ASYNC i ON t (a);  -- done\n")
    assert verdict.rejection is None
    assert len(verdict.statements) == 1


def test_multi_statement_async_statement_keeps_its_job_but_is_refused() -> None:
    verdict = check("SELECT 1; CREATE INDEX ASYNC i ON t (a)")
    assert [s.kind for s in verdict.statements] == [Kind.READ, Kind.ASYNC_DDL]
    assert verdict.rejection is not None
    assert "multi-statement" in verdict.rejection.message


def test_multi_statement_with_iam_grant() -> None:
    verdict = check(
        "CREATE ROLE app WITH LOGIN; "
        "AWS IAM GRANT app TO 'arn:aws:iam::123456789012:role/app'; "
        "GRANT USAGE ON SCHEMA s TO app; SELECT * FROM t"
    )
    assert verdict.rejection is None
    assert [s.kind for s in verdict.statements] == [Kind.DDL, Kind.DDL, Kind.DDL, Kind.READ]
    assert verdict.statements[1].relations == frozenset()
    assert verdict.statements[3].relations == frozenset({"t"})


def test_iam_grant_first_then_other_statements() -> None:
    verdict = check("AWS IAM GRANT app TO 'arn:aws:iam::1:role/x'; SELECT * FROM t")
    assert [s.kind for s in verdict.statements] == [Kind.DDL, Kind.READ]


def test_empty_statements_between_semicolons_are_skipped() -> None:
    verdict = check("SELECT 1;; -- note\n ; SELECT 2;")
    assert [s.kind for s in verdict.statements] == [Kind.READ, Kind.READ]


# --------------------------------------------------------------------------
# Syntax errors and odd input pass through

SYNTAX_ERRORS = [
    "SELEC 1",
    "SELECT FROM WHERE",
    "select 'unterminated",
    "select $$unterminated",
    "/* unterminated comment",
    "CREATE TABLE (",
    "SAVEPOINT a; SELEC 1",
    "CREATE INDEX ASYNC ON",
    "ALTER TABLE ASYNC",
    "AWS IAM GRANT",
    "CREATE INDEX ASYNC i ON t (a) GARBAGE",
    "select E'\\xff'",
]


@pytest.mark.parametrize("sql", SYNTAX_ERRORS)
def test_syntax_errors_pass_through(sql: str) -> None:
    assert check(sql) == Verdict((Statement(Kind.READ, frozenset()),), None)


@pytest.mark.parametrize("sql", ["\x00", "'", "$$", ";;;;", "(" * 50, "é" * 100, "\ufeffSELECT 1"])
def test_never_raises(sql: str) -> None:
    verdict = check(sql)
    assert isinstance(verdict, Verdict)
    assert verdict.statements


def test_internal_errors_pass_through(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(sql: str) -> Verdict:
        raise RuntimeError("boom")

    monkeypatch.setattr(rules, "_check", broken)
    sql = "SELECT 'a query nobody classified before'"
    assert check(sql) == Verdict((Statement(Kind.READ, frozenset()),), None)


# --------------------------------------------------------------------------
# Caching


def test_cache_returns_the_same_object() -> None:
    sql = "SELECT * FROM cache_probe WHERE id = $1"
    first = check(sql)
    hits = check.cache_info().hits
    assert check(sql) is first
    assert check.cache_info().hits == hits + 1


def test_cache_is_by_exact_text() -> None:
    assert check("SELECT * FROM cache_a") is not check("SELECT * FROM cache_a ")
    assert check.cache_info().maxsize == 4096


def test_results_are_immutable() -> None:
    verdict = check("SELECT 1")
    with pytest.raises(AttributeError):
        verdict.rejection = None  # type: ignore[misc]


# --------------------------------------------------------------------------
# dsql-lint as a second opinion


def _fake_lint(tmp_path: Path, output: str, exit_code: int = 1) -> str:
    script = tmp_path / "dsql-lint"
    script.write_text(f"#!/bin/sh\ncat > /dev/null\ncat <<'EOF'\n{output}\nEOF\nexit {exit_code}\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return str(script)


def _report(*diagnostics: dict[str, object]) -> str:
    return json.dumps(
        {
            "schema_version": 1,
            "files": [
                {
                    "file": "<stdin>",
                    "diagnostics": list(diagnostics),
                    "error": None,
                    "output_file": None,
                    "fixed_sql": None,
                }
            ],
            "summary": {"errors": len(diagnostics), "warnings": 0, "fixed": 0},
        }
    )


def _diagnostic(
    rule: str, message: str, suggestion: str = "do something else"
) -> dict[str, object]:
    return {
        "rule": rule,
        "line": 1,
        "message": message,
        "suggestion": suggestion,
        "fix_result": {"status": "unfixable"},
        "statement_preview": "...",
    }


def _use_lint(monkeypatch: pytest.MonkeyPatch, path: str | None) -> None:
    monkeypatch.setattr("shutil.which", lambda name: path)


def test_lint_maps_the_first_refusal(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    output = _report(
        _diagnostic("parse_error", "Failed to parse SQL"),
        _diagnostic("multi_ddl_transaction", "Transaction contains 2 DDL statements."),
        _diagnostic("mysql_enum_to_varchar", "enum became varchar"),
        _diagnostic("identity_add_generated_collapse", "collapsed"),
        _diagnostic("truncate", "TRUNCATE is not supported in DSQL.", "Use DELETE."),
        _diagnostic("unsupported_vacuum", "VACUUM is not supported in DSQL."),
    )
    _use_lint(monkeypatch, _fake_lint(tmp_path, output))
    assert rules.lint_second_opinion("TRUNCATE t") == Rejection(
        UNSUPPORTED, "TRUNCATE is not supported in DSQL.", "Use DELETE."
    )


def test_lint_advisories_alone_are_no_refusal(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    output = _report(
        _diagnostic("parse_error", "Failed to parse SQL"),
        _diagnostic("mixed_ddl_dml_transaction", "Transaction mixes DDL and DML."),
        _diagnostic("serial_sequence_idiom", "idiom"),
    )
    _use_lint(monkeypatch, _fake_lint(tmp_path, output))
    assert rules.lint_second_opinion("SELECT 1") is None


@pytest.mark.parametrize(
    ("output", "exit_code"),
    [("not json at all", 1), (_report(), 0), ("[]", 1), (_report(), 2), ('{"files": 3}', 1)],
)
def test_lint_unusable_output_is_no_refusal(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, output: str, exit_code: int
) -> None:
    _use_lint(monkeypatch, _fake_lint(tmp_path, output, exit_code))
    assert rules.lint_second_opinion("SELECT 1") is None


def test_lint_missing_binary(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _use_lint(monkeypatch, None)
    monkeypatch.setattr("sys.executable", str(tmp_path / "python"))
    assert rules.lint_second_opinion("SAVEPOINT a") is None


def test_lint_found_next_to_the_interpreter(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _fake_lint(tmp_path, _report(_diagnostic("unsupported_listen", "LISTEN is not supported.")))
    _use_lint(monkeypatch, None)
    monkeypatch.setattr("sys.executable", str(tmp_path / "python"))
    rejection = rules.lint_second_opinion("LISTEN x")
    assert rejection is not None
    assert rejection.message == "LISTEN is not supported."


def test_lint_timeout(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _use_lint(monkeypatch, _fake_lint(tmp_path, _report()))
    seen: dict[str, object] = {}

    def slow(*args: object, **kwargs: object) -> None:
        seen.update(kwargs)
        raise subprocess.TimeoutExpired("dsql-lint", 5)

    monkeypatch.setattr("subprocess.run", slow)
    assert rules.lint_second_opinion("SELECT 1") is None
    assert seen["timeout"] == 5.0


_REAL_LINT = rules._find_dsql_lint()
needs_lint = pytest.mark.skipif(_REAL_LINT is None, reason="dsql-lint is not installed")


@needs_lint
@pytest.mark.parametrize(
    ("sql", "fragment"),
    [
        ("SAVEPOINT a", "SAVEPOINT"),
        ("CREATE INDEX i ON t (a)", "ASYNC"),
        ("CREATE TABLE t (id serial)", "SERIAL"),
        ("ALTER TABLE t ALTER COLUMN a TYPE bigint", "TYPE"),
    ],
)
def test_real_lint_refusals(sql: str, fragment: str) -> None:
    rejection = rules.lint_second_opinion(sql)
    assert rejection is not None
    assert rejection.sqlstate == UNSUPPORTED
    assert fragment in rejection.message
    assert rejection.hint


@needs_lint
@pytest.mark.parametrize(
    "sql",
    [
        "SELECT 1",
        "CREATE INDEX ASYNC i ON t (a)",
        # dsql-lint cannot parse these; that is not a refusal.
        "REFRESH MATERIALIZED VIEW mv",
        "SELECT * FROM t FOR NO KEY UPDATE",
        # About the transaction, which the emulator tracks itself.
        "BEGIN; CREATE TABLE a (x int); CREATE TABLE b (y int); COMMIT;",
        # DSQL renames indexes, and words the numeric bounds as PostgreSQL does.
        "ALTER INDEX i RENAME TO j",
        "CREATE TABLE t (a numeric(1001))",
    ],
)
def test_real_lint_passes(sql: str) -> None:
    assert rules.lint_second_opinion(sql) is None
