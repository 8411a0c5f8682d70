"""Amazon's ``aurora_dsql_sqlalchemy.psycopg``: our psycopg dialect."""

from sqlalchemy_dsql.dialect.psycopg import AuroraDSQLDialect_psycopg

__all__ = ["AuroraDSQLDialect_psycopg"]
