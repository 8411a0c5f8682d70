"""Catalog versions shared by all sessions, for DSQL's schema-conflict (OC001) errors.

DSQL publishes schema changes as new catalog versions; a transaction that
started on an older version and then touches a changed relation fails with
``40001 (OC001)``. The emulator records which relations each committed DDL
statement (or finished async job) changed, under an increasing version number.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable


class Catalog:
    _HISTORY = 1024

    def __init__(self) -> None:
        self.version = 0
        self._changes: deque[tuple[int, frozenset[str]]] = deque(maxlen=self._HISTORY)

    def record(self, relations: Iterable[str]) -> None:
        self.version += 1
        self._changes.append((self.version, frozenset(_unqualified(r) for r in relations)))

    def changed_since(self, version: int, relations: Iterable[str]) -> bool:
        """Whether a change after ``version`` touched any of ``relations``."""
        if version >= self.version:
            return False
        wanted = {_unqualified(r) for r in relations}
        if not wanted:
            return False
        oldest_kept = self._changes[0][0] if self._changes else self.version + 1
        if version < oldest_kept - 1:
            return True  # history trimmed: be conservative, as a stale DSQL session would
        return any(v > version and changed & wanted for v, changed in self._changes)


def _unqualified(relation: str) -> str:
    return relation.rsplit(".", 1)[-1]
