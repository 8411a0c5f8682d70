"""Hooks for SQLAlchemy's test harness (``sqlalchemy.testing``) on Aurora DSQL.

SQLAlchemy imports this module through ``Dialect.load_provisioning()`` when
its compliance suite runs against an ``auroradsql`` URL. Only the hooks whose
PostgreSQL versions would do something DSQL refuses are replaced here.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.testing.provision import (
    drop_all_schema_objects_post_tables,
    drop_all_schema_objects_pre_tables,
    post_configure_engine,
    prepare_for_drop_tables,
    set_default_schema_on_connection,
    temp_table_keyword_args,
    upsert,
)


@temp_table_keyword_args.for_db("auroradsql")
def _temp_table_keyword_args(cfg: Any, eng: Any) -> dict[str, Any]:
    # Never used (the temp_table requirements are closed), but the hook must answer.
    return {"prefixes": ["TEMPORARY"]}


@set_default_schema_on_connection.for_db("auroradsql")
def _set_default_schema_on_connection(cfg: Any, dbapi_connection: Any, schema_name: str) -> None:
    autocommit = dbapi_connection.autocommit
    dbapi_connection.autocommit = True
    cursor = dbapi_connection.cursor()
    cursor.execute(f"SET SESSION search_path='{schema_name}'")
    cursor.close()
    dbapi_connection.autocommit = autocommit


@drop_all_schema_objects_pre_tables.for_db("auroradsql")
def _drop_all_schema_objects_pre_tables(cfg: Any, eng: Any) -> None:
    """DSQL has no prepared (two-phase) transactions to clean up."""


@drop_all_schema_objects_post_tables.for_db("auroradsql")
def _drop_all_schema_objects_post_tables(cfg: Any, eng: Any) -> None:
    """DSQL has no enum types to drop: enums are stored as VARCHAR."""


@prepare_for_drop_tables.for_db("auroradsql")
def _prepare_for_drop_tables(config: Any, connection: Any) -> None:
    """DSQL never blocks DROP behind other transactions; nothing to look for."""


@post_configure_engine.for_db("auroradsql")
def _post_configure_engine(url: Any, engine: Any, follower_ident: Any) -> None:
    """PostgreSQL's hook creates the citext and hstore extensions; DSQL has no extensions."""


@upsert.for_db("auroradsql")
def _upsert(
    cfg: Any,
    table: Any,
    returning: Any,
    *,
    set_lambda: Any = None,
    sort_by_parameter_order: bool = False,
    index_elements: Any = None,
) -> Any:
    from sqlalchemy import inspect
    from sqlalchemy.dialects.postgresql import insert

    statement = insert(table)
    if set_lambda:
        if index_elements is None:
            index_elements = inspect(table).selectable.primary_key
        statement = statement.on_conflict_do_update(
            index_elements=index_elements, set_=set_lambda(statement.excluded)
        )
    else:
        statement = statement.on_conflict_do_nothing()
    return statement.returning(*returning, sort_by_parameter_order=sort_by_parameter_order)
