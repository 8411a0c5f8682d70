"""SQLAlchemy's dialect compliance suite; DSQL's gaps are closed in requirements.py."""

from sqlalchemy.testing.suite import *  # noqa: F403
