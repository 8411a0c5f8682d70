"""Unit tests for the backend query that replaces an async DDL statement."""

from __future__ import annotations

from sqlalchemy_dsql.local.jobs import submit_sql


def test_submission_resolves_the_table_in_the_clients_session() -> None:
    sql = submit_sql("INDEX_BUILD", "t_a_idx", "app.t", "CREATE INDEX t_a_idx ON app.t (a)")
    assert sql == (
        "SELECT sys._submit_job('INDEX_BUILD', 't_a_idx', 'app.t', "
        "'CREATE INDEX t_a_idx ON app.t (a)', current_setting('search_path'), "
        'to_regclass(\'"app"."t"\')::oid) AS job_id'
    )


def test_names_are_quoted_and_literals_escaped() -> None:
    sql = submit_sql("INDEX_BUILD", "i", 'We"ird', 'CREATE INDEX i ON "We""ird" (a = \'x\')')
    assert 'to_regclass(\'"We""ird"\')::oid' in sql
    assert "'CREATE INDEX i ON \"We\"\"ird\" (a = ''x'')'" in sql


def test_a_job_without_a_table_resolves_nothing() -> None:
    assert submit_sql(
        "VALIDATE_CONSTRAINT", "c", "", "ALTER TABLE t VALIDATE CONSTRAINT c"
    ).endswith("current_setting('search_path'), NULL) AS job_id")
