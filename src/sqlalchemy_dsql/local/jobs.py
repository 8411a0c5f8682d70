"""Asynchronous DDL jobs: ``CREATE INDEX ASYNC`` and ``ALTER TABLE ASYNC ... VALIDATE CONSTRAINT``.

The proxy turns an async DDL statement into a call of ``sys._submit_job``,
which records the job in ``sys._jobs`` (shown to users as ``sys.jobs``) and
sends a notification when the client's transaction commits. This runner hears
it, runs the synchronous PostgreSQL statement on its own connection and records
``completed`` or ``failed`` with the error, as DSQL's job manager does. A UNIQUE
build over duplicate rows therefore fails the job, not the statement.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from .backend import BackendAddress
from .catalog import Catalog

_CHANNEL = "dsql_local_jobs"
_FINISHED = ("completed", "failed", "cancelled")
_POLL_INTERVAL = 0.05
_log = logging.getLogger("sqlalchemy_dsql.local.jobs")


def submit_sql(job_type: str, object_name: str, table: str, backend_sql: str) -> str:
    """The backend query that replaces a client's async DDL statement."""
    args = ", ".join(_literal(value) for value in (job_type, object_name, table, backend_sql))
    # Evaluated in the client's session, before the function's own search_path applies.
    table_oid = f"to_regclass({_literal(_quoted_name(table))})::oid" if table else "NULL"
    return f"SELECT sys._submit_job({args}, current_setting('search_path'), {table_oid}) AS job_id"


def _quoted_name(table: str) -> str:
    """``schema.name`` or ``name`` as the rules report it, quoted for to_regclass."""
    return ".".join('"' + part.replace('"', '""') + '"' for part in table.split(".", 1))


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


class JobRunner:
    def __init__(self, address: BackendAddress, catalog: Catalog) -> None:
        self._address = address
        self._catalog = catalog
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._finished: dict[str, asyncio.Event] = {}
        # Whether each finished job succeeded, as the job manager knows it: a wait's answer
        # must not depend on the snapshot of the transaction that waits.
        self._outcomes: dict[str, bool] = {}
        self._listener: Any = None
        self._worker: Any = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        import asyncpg

        kwargs = self._address.asyncpg_kwargs()
        self._listener = await asyncpg.connect(**kwargs)
        self._worker = await asyncpg.connect(**kwargs)
        await self._listener.add_listener(_CHANNEL, self._on_notify)
        for record in await self._listener.fetch(
            "SELECT job_id FROM sys._jobs WHERE status IN ('submitted', 'processing') "
            "ORDER BY start_time"
        ):
            self._queue.put_nowait(record["job_id"])
        self._task = asyncio.create_task(self._run(), name="dsql-local-jobs")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for connection in (self._listener, self._worker):
            if connection is not None:
                await connection.close(timeout=2)

    async def wait(self, job_id: str | None) -> bool | None:
        """Return once ``job_id`` (or, if None, every job known now) has finished.

        The answer is whether that job completed (``None`` for every job, and for an
        unknown id, which ``sys.wait_for_job`` itself reports).
        """
        if job_id is None:
            pending = await self._listener.fetch(
                "SELECT job_id FROM sys._jobs WHERE status IN ('submitted', 'processing')"
            )
            for record in pending:
                await self.wait(record["job_id"])
            return None
        event = self._finished.setdefault(job_id, asyncio.Event())
        while not event.is_set():
            status = await self._listener.fetchval(
                "SELECT status FROM sys._jobs WHERE job_id = $1", job_id
            )
            if status is None:
                return None
            if status in _FINISHED:
                return bool(status == "completed")
            # Another emulator sharing the backend may be the one running it.
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(event.wait(), _POLL_INTERVAL)
        return self._outcomes.get(job_id)

    def _on_notify(self, _connection: Any, _pid: int, _channel: str, job_id: str) -> None:
        self._queue.put_nowait(job_id)

    async def _run(self) -> None:
        while True:
            job_id = await self._queue.get()
            try:
                succeeded = await self._execute(job_id)
            except Exception:  # a broken job must not stop the runner
                _log.exception("async job %s could not be run", job_id)
                succeeded = None
            if succeeded is not None:
                self._outcomes[job_id] = succeeded
                self._finished.setdefault(job_id, asyncio.Event()).set()

    async def _execute(self, job_id: str) -> bool | None:
        """Run a submitted job: whether it completed; None if another runner took it."""
        job = await self._worker.fetchrow(
            "UPDATE sys._jobs SET status = 'processing', update_time = now() "
            "WHERE job_id = $1 AND status = 'submitted' "
            "RETURNING backend_sql, table_name, search_path",
            job_id,
        )
        if job is None:
            return None
        try:
            async with self._worker.transaction():
                await self._worker.execute(
                    "SELECT set_config('search_path', $1, true)", job["search_path"]
                )
                await self._worker.execute(job["backend_sql"])
        except Exception as exc:
            details = getattr(exc, "message", None) or str(exc)
            await self._set(job_id, "failed", details)
            _log.info("async job %s failed: %s", job_id, details)
            return False
        self._catalog.record([job["table_name"]])
        await self._set(job_id, "completed", None)
        return True

    async def _set(self, job_id: str, status: str, details: str | None) -> None:
        await self._worker.execute(
            "UPDATE sys._jobs SET status = $2, details = $3, update_time = now() WHERE job_id = $1",
            job_id,
            status,
            details,
        )
