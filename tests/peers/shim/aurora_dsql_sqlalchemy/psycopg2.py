"""Amazon's ``aurora_dsql_sqlalchemy.psycopg2``: our psycopg2 dialect."""

from sqlalchemy_dsql.dialect.psycopg2 import AuroraDSQLDialect_psycopg2

__all__ = ["AuroraDSQLDialect_psycopg2"]
