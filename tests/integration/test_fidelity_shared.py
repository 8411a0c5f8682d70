"""Behaviours live clusters recorded that DSQL shares with PostgreSQL, pinned through the emulator.

Each test names the fact ids of docs/dsql-evidence.md it pins. They hold because
the emulator forwards these statements unchanged: a rule that starts refusing or
rewriting one of them fails here.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from sqlalchemy_dsql.local import LocalDSQL

pytestmark = pytest.mark.integration


@pytest.fixture
async def conn(dsql: LocalDSQL) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(**dsql.connect_kwargs())
    yield connection
    await connection.close()


async def test_catalog_functions_and_tables_a_schema_tool_reads_resolve(
    conn: asyncpg.Connection,
) -> None:
    """P07, D28, P59."""
    await conn.execute(
        "CREATE TABLE IF NOT EXISTS shared_users (id bigint PRIMARY KEY, "
        "status text DEFAULT 'active', name text)"
    )
    table = "'shared_users'::regclass"
    for function in (
        f"pg_get_viewdef({table})",
        f"pg_get_partkeydef({table})",
        f"format_type((SELECT atttypid FROM pg_attribute WHERE attrelid = {table} "
        "AND attnum = 1), -1)",
        "pg_get_serial_sequence('shared_users', 'id')",
        f"(SELECT count(*) FROM pg_identify_object('pg_class'::regclass, {table}, 0))",
    ):
        await conn.fetchval(f"SELECT {function}")  # resolves: no error
    for catalog in (
        "pg_namespace",
        "pg_tables",
        "pg_attribute",
        "pg_views",
        "pg_class",
        "pg_stats",
        "pg_user",
        "pg_roles",
        "pg_indexes",
        "pg_constraint",
        "pg_depend",
        "pg_rewrite",
        "pg_inherits",
        "pg_trigger",
        "pg_policy",
        "pg_partitioned_table",
    ):
        assert await conn.fetchval(f"SELECT count(*) >= 0 FROM pg_catalog.{catalog}")
    for empty in ("pg_policy", "pg_partitioned_table", "pg_inherits"):
        assert await conn.fetchval(f"SELECT count(*) FROM pg_catalog.{empty}") == 0
    # PostgreSQL implements foreign keys with internal triggers, which DSQL does not show.
    user_triggers = "SELECT count(*) FROM pg_catalog.pg_trigger WHERE NOT tgisinternal"
    assert await conn.fetchval(user_triggers) == 0


async def test_defaults_two_column_indexes_and_identity_sequences_read_back(
    conn: asyncpg.Connection,
) -> None:
    """P55, P50, P56."""
    await conn.execute("DROP TABLE IF EXISTS shared_people")
    await conn.execute(
        "CREATE TABLE shared_people (id bigint GENERATED ALWAYS AS IDENTITY (CACHE 1) "
        "PRIMARY KEY, status text DEFAULT 'active', name text)"
    )
    job = await conn.fetchval(
        "CREATE INDEX ASYNC shared_people_status_idx ON shared_people (status, name)"
    )
    assert await conn.fetchval(f"CALL sys.wait_for_job('{job}')") is True
    definition = await conn.fetchval(
        "SELECT indexdef FROM pg_indexes WHERE indexname = 'shared_people_status_idx'"
    )
    assert definition == (
        "CREATE INDEX shared_people_status_idx ON public.shared_people "
        "USING btree_index (status, name)"
    )
    default = await conn.fetchval(
        "SELECT pg_get_expr(d.adbin, d.adrelid) FROM pg_attrdef d JOIN pg_attribute a "
        "ON a.attrelid = d.adrelid AND a.attnum = d.adnum "
        "WHERE d.adrelid = 'shared_people'::regclass AND a.attname = 'status'"
    )
    assert default == "'active'::text"
    sequence = await conn.fetchrow(
        "SELECT s.seqstart, s.seqmin, s.seqmax, s.seqincrement, s.seqcache, s.seqcycle "
        "FROM pg_depend d JOIN pg_sequence s ON s.seqrelid = d.objid "
        "WHERE d.refobjid = 'shared_people'::regclass AND d.deptype = 'i'"
    )
    assert tuple(sequence) == (1, 1, 9223372036854775807, 1, 1, False)
    assert (
        await conn.fetchval(
            "SELECT attidentity FROM pg_attribute "
            "WHERE attrelid = 'shared_people'::regclass AND attname = 'id'"
        )
        == b"a"  # asyncpg returns the one-byte "char" type as bytes
    )
    # Dropped and at once built again under the same name (P56).
    assert await conn.execute("DROP INDEX shared_people_status_idx") == "DROP INDEX"
    again = await conn.fetchval(
        "CREATE INDEX ASYNC shared_people_status_idx ON shared_people (status)"
    )
    assert await conn.fetchval(f"CALL sys.wait_for_job('{again}')") is True
    assert await conn.execute("SET search_path TO public") == "SET"
    assert await conn.execute("DROP TABLE shared_people") == "DROP TABLE"


async def test_a_combined_alter_table_is_one_ddl_statement(conn: asyncpg.Connection) -> None:
    """P38."""
    await conn.execute("DROP TABLE IF EXISTS shared_combined")
    await conn.execute("CREATE TABLE shared_combined (id bigint PRIMARY KEY)")
    await conn.execute("BEGIN")
    await conn.execute(
        "ALTER TABLE shared_combined ADD COLUMN c text, ALTER COLUMN c SET DEFAULT 'x'"
    )
    await conn.execute("COMMIT")
    await conn.execute("INSERT INTO shared_combined (id) VALUES (1)")
    assert await conn.fetchval("SELECT c FROM shared_combined") == "x"


async def test_array_parameters_in_the_extended_protocol(conn: asyncpg.Connection) -> None:
    """P57: a recorder's catalog queries bind name[] and oid[] parameters."""
    names = await conn.fetch(
        "SELECT relname FROM pg_class WHERE relname = ANY($1::name[]) ORDER BY relname",
        ["pg_class", "pg_type"],
    )
    assert [row["relname"] for row in names] == ["pg_class", "pg_type"]
    oid = await conn.fetchval("SELECT 'pg_class'::regclass::oid")
    assert await conn.fetchval("SELECT count(*) FROM pg_class WHERE oid = ANY($1::oid[])", [oid])


async def test_foreign_keys_are_enforced_at_the_statement(conn: asyncpg.Connection) -> None:
    """A38, I18."""
    await conn.execute("DROP TABLE IF EXISTS shared_child, shared_parent")
    await conn.execute("CREATE TABLE shared_parent (id bigint PRIMARY KEY)")
    await conn.execute(
        "CREATE TABLE shared_child (id bigint PRIMARY KEY, "
        "parent_id bigint REFERENCES shared_parent (id) ON DELETE CASCADE)"
    )
    await conn.execute("INSERT INTO shared_parent VALUES (1)")
    await conn.execute("INSERT INTO shared_child VALUES (1, 1)")
    with pytest.raises(
        asyncpg.ForeignKeyViolationError,
        match='insert or update on table "shared_child" violates foreign key constraint '
        '"shared_child_parent_id_fkey"',
    ):
        await conn.execute("INSERT INTO shared_child VALUES (2, 99)")
    with pytest.raises(asyncpg.DependentObjectsStillExistError):
        await conn.execute("DROP TABLE shared_parent")
    await conn.execute("DELETE FROM shared_parent WHERE id = 1")
    assert await conn.fetchval("SELECT count(*) FROM shared_child") == 0  # cascaded
    await conn.execute("DROP TABLE shared_child, shared_parent")


async def test_errors_dsql_reports_in_postgresql_words(conn: asyncpg.Connection) -> None:
    """A23, I32, A19."""
    with pytest.raises(asyncpg.InvalidObjectDefinitionError, match="generation expression is"):
        await conn.execute(
            "CREATE TABLE shared_generated (id bigint PRIMARY KEY, "
            "t timestamptz GENERATED ALWAYS AS (now()) STORED)"
        )
    await conn.execute("DROP ROLE IF EXISTS shared_role")
    await conn.execute("CREATE ROLE shared_role WITH LOGIN")
    with pytest.raises(asyncpg.DuplicateObjectError, match='role "shared_role" already exists'):
        await conn.execute("CREATE ROLE shared_role WITH LOGIN")
    await conn.execute("DROP ROLE shared_role")
    # The 1,600-column ceiling counts dropped columns (DSQL's 256-column rule comes first
    # for live columns, so the table is kept under it while columns come and go).
    await conn.execute("DROP TABLE IF EXISTS shared_churn")
    await conn.execute("CREATE TABLE shared_churn (id bigint PRIMARY KEY)")

    async def churn() -> None:
        for start in range(0, 1700, 100):
            numbers = range(start, start + 100)
            adds = ", ".join(f"ADD COLUMN c{n} int" for n in numbers)
            await conn.execute(f"ALTER TABLE shared_churn {adds}")
            drops = ", ".join(f"DROP COLUMN c{n}" for n in numbers)
            await conn.execute(f"ALTER TABLE shared_churn {drops}")

    with pytest.raises(asyncpg.TooManyColumnsError, match="at most 1600 columns"):
        await churn()
    await conn.execute("DROP TABLE shared_churn")
