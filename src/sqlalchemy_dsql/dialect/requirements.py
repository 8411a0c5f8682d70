"""What the ``auroradsql`` dialect supports, for SQLAlchemy's compliance suite.

SQLAlchemy's ``SuiteRequirements`` closes, by default, many capabilities that
PostgreSQL has; those that Aurora DSQL has too are opened here. Each closed
capability names the DSQL limit behind it, which is also the reason the suite
prints for the tests it skips (see the DSQL reference, sections 5-7, Amazon's
"Unsupported PostgreSQL features" page and ``docs/emulator.md``). Tests that
no requirement covers are overridden in ``tests/suite/test_suite.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy.engine.default import DefaultDialect
from sqlalchemy.testing import exclusions
from sqlalchemy.testing.requirements import SuiteRequirements


def _lacking(method: Callable[[Any], None]) -> property:
    """A capability DSQL lacks: closed, with the method's docstring as the skip reason."""
    reason = " ".join((method.__doc__ or "").split())

    def requirement(self: Any) -> exclusions.compound:
        return exclusions.closed(reason)

    requirement.__name__ = method.__name__
    requirement.__doc__ = method.__doc__
    return property(requirement)


def _overrides(dialect: Any, method: str) -> bool:
    """Whether ``dialect`` implements a reflection method that DefaultDialect leaves out."""
    return getattr(type(dialect), method) is not getattr(DefaultDialect, method)


def _dialect(attribute: str, reason: str) -> exclusions.compound:
    """Open when the dialect under test sets ``attribute``."""
    return exclusions.only_if(lambda config: bool(getattr(config.db.dialect, attribute)), reason)


class Requirements(SuiteRequirements):
    # -- transactions ------------------------------------------------------

    @_lacking
    def savepoints(self) -> None:
        """DSQL has no SAVEPOINT / ROLLBACK TO / RELEASE."""

    @_lacking
    def two_phase_transactions(self) -> None:
        """DSQL has no prepared transactions (PREPARE TRANSACTION)."""

    @property
    def isolation_level(self) -> exclusions.compound:
        """DSQL has REPEATABLE READ, and the dialect offers AUTOCOMMIT too."""
        return exclusions.open()

    @_lacking
    def dialect_level_isolation_level_param(self) -> None:
        """DSQL has no READ COMMITTED, the level this check passes to create_engine()."""

    @property
    def skip_autocommit_rollback(self) -> exclusions.compound:
        """asyncpg reports whether a transaction is open, so the rollback can be skipped."""
        return exclusions.open()

    @property
    def autocommit(self) -> exclusions.compound:
        """AUTOCOMMIT is one of the dialect's two isolation levels."""
        return exclusions.only_if(
            lambda config: "AUTOCOMMIT" in self.get_isolation_levels(config)["supported"],
            "AUTOCOMMIT is not among the dialect's isolation levels",
        )

    @property
    def async_dialect(self) -> exclusions.compound:
        """auroradsql+asyncpg and +psycopg_async drive the DBAPI through await_()."""
        return self.asyncio + exclusions.only_if(
            lambda config: config.db.dialect.is_async, "async dialect required"
        )

    # -- tables, temporary objects, views ------------------------------------

    @_lacking
    def temporary_tables(self) -> None:
        """DSQL has no TEMPORARY tables."""

    @_lacking
    def temp_table_reflection(self) -> None:
        """DSQL has no TEMPORARY tables."""

    @_lacking
    def temp_table_names(self) -> None:
        """DSQL has no TEMPORARY tables."""

    @_lacking
    def has_temp_table(self) -> None:
        """DSQL has no TEMPORARY tables."""

    @_lacking
    def temp_table_comment_reflection(self) -> None:
        """DSQL has no TEMPORARY tables."""

    @_lacking
    def temporary_views(self) -> None:
        """DSQL has no TEMPORARY views."""

    @_lacking
    def create_table_as(self) -> None:
        """DSQL does not support CREATE TABLE ... AS SELECT (nor SELECT ... INTO)."""

    @_lacking
    def create_temp_table_as(self) -> None:
        """DSQL has no TEMPORARY tables and no CREATE TABLE ... AS SELECT."""

    @_lacking
    def materialized_views(self) -> None:
        """DSQL has no materialized views."""

    @_lacking
    def materialized_views_reflect_pk(self) -> None:
        """DSQL has no materialized views."""

    @property
    def table_ddl_if_exists(self) -> exclusions.compound:
        """CREATE TABLE IF NOT EXISTS / DROP TABLE IF EXISTS work as in PostgreSQL."""
        return exclusions.open()

    @property
    def index_ddl_if_exists(self) -> exclusions.compound:
        """CREATE INDEX ASYNC IF NOT EXISTS and DROP INDEX IF EXISTS are in DSQL's grammar."""
        return exclusions.open()

    @property
    def views(self) -> exclusions.compound:
        """DSQL supports views (up to 5,000)."""
        return exclusions.open()

    @property
    def create_or_replace_view(self) -> exclusions.compound:
        """Views are PostgreSQL's, CREATE OR REPLACE included."""
        return exclusions.open()

    @property
    def reflect_tables_no_columns(self) -> exclusions.compound:
        """A table without columns is plain PostgreSQL DDL, which DSQL accepts."""
        return exclusions.open()

    @property
    def schema_create_delete(self) -> exclusions.compound:
        """DSQL supports CREATE SCHEMA and DROP SCHEMA (up to 10 schemas)."""
        return exclusions.open()

    @property
    def reflect_table_options(self) -> exclusions.compound:
        """PostgreSQL's table options reflection (SQLAlchemy >= 2.1) reads DSQL's catalog."""
        return exclusions.only_if(
            lambda config: _overrides(config.db.dialect, "get_multi_table_options"),
            "the dialect does not reflect table options",
        )

    @property
    def percent_schema_names(self) -> exclusions.compound:
        """Quoted names with percent signs are plain identifiers."""
        return exclusions.open()

    # -- keys, constraints and their reflection -------------------------------

    @property
    def deferrable_fks(self) -> exclusions.compound:
        """DSQL foreign keys may be DEFERRABLE (checked at commit)."""
        return exclusions.open()

    @property
    def repeated_column_foreign_keys(self) -> exclusions.compound:
        """DSQL foreign keys follow PostgreSQL's, which allow a column twice."""
        return exclusions.open()

    @property
    def foreign_key_constraint_name_reflection(self) -> exclusions.compound:
        """Constraint names come back from pg_constraint."""
        return exclusions.open()

    @property
    def cross_schema_fk_reflection(self) -> exclusions.compound:
        """Foreign keys may reference a table in another schema."""
        return exclusions.open()

    @property
    def foreign_key_constraint_option_reflection_ondelete(self) -> exclusions.compound:
        """DSQL supports every foreign key action."""
        return exclusions.open()

    @property
    def fk_constraint_option_reflection_ondelete_restrict(self) -> exclusions.compound:
        """DSQL supports every foreign key action, RESTRICT included."""
        return exclusions.open()

    @property
    def fk_constraint_option_reflection_ondelete_noaction(self) -> exclusions.compound:
        """DSQL supports every foreign key action, NO ACTION included."""
        return exclusions.open()

    @property
    def foreign_key_constraint_option_reflection_onupdate(self) -> exclusions.compound:
        """DSQL supports every foreign key action."""
        return exclusions.open()

    @property
    def fk_constraint_option_reflection_onupdate_restrict(self) -> exclusions.compound:
        """DSQL supports every foreign key action, RESTRICT included."""
        return exclusions.open()

    @property
    def reflects_pk_names(self) -> exclusions.compound:
        """Primary key names come back from pg_constraint."""
        return exclusions.open()

    @property
    def unique_constraints_reflect_as_index(self) -> exclusions.compound:
        """As in PostgreSQL, a unique constraint is backed by a unique index."""
        return exclusions.open()

    @property
    def inline_check_constraint_reflection(self) -> exclusions.compound:
        """CHECK constraints declared in CREATE TABLE are reflected."""
        return exclusions.open()

    @property
    def check_constraint_reflection(self) -> exclusions.compound:
        """CHECK constraints are reflected from pg_constraint."""
        return exclusions.open()

    @property
    def implicit_default_schema(self) -> exclusions.compound:
        """``public`` is the default schema, as in PostgreSQL."""
        return exclusions.open()

    @property
    def default_schema_name_switch(self) -> exclusions.compound:
        """search_path is one of the few parameters DSQL lets a session set."""
        return exclusions.open()

    # -- comments -----------------------------------------------------------------

    @property
    def comment_reflection(self) -> exclusions.compound:
        """COMMENT ON is PostgreSQL DDL that DSQL keeps."""
        return exclusions.open()

    @property
    def comment_reflection_full_unicode(self) -> exclusions.compound:
        """DSQL databases are UTF-8."""
        return exclusions.open()

    @property
    def constraint_comment_reflection(self) -> exclusions.compound:
        """COMMENT ON CONSTRAINT is PostgreSQL DDL that DSQL keeps."""
        return exclusions.open()

    @_lacking
    def column_collation_reflection(self) -> None:
        """DSQL has only the C collation and refuses COLLATE on columns."""

    def get_order_by_collation(self, config: Any) -> str:
        # DSQL's only collation. COLLATE is refused on columns (and in CREATE
        # TABLE), not in expressions such as ORDER BY.
        return "C"

    # -- indexes -------------------------------------------------------------------

    @_lacking
    def indexes_with_ascdesc(self) -> None:
        """DSQL rejects an explicit ASC or DESC on index keys."""

    @_lacking
    def reflect_indexes_with_ascdesc(self) -> None:
        """DSQL rejects an explicit ASC or DESC on index keys."""

    @property
    def indexes_with_expressions(self) -> exclusions.compound:
        """DSQL supports expression indexes (IMMUTABLE expressions)."""
        return exclusions.open()

    @property
    def reflect_indexes_with_expressions(self) -> exclusions.compound:
        """Expression keys are reflected as PostgreSQL's."""
        return exclusions.open()

    @property
    def index_reflects_included_columns(self) -> exclusions.compound:
        """CREATE INDEX ASYNC ... INCLUDE (...) is in DSQL's grammar."""
        return exclusions.open()

    @property
    def indexes_check_column_order(self) -> exclusions.compound:
        """Index keys keep their order, as in PostgreSQL."""
        return exclusions.open()

    # -- sequences and generated values -------------------------------------------

    @property
    def identity_columns(self) -> exclusions.compound:
        """DSQL has BIGINT identity columns (the dialect writes the CACHE they need)."""
        return _dialect("supports_identity_columns", "the dialect has no identity columns")

    @property
    def identity_columns_standard(self) -> exclusions.compound:
        """Identity options (start, increment, min/max, cycle) are PostgreSQL's."""
        return self.identity_columns

    @property
    def computed_columns(self) -> exclusions.compound:
        """DSQL, like PostgreSQL 16, has stored generated columns."""
        return exclusions.open()

    @property
    def computed_columns_stored(self) -> exclusions.compound:
        """GENERATED ALWAYS AS (...) STORED."""
        return self.computed_columns

    @_lacking
    def computed_columns_virtual(self) -> None:
        """DSQL (PostgreSQL 16) has no VIRTUAL generated columns."""

    @property
    def computed_columns_default_persisted(self) -> exclusions.compound:
        """A Computed without persisted is emitted STORED, PostgreSQL 16's only kind."""
        return self.computed_columns

    @property
    def computed_columns_reflect_persisted(self) -> exclusions.compound:
        """pg_attribute.attgenerated tells stored columns apart."""
        return self.computed_columns

    # -- SQL --------------------------------------------------------------------

    @property
    def ctes(self) -> exclusions.compound:
        """DSQL runs PostgreSQL's WITH queries."""
        return exclusions.open()

    @property
    def ctes_with_update_delete(self) -> exclusions.compound:
        """WITH ... UPDATE / DELETE is PostgreSQL DML."""
        return exclusions.open()

    @property
    def ctes_with_values(self) -> exclusions.compound:
        """WITH x AS (VALUES ...) is PostgreSQL SQL."""
        return exclusions.open()

    @property
    def ctes_on_dml(self) -> exclusions.compound:
        """Data-modifying statements inside WITH are PostgreSQL DML."""
        return exclusions.open()

    @property
    def table_value_constructor(self) -> exclusions.compound:
        """VALUES (...) as a FROM item is PostgreSQL SQL."""
        return exclusions.open()

    @property
    def boolean_col_expressions(self) -> exclusions.compound:
        """Boolean expressions may be selected as columns."""
        return exclusions.open()

    @property
    def nullsordering(self) -> exclusions.compound:
        """ORDER BY ... NULLS FIRST / LAST."""
        return exclusions.open()

    @property
    def intersect(self) -> exclusions.compound:
        """INTERSECT is PostgreSQL SQL."""
        return exclusions.open()

    @property
    def except_(self) -> exclusions.compound:
        """EXCEPT is PostgreSQL SQL."""
        return exclusions.open()

    @property
    def window_functions(self) -> exclusions.compound:
        """Window functions are PostgreSQL SQL."""
        return exclusions.open()

    @property
    def window_range(self) -> exclusions.compound:
        """RANGE frames with integer offsets."""
        return exclusions.open()

    @property
    def window_range_numeric(self) -> exclusions.compound:
        """RANGE frames with non-integer offsets."""
        return exclusions.open()

    @property
    def window_range_non_numeric(self) -> exclusions.compound:
        """RANGE frames over dates and intervals."""
        return exclusions.open()

    @property
    def tuple_in(self) -> exclusions.compound:
        """(a, b) IN ((1, 2), ...) is PostgreSQL SQL."""
        return exclusions.open()

    @property
    def update_from(self) -> exclusions.compound:
        """UPDATE ... FROM is PostgreSQL DML."""
        return exclusions.open()

    @property
    def delete_from(self) -> exclusions.compound:
        """DELETE ... USING is PostgreSQL DML."""
        return exclusions.open()

    @property
    def supports_distinct_on(self) -> exclusions.compound:
        """SELECT DISTINCT ON (...) is PostgreSQL SQL."""
        return exclusions.open()

    @property
    def regexp_match(self) -> exclusions.compound:
        """The ~ operators are PostgreSQL's."""
        return exclusions.open()

    @property
    def regexp_replace(self) -> exclusions.compound:
        """regexp_replace() is PostgreSQL's."""
        return exclusions.open()

    @property
    def fetch_first(self) -> exclusions.compound:
        """FETCH FIRST n ROWS ONLY."""
        return exclusions.open()

    @property
    def fetch_ties(self) -> exclusions.compound:
        """FETCH FIRST n ROWS WITH TIES (PostgreSQL >= 13)."""
        return exclusions.open()

    @property
    def fetch_offset_with_options(self) -> exclusions.compound:
        """OFFSET together with FETCH FIRST ... WITH TIES."""
        return exclusions.open()

    @property
    def fetch_expression(self) -> exclusions.compound:
        """FETCH FIRST takes an expression, as in PostgreSQL."""
        return exclusions.open()

    @property
    def fetch_no_order_by(self) -> exclusions.compound:
        """FETCH FIRST without ORDER BY."""
        return exclusions.open()

    @property
    def aggregate_order_by(self) -> exclusions.compound:
        """ORDER BY inside an aggregate call, as in PostgreSQL."""
        return exclusions.open()

    @property
    def supports_bitwise_or(self) -> exclusions.compound:
        """PostgreSQL's bitwise operators."""
        return exclusions.open()

    @property
    def supports_bitwise_and(self) -> exclusions.compound:
        """PostgreSQL's bitwise operators."""
        return exclusions.open()

    @property
    def supports_bitwise_not(self) -> exclusions.compound:
        """PostgreSQL's bitwise operators."""
        return exclusions.open()

    @property
    def supports_bitwise_xor(self) -> exclusions.compound:
        """PostgreSQL's bitwise operators."""
        return exclusions.open()

    @property
    def supports_bitwise_shift(self) -> exclusions.compound:
        """PostgreSQL's bitwise operators."""
        return exclusions.open()

    # -- types ------------------------------------------------------------------

    @_lacking
    def array_type(self) -> None:
        """DSQL has no array column types."""

    @property
    def uuid_data_type(self) -> exclusions.compound:
        """DSQL has UUID columns (and recommends them as keys)."""
        return exclusions.open()

    @property
    def json_type(self) -> exclusions.compound:
        """DSQL supports JSON and JSONB columns."""
        return exclusions.open()

    @property
    def legacy_unconditional_json_extract(self) -> exclusions.compound:
        """PostgreSQL's JSON operators."""
        return self.json_type

    @property
    def datetime_interval(self) -> exclusions.compound:
        """INTERVAL is a PostgreSQL type that DSQL keeps."""
        return exclusions.open()

    @property
    def datetime_literals(self) -> exclusions.compound:
        """Date and time literals render as PostgreSQL's."""
        return exclusions.open()

    @property
    def datetime_timezone(self) -> exclusions.compound:
        """TIMESTAMP WITH TIME ZONE."""
        return exclusions.open()

    @property
    def time_timezone(self) -> exclusions.compound:
        """TIME WITH TIME ZONE."""
        return exclusions.open()

    @property
    def datetime_historic(self) -> exclusions.compound:
        """Timestamps before 1900."""
        return exclusions.open()

    @property
    def date_historic(self) -> exclusions.compound:
        """Dates before 1900."""
        return exclusions.open()

    @property
    def precision_numerics_enotation_small(self) -> exclusions.compound:
        """NUMERIC up to precision 1000."""
        return exclusions.open()

    @property
    def precision_numerics_many_significant_digits(self) -> exclusions.compound:
        """NUMERIC up to precision 1000."""
        return exclusions.open()

    @property
    def precision_numerics_retains_significant_digits(self) -> exclusions.compound:
        """NUMERIC keeps trailing zeros, as in PostgreSQL."""
        return exclusions.open()

    @property
    def infinity_floats(self) -> exclusions.compound:
        """float8 stores 'Infinity', and asyncpg passes it through."""
        return exclusions.open()

    @property
    def float_or_double_precision_behaves_generically(self) -> exclusions.compound:
        """REAL and DOUBLE PRECISION are PostgreSQL's."""
        return exclusions.open()

    @property
    def server_defaults(self) -> exclusions.compound:
        """DEFAULT clauses in CREATE TABLE."""
        return exclusions.open()

    @property
    def expression_server_defaults(self) -> exclusions.compound:
        """DEFAULT clauses may be expressions."""
        return exclusions.open()

    @property
    def unicode_ddl(self) -> exclusions.compound:
        """Non-ASCII identifiers; DSQL databases are UTF-8."""
        return exclusions.open()
