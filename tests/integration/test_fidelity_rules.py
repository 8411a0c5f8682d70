"""DSQL's types, DDL refusals, limits and catalog shapes, as live clusters showed them.

Sources: winebarrel/pistachio DSQL.md and testdata/dsql/dsql.yaml (live cluster,
2026-10-10); awslabs/agent-plugins dsql references troubleshooting.md and
limits-and-error-codes.md (observed 2026-10-01); awslabs/aurora-dsql-orms
python/sqlalchemy/test (runs against a real cluster).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from decimal import Decimal

import asyncpg
import psycopg
import pytest

from sqlalchemy_dsql.local import LocalDSQL

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module", autouse=True)
async def _leave_public_as_found(dsql: LocalDSQL) -> AsyncIterator[None]:
    """Drop this module's objects afterwards: other suites compare the whole public schema."""
    yield
    backend = await asyncpg.connect(dsql.backend_url)
    try:
        for kind, relkinds in (("VIEW", "{v}"), ("TABLE", "{r}"), ("SEQUENCE", "{S}")):
            names = await backend.fetch(
                "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = 'public' AND c.relname LIKE 'fid\\_%' "
                'AND c.relkind = ANY($1::text::"char"[])',
                relkinds,
            )
            for record in names:
                await backend.execute(f'DROP {kind} IF EXISTS "{record["relname"]}" CASCADE')
    finally:
        await backend.close()


@pytest.fixture
async def conn(dsql: LocalDSQL) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(**dsql.connect_kwargs(), statement_cache_size=0)
    yield connection
    await connection.close()


async def _refusal(conn: asyncpg.Connection, sql: str) -> asyncpg.PostgresError:
    with pytest.raises(asyncpg.PostgresError) as caught:
        await conn.execute(sql)
    # The session is usable afterwards: the refusal ended the statement, nothing more.
    assert await conn.fetchval("SELECT 1") == 1
    return caught.value


def _columns(count: int) -> str:
    return ", ".join(f"c{i} int" for i in range(count))


# --------------------------------------------------------------------------
# Types


async def test_numeric_without_precision_is_stored_as_numeric_18_6(
    conn: asyncpg.Connection,
) -> None:
    await conn.execute("DROP TABLE IF EXISTS fid_money")
    await conn.execute(
        "CREATE TABLE fid_money (id bigint PRIMARY KEY, price numeric, cost decimal, "
        "exact numeric(10, 2))"
    )
    await conn.execute("ALTER TABLE fid_money ADD COLUMN later numeric")
    types = dict(
        await conn.fetch(
            "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
            "WHERE attrelid = 'fid_money'::regclass AND attnum > 0 AND NOT attisdropped"
        )
    )
    assert types == {
        "id": "bigint",
        "price": "numeric(18,6)",
        "cost": "numeric(18,6)",
        "exact": "numeric(10,2)",
        "later": "numeric(18,6)",
    }
    row = await conn.fetchrow(
        "INSERT INTO fid_money VALUES (1, 1.23456789, 2, 3.14159, 0.0000004) RETURNING *"
    )
    assert row is not None
    # Values are rounded to six places, as DSQL rounds them.
    assert row["price"] == Decimal("1.234568")
    assert row["cost"] == Decimal("2.000000")
    assert row["exact"] == Decimal("3.14")
    assert row["later"] == Decimal("0.000000")


async def test_numeric_precision_over_1000(conn: asyncpg.Connection) -> None:
    error = await _refusal(conn, "CREATE TABLE fid_wide_numeric (n numeric(1001))")
    assert error.sqlstate == "22023"
    assert error.message == "NUMERIC precision 1001 must be between 1 and 1000"


@pytest.mark.parametrize("serial", ["serial", "bigserial", "smallserial"])
async def test_serial_types_do_not_exist(conn: asyncpg.Connection, serial: str) -> None:
    error = await _refusal(conn, f"CREATE TABLE fid_serial (id {serial} PRIMARY KEY)")
    assert error.sqlstate == "42704"
    assert error.message == f'type "{serial}" does not exist'


@pytest.mark.parametrize(
    ("declared", "message"),
    [
        ("char(5000)", "Datatype limit greater than 4096 bytes not supported for char"),
        ("varchar(70000)", "Datatype limit greater than 65535 bytes not supported for varchar"),
    ],
)
async def test_declared_size_limits_at_ddl(
    conn: asyncpg.Connection, declared: str, message: str
) -> None:
    error = await _refusal(conn, f"CREATE TABLE fid_sized (id bigint PRIMARY KEY, v {declared})")
    assert (error.sqlstate, error.message) == ("54000", message)


async def test_declared_sizes_at_the_limit_are_accepted(conn: asyncpg.Connection) -> None:
    await conn.execute("DROP TABLE IF EXISTS fid_at_limit")
    await conn.execute("CREATE TABLE fid_at_limit (a char(4096), b varchar(65535))")
    error = await _refusal(conn, "ALTER TABLE fid_at_limit ADD COLUMN c varchar(65536)")
    assert error.sqlstate == "54000"


async def test_compression_clause_is_refused(conn: asyncpg.Connection) -> None:
    error = await _refusal(conn, "CREATE TABLE fid_compressed (body text COMPRESSION pglz)")
    assert error.sqlstate == "0A000"
    assert "COMPRESSION" in error.message


# --------------------------------------------------------------------------
# DDL DSQL refuses


async def test_create_procedure_is_refused_even_in_sql(conn: asyncpg.Connection) -> None:
    error = await _refusal(conn, "CREATE PROCEDURE fid_touch() LANGUAGE sql AS $$ SELECT 1 $$")
    assert (error.sqlstate, error.message) == ("0A000", "PROCEDURE is not supported")


async def test_primary_key_cannot_be_dropped(conn: asyncpg.Connection) -> None:
    await conn.execute("DROP TABLE IF EXISTS fid_keyed")
    await conn.execute(
        "CREATE TABLE fid_keyed (id bigint PRIMARY KEY, code text, "
        "CONSTRAINT fid_code UNIQUE (code))"
    )
    error = await _refusal(conn, "ALTER TABLE fid_keyed DROP CONSTRAINT fid_keyed_pkey")
    assert error.sqlstate == "0A000"
    assert error.message == "unsupported ALTER TABLE DROP CONSTRAINT statement"
    assert (
        await conn.fetchval("SELECT count(*) FROM pg_constraint WHERE conname = 'fid_keyed_pkey'")
        == 1
    )
    # A UNIQUE constraint can go.
    await conn.execute("ALTER TABLE fid_keyed DROP CONSTRAINT fid_code")


def test_primary_key_drop_refused_through_psycopg(dsql: LocalDSQL) -> None:
    with psycopg.connect(dsql.conninfo(), autocommit=True) as connection:
        connection.execute("DROP TABLE IF EXISTS fid_keyed_pg")
        connection.execute("CREATE TABLE fid_keyed_pg (id bigint PRIMARY KEY, v text)")
        with pytest.raises(psycopg.errors.FeatureNotSupported) as caught:
            connection.execute("ALTER TABLE fid_keyed_pg DROP CONSTRAINT fid_keyed_pg_pkey")
        assert caught.value.diag.message_primary == (
            "unsupported ALTER TABLE DROP CONSTRAINT statement"
        )


async def test_drop_index_concurrently_is_refused(conn: asyncpg.Connection) -> None:
    await conn.execute("CREATE TABLE IF NOT EXISTS fid_drop_idx (id bigint PRIMARY KEY, a int)")
    job_id = await conn.fetchval("CREATE INDEX ASYNC IF NOT EXISTS fid_drop_a ON fid_drop_idx (a)")
    assert await conn.fetchval("CALL sys.wait_for_job($1)", job_id) is True
    error = await _refusal(conn, "DROP INDEX CONCURRENTLY fid_drop_a")
    assert error.sqlstate == "0A000"
    assert error.message == "DROP INDEX CONCURRENTLY must be first action in transaction"
    await conn.execute("DROP INDEX fid_drop_a")


# --------------------------------------------------------------------------
# DDL DSQL accepts


async def test_unique_constraint_using_a_built_index(conn: asyncpg.Connection) -> None:
    await conn.execute("DROP TABLE IF EXISTS fid_using")
    await conn.execute("CREATE TABLE fid_using (id bigint PRIMARY KEY, email text)")
    job_id = await conn.fetchval("CREATE UNIQUE INDEX ASYNC fid_using_email ON fid_using (email)")
    assert await conn.fetchval("CALL sys.wait_for_job($1)", job_id) is True
    await conn.execute(
        "ALTER TABLE fid_using ADD CONSTRAINT fid_using_email UNIQUE USING INDEX fid_using_email"
    )
    definition = await conn.fetchval(
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = 'fid_using_email'"
    )
    assert definition == "UNIQUE (email)"


async def test_view_options_can_be_set_and_reset(conn: asyncpg.Connection) -> None:
    await conn.execute("CREATE TABLE IF NOT EXISTS fid_base (id bigint PRIMARY KEY, a int)")
    await conn.execute("CREATE OR REPLACE VIEW fid_view AS SELECT id, a FROM fid_base")
    await conn.execute("ALTER VIEW fid_view SET (security_barrier = true)")
    assert await conn.fetchval("SELECT reloptions FROM pg_class WHERE relname = 'fid_view'") == [
        "security_barrier=true"
    ]
    await conn.execute("ALTER VIEW fid_view RESET (security_barrier)")
    assert await conn.fetchval("SELECT reloptions FROM pg_class WHERE relname = 'fid_view'") is None


async def test_an_index_can_be_renamed(conn: asyncpg.Connection) -> None:
    await conn.execute("DROP TABLE IF EXISTS fid_renamed")
    await conn.execute("CREATE TABLE fid_renamed (id bigint PRIMARY KEY, a int)")
    job_id = await conn.fetchval("CREATE INDEX ASYNC fid_renamed_old ON fid_renamed (a)")
    assert await conn.fetchval("CALL sys.wait_for_job($1)", job_id) is True
    await conn.execute("ALTER INDEX fid_renamed_old RENAME TO fid_renamed_new")
    assert await conn.fetchval("SELECT to_regclass('fid_renamed_new') IS NOT NULL") is True


# --------------------------------------------------------------------------
# Limits the catalog has to check


async def test_256_columns_accepted_257_refused(conn: asyncpg.Connection) -> None:
    await conn.execute("DROP TABLE IF EXISTS fid_cols")
    await conn.execute(f"CREATE TABLE fid_cols ({_columns(256)})")
    error = await _refusal(conn, "ALTER TABLE fid_cols ADD COLUMN one_more int")
    # DSQL's message says 255 although it takes 256 (agent-plugins troubleshooting.md).
    assert (error.sqlstate, error.message) == ("54011", "tables can have at most 255 columns")
    error = await _refusal(
        conn, f"CREATE TABLE fid_cols_keyed (id bigint PRIMARY KEY, {_columns(256)})"
    )
    assert (error.sqlstate, error.message) == (
        "54011",
        "cannot use more than 256 columns in an index",
    )


def test_column_limit_reaches_psycopg_unchanged(dsql: LocalDSQL) -> None:
    with psycopg.connect(dsql.conninfo(), autocommit=True) as connection:
        with pytest.raises(psycopg.errors.TooManyColumns) as caught:
            connection.execute(f"CREATE TABLE fid_cols_pg ({_columns(257)})")
        assert caught.value.diag.message_primary == "tables can have at most 255 columns"


async def test_more_than_10_schemas_refused(conn: asyncpg.Connection) -> None:
    existing = await conn.fetchval(
        "SELECT count(*) FROM pg_namespace WHERE nspname NOT IN ('public', 'sys', "
        "'information_schema') AND nspname NOT LIKE 'pg\\_%'"
    )
    names = [f"fid_schema_{i}" for i in range(10 - existing)]
    try:
        for name in names:
            await conn.execute(f"CREATE SCHEMA {name}")
        error = await _refusal(conn, "CREATE SCHEMA fid_schema_over")
        assert (error.sqlstate, error.message) == ("54000", "more than 10 schemas not allowed")
    finally:
        for name in names:
            await conn.execute(f"DROP SCHEMA IF EXISTS {name}")


async def test_more_than_24_indexes_per_table_refused(conn: asyncpg.Connection) -> None:
    uniques = ", ".join(f"u{i} int UNIQUE" for i in range(22))
    await conn.execute("DROP TABLE IF EXISTS fid_indexed")
    # The primary key and every UNIQUE constraint count: 23 indexes.
    await conn.execute(f"CREATE TABLE fid_indexed (id bigint PRIMARY KEY, a int, {uniques})")
    # The 24th is accepted; a 25th is refused at submission, while the 24th still builds.
    job_id = await conn.fetchval("CREATE INDEX ASYNC fid_indexed_a ON fid_indexed (a)")
    error = await _refusal(conn, "CREATE INDEX ASYNC fid_indexed_a2 ON fid_indexed (a)")
    assert (error.sqlstate, error.message) == (
        "54000",
        "more than 24 indexes per table are not allowed",
    )
    assert await conn.fetchval("CALL sys.wait_for_job($1)", job_id) is True
    error = await _refusal(conn, "CREATE INDEX ASYNC fid_indexed_a3 ON fid_indexed (a)")
    assert error.sqlstate == "54000"


async def test_a_table_declaring_25_indexes_is_refused(conn: asyncpg.Connection) -> None:
    uniques = ", ".join(f"u{i} int UNIQUE" for i in range(24))
    error = await _refusal(conn, f"CREATE TABLE fid_too_indexed (id bigint PRIMARY KEY, {uniques})")
    assert (error.sqlstate, error.message) == (
        "54000",
        "more than 24 indexes per table are not allowed",
    )


# --------------------------------------------------------------------------
# Catalog and result shapes


async def test_index_definitions_name_btree_index_and_include_every_column(
    conn: asyncpg.Connection,
) -> None:
    await conn.execute("DROP TABLE IF EXISTS fid_shapes")
    await conn.execute(
        "CREATE TABLE fid_shapes (id bigint, k int, name text, email text, PRIMARY KEY (id, k))"
    )
    await conn.execute("ALTER TABLE fid_shapes ADD COLUMN added text")
    job_id = await conn.fetchval("CREATE INDEX ASYNC fid_shapes_name ON fid_shapes (name)")
    assert await conn.fetchval("CALL sys.wait_for_job($1)", job_id) is True
    definitions = dict(
        await conn.fetch(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'fid_shapes'"
        )
    )
    assert definitions == {
        "fid_shapes_pkey": "CREATE UNIQUE INDEX fid_shapes_pkey ON public.fid_shapes "
        "USING btree_index (id, k) INCLUDE (name, email, added)",
        "fid_shapes_name": "CREATE INDEX fid_shapes_name ON public.fid_shapes "
        "USING btree_index (name)",
    }
    assert (
        await conn.fetchval("SELECT pg_get_indexdef('fid_shapes_name'::regclass)")
        == (definitions["fid_shapes_name"])
    )
    # A single column of the definition is still PostgreSQL's answer.
    assert (
        await conn.fetchval("SELECT pg_get_indexdef('fid_shapes_pkey'::regclass, 2, true)") == "k"
    )
    assert (
        await conn.fetchval(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = 'fid_shapes_pkey'"
        )
        == "PRIMARY KEY (id, k) INCLUDE (name, email, added)"
    )


async def test_dsql_major_version(conn: asyncpg.Connection) -> None:
    statement = await conn.prepare("SELECT sys.dsql_major_version()")
    assert [(a.name, a.type.name) for a in statement.get_attributes()] == [
        ("dsql_major_version", "int4")
    ]
    assert await statement.fetchval() == 1


async def test_wait_for_job_is_a_procedure(conn: asyncpg.Connection) -> None:
    await conn.execute("CREATE TABLE IF NOT EXISTS fid_wait (id bigint PRIMARY KEY, a int)")
    job_id = await conn.fetchval("CREATE INDEX ASYNC IF NOT EXISTS fid_wait_a ON fid_wait (a)")
    with pytest.raises(asyncpg.WrongObjectTypeError) as caught:
        await conn.fetchval("SELECT sys.wait_for_job($1)", job_id)
    assert caught.value.message == "sys.wait_for_job(unknown) is a procedure"
    assert caught.value.hint == "To call a procedure, use CALL."
    assert await conn.fetchval("CALL sys.wait_for_job($1)", job_id) is True


async def test_call_wait_for_job_answers_succeeded(conn: asyncpg.Connection) -> None:
    await conn.execute("CREATE TABLE IF NOT EXISTS fid_wait (id bigint PRIMARY KEY, a int)")
    job_id = await conn.fetchval("CREATE INDEX ASYNC IF NOT EXISTS fid_wait_b ON fid_wait (a)")
    statement = await conn.prepare(f"CALL sys.wait_for_job('{job_id}')")
    assert [(a.name, a.type.name) for a in statement.get_attributes()] == [("succeeded", "bool")]
    assert await statement.fetchval() is True


# --------------------------------------------------------------------------
# Functions, sequences and settings in DSQL's words


async def test_advisory_lock_wording(conn: asyncpg.Connection) -> None:
    error = await _refusal(conn, "SELECT pg_advisory_lock(42)")
    assert (error.sqlstate, error.message) == ("0A000", "function pg_advisory_lock not supported")


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        (
            "CREATE TABLE fid_ident (id bigint GENERATED ALWAYS AS IDENTITY (CACHE 1000))",
            "CACHE (1000) must be greater than or equal to 65536 or equal to 1",
        ),
        (
            "CREATE SEQUENCE fid_seq CACHE 2",
            "CACHE (2) must be greater than or equal to 65536 or equal to 1",
        ),
        ("CREATE SEQUENCE fid_seq AS numeric(10, 0) CACHE 1", "sequence type must be bigint"),
        ("CREATE SEQUENCE fid_seq AS integer CACHE 65536", "sequence type must be bigint"),
    ],
)
def test_sequence_and_identity_data_errors(dsql: LocalDSQL, sql: str, message: str) -> None:
    # Amazon's aurora-dsql-sqlalchemy tests expect DataError (SQLSTATE class 22) here.
    with psycopg.connect(dsql.conninfo(), autocommit=True) as connection:
        with pytest.raises(psycopg.errors.DataError) as caught:
            connection.execute(sql)
        assert caught.value.diag.message_primary == message


async def test_identity_type_and_missing_cache_wording(conn: asyncpg.Connection) -> None:
    error = await _refusal(
        conn, "CREATE TABLE fid_ident (id int GENERATED ALWAYS AS IDENTITY (CACHE 1))"
    )
    assert (error.sqlstate, error.message) == (
        "0A000",
        "datatype integer not supported, identity column type must be bigint",
    )
    error = await _refusal(conn, "CREATE TABLE fid_ident (id bigint GENERATED ALWAYS AS IDENTITY)")
    assert error.message == "identity column is not supported without an explicit cache size"
    error = await _refusal(conn, "CREATE SEQUENCE fid_seq")
    assert error.message == (
        "CREATE SEQUENCE is not supported without an explicit cache size. "
        "please define CACHE greater than or equal to 65536 or equal to 1"
    )


@pytest.mark.parametrize("parameter", ["statement_timeout", "default_transaction_read_only"])
async def test_refused_settings_in_dsql_words(conn: asyncpg.Connection, parameter: str) -> None:
    error = await _refusal(conn, f"SET {parameter} = 0")
    assert error.sqlstate == "0A000"
    assert error.message == f'setting configuration parameter "{parameter}" not supported'


async def test_read_only_session_characteristics_are_accepted(conn: asyncpg.Connection) -> None:
    await conn.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
    assert await conn.fetchval("SHOW default_transaction_read_only") == "on"
    with pytest.raises(asyncpg.ReadOnlySQLTransactionError):
        await conn.execute("CREATE TABLE fid_read_only (id bigint PRIMARY KEY)")


# --------------------------------------------------------------------------
# Documented quotas (AWS quotas page; agent-plugins troubleshooting.md lists them as
# documented, not observed). The tables, views or sequences up to the quota are made
# directly on the backend, where the same event trigger counts them.


async def _fill_on_backend(dsql: LocalDSQL, kind: str, prefix: str, up_to: int) -> list[str]:
    backend = await asyncpg.connect(dsql.backend_url)
    try:
        relkind = {"TABLE": "r", "VIEW": "v", "SEQUENCE": "S"}[kind]
        existing = await backend.fetchval(
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            'WHERE c.relkind = $1::text::"char" '
            "AND n.nspname NOT IN ('sys', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'",
            relkind,
        )
        names = [f"{prefix}_{i}" for i in range(up_to - existing)]
        body = {
            "TABLE": "(id bigint)",
            "VIEW": "AS SELECT 1 AS one",
            "SEQUENCE": "CACHE 1",
        }[kind]
        async with backend.transaction():
            for name in names:
                await backend.execute(f"CREATE {kind} {name} {body}")
        return names
    finally:
        await backend.close()


async def _drop_on_backend(dsql: LocalDSQL, kind: str, names: list[str]) -> None:
    backend = await asyncpg.connect(dsql.backend_url)
    try:
        for start in range(0, len(names), 500):
            await backend.execute(f"DROP {kind} IF EXISTS {', '.join(names[start : start + 500])}")
    finally:
        await backend.close()


@pytest.mark.parametrize(
    ("kind", "quota", "message"),
    [
        ("TABLE", 1000, "creating more than 1000 tables not allowed"),
        ("VIEW", 5000, "creating more than 5000 views not allowed"),
        ("SEQUENCE", 5000, "creating more than 5000 sequences is not allowed"),
    ],
)
async def test_object_quotas(
    dsql: LocalDSQL, conn: asyncpg.Connection, kind: str, quota: int, message: str
) -> None:
    names = await _fill_on_backend(dsql, kind, f"fid_quota_{kind.lower()}", quota)
    try:
        body = {"TABLE": "(id bigint PRIMARY KEY)", "VIEW": "AS SELECT 1", "SEQUENCE": "CACHE 1"}
        error = await _refusal(conn, f"CREATE {kind} fid_quota_over {body[kind]}")
        assert (error.sqlstate, error.message) == ("54000", message)
    finally:
        await _drop_on_backend(dsql, kind, names)


async def test_more_than_5_extended_statistics_per_table(conn: asyncpg.Connection) -> None:
    await conn.execute("DROP TABLE IF EXISTS fid_stats")
    await conn.execute("CREATE TABLE fid_stats (id bigint PRIMARY KEY, a int, b int, c int)")
    pairs = ["a, b", "a, c", "b, c", "id, a", "id, b"]
    for number, columns in enumerate(pairs):
        await conn.execute(f"CREATE STATISTICS fid_stats_{number} ON {columns} FROM fid_stats")
    error = await _refusal(conn, "CREATE STATISTICS fid_stats_over ON id, c FROM fid_stats")
    assert (error.sqlstate, error.message) == (
        "54000",
        "more than 5 extended statistics per table are not allowed",
    )


async def test_sys_jobs_rows_have_dsqls_shape(conn: asyncpg.Connection) -> None:
    await conn.execute("DROP TABLE IF EXISTS fid_jobs")
    await conn.execute("CREATE TABLE fid_jobs (id bigint PRIMARY KEY, a int)")
    async with conn.transaction():
        job_id = await conn.fetchval("CREATE INDEX ASYNC fid_jobs_a ON fid_jobs (a)")
        # Not yet committed, so not yet running: a fresh row.
        fresh = await conn.fetchrow("SELECT * FROM sys.jobs WHERE job_id = $1", job_id)
    assert fresh is not None
    assert list(fresh.keys()) == [
        "job_id",
        "status",
        "details",
        "job_type",
        "class_id",
        "object_id",
        "object_name",
        "start_time",
        "update_time",
    ]
    assert re.fullmatch(r"[a-z2-7]{26}", job_id)
    assert (fresh["status"], fresh["details"], fresh["update_time"]) == ("submitted", None, None)
    assert (fresh["job_type"], fresh["class_id"]) == ("INDEX_BUILD", 1259)
    assert fresh["object_name"] == "public.fid_jobs_a"
    assert await conn.fetchval("CALL sys.wait_for_job($1)", job_id) is True
    done = await conn.fetchrow("SELECT * FROM sys.jobs WHERE job_id = $1", job_id)
    assert done is not None
    assert done["object_id"] == await conn.fetchval("SELECT 'fid_jobs_a'::regclass::oid")
    assert done["update_time"] is not None
