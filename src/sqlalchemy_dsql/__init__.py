"""sqlalchemy-dsql: the async-first SQLAlchemy toolkit for Amazon Aurora DSQL.

Today the package ships ``sqlalchemy_dsql.local``, a local Aurora DSQL
emulator on a real PostgreSQL 16 (``dsql-local``). The dialects, the
token-refreshing engine and the retry helpers follow; see the README's status
table.
"""

from __future__ import annotations

__version__ = "0.1.0.dev0"
__all__ = ["__version__"]
