"""Amazon's ``aurora_dsql_sqlalchemy.base`` names for our shared dialect and DDL compiler."""

from sqlalchemy_dsql.dialect.base import AuroraDSQLDialect
from sqlalchemy_dsql.dialect.ddl import DSQLDDLCompiler as AuroraDSQLDDLCompiler

__all__ = ["AuroraDSQLDDLCompiler", "AuroraDSQLDialect"]
