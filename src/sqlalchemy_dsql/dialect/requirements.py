"""What the ``auroradsql`` dialect supports, for SQLAlchemy's compliance suite.

Each closed capability names the Aurora DSQL limit behind it (see
``docs/emulator.md`` and the DSQL reference).
"""

from __future__ import annotations

from sqlalchemy.testing import exclusions
from sqlalchemy.testing.requirements import SuiteRequirements


class Requirements(SuiteRequirements):
    @property
    def savepoints(self) -> exclusions.compound:
        """DSQL has no SAVEPOINT."""
        return exclusions.closed()

    @property
    def temp_table_reflection(self) -> exclusions.compound:
        """DSQL has no temporary tables."""
        return exclusions.closed()

    @property
    def temporary_tables(self) -> exclusions.compound:
        """DSQL has no temporary tables."""
        return exclusions.closed()

    @property
    def two_phase_transactions(self) -> exclusions.compound:
        """DSQL has no prepared transactions."""
        return exclusions.closed()
