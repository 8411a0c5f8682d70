"""One client connection: relays messages to its backend session and enforces DSQL's rules.

Every decision is made on the way in (client to backend). A refused statement is
not answered by the proxy itself: it is replaced by a *poison* message that makes
the backend fail at exactly that point (a syntax error for a query or a Parse, a
missing portal for an Execute). The backend then behaves as after any real
error (aborted transaction block, messages skipped until Sync), and the proxy
only swaps the backend's error text for DSQL's on the way out. Ordering,
pipelining and recovery are therefore PostgreSQL's own.

Writes outside an explicit transaction are wrapped by the proxy in a
transaction of its own, so that a statement that breaks the row limit is rolled
back instead of committed: the proxy must see the command tag before the commit.

The relay runs in protocol callbacks, not in tasks, so that a message costs no
extra trip through the event loop. A handler that must wait for something (a
``dsql-lint`` verdict, an async job, the end of in-flight work) returns an
awaitable instead of acting; the session stops reading from the client, awaits
it, and hands the same message to the handler again.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, fields, replace

from . import jobs, protocol, rules
from .catalog import Catalog
from .limits import Limits
from .rules import Kind, Rejection

_MARKER = "DSQL_LOCAL_REJECT_"
_OC000 = "change conflicts with another transaction, please retry: (OC000)"
_OC001 = "schema has been updated by another transaction, please retry: (OC001)"
_ABORTED = Rejection(
    "25P02", "current transaction is aborted, commands ignored until end of transaction block"
)
_DDL_AND_DML = Rejection(
    "0A000",
    "ddl and dml are not supported in the same transaction",
    "commit the data changes, then run the DDL in a transaction of its own",
)
_SECOND_DDL = Rejection(
    "0A000",
    "only one ddl statement is supported per transaction",
    "run each DDL statement in its own transaction",
)
# Serialization failure, deadlock, and a lock wait DSQL would not have made.
_CONFLICT_STATES = frozenset({"40001", "40P01", "55P03"})
# An intercepted reply that goes to the client unchanged.
_KEEP = Rejection("", "")
_CALL = re.compile(r"^\s*CALL\s+", re.IGNORECASE)
_AWS_IAM = re.compile(r"^\s*AWS\s+IAM\s+(GRANT|REVOKE)\b", re.IGNORECASE)
# IAM mappings do not exist here: any configured key may log in as any role.
_AWS_IAM_BACKEND_TEXT = "DO $$ BEGIN END $$"
_CATALOG_CHECKED = frozenset({Kind.READ, Kind.WRITE, Kind.WAIT_FOR_JOB})
# Backend messages relayed without a look: DataRow, RowDescription, ParseComplete,
# BindComplete, ParameterDescription, NoData.
_PASS_THROUGH = frozenset(b"DT12tn")
# For each client request kind, the backend messages that complete it.
_REPLIES: dict[int, bytes] = {
    0x50: b"1",  # Parse: ParseComplete
    0x42: b"2",  # Bind: BindComplete
    0x44: b"Tn",  # Describe: RowDescription or NoData
    0x45: b"CIs",  # Execute: CommandComplete, EmptyQueryResponse, PortalSuspended
    0x43: b"3",  # Close: CloseComplete
    0x53: b"Z",  # Sync
    0x51: b"Z",  # Query
    0x46: b"Z",  # FunctionCall
}
_AWAITS_REPLY = frozenset(_REPLIES)
_SYNC_POINTS = frozenset(b"SQF")

Waiter = Awaitable[object]


@dataclass(slots=True)
class Counters:
    """What one session did; also summed over all sessions by the server."""

    round_trips: int = 0
    statements: int = 0
    transactions: int = 0
    rejections: int = 0
    conflicts: int = 0
    closed_at_age_limit: int = 0

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True, slots=True)
class LoggedStatement:
    session_id: int
    user: str
    sql: str
    rejection: Rejection | None


@dataclass(frozen=True, slots=True)
class RoundTrip:
    """One round trip: what a client sent before the reply it then waited for.

    ``messages`` holds the protocol message type letters in order (``"PDH"``:
    asyncpg preparing a statement; ``"BES"``: running a prepared one; ``"Q"``:
    a simple query); ``sql`` the statements parsed, bound or queried, each once.
    """

    session_id: int
    messages: str
    sql: tuple[str, ...]


class SessionHost:
    """What a session needs from the server it belongs to."""

    catalog: Catalog
    limits: Limits
    latency: float
    jobs: jobs.JobRunner
    totals: Counters
    log_statement: Callable[[LoggedStatement], None] | None
    log_round_trip: Callable[[RoundTrip], None] | None
    # Errors the next COMMITs of any session answer with, oldest first (a test hook).
    commit_failures: collections.deque[Rejection]

    def cached_second_opinion(self, sql: str, verdict: rules.Verdict) -> Rejection | bool | None:
        """The dsql-lint verdict if known; ``False`` if it must be fetched first."""
        raise NotImplementedError

    async def fetch_second_opinion(self, sql: str) -> None:
        raise NotImplementedError

    def preempt(self, source: Session, relations: frozenset[str]) -> None:
        """Fail other sessions' transactions that used ``relations`` (DDL from ``source``)."""
        raise NotImplementedError


@dataclass(slots=True)
class _Transaction:
    """Request-side view of the transaction the next statement runs in."""

    explicit: bool = False
    active: bool = False
    started: float = 0.0
    catalog_version: int = 0
    has_ddl: bool = False
    has_write: bool = False
    ddl_relations: frozenset[str] = frozenset()
    relations: frozenset[str] = frozenset()


class _Side(asyncio.Protocol):
    """Routes one transport's events to the session."""

    def __init__(
        self,
        on_data: Callable[[bytes], None],
        on_lost: Callable[[], None],
        on_flow: Callable[[bool], None],
    ) -> None:
        self._on_data = on_data
        self._on_lost = on_lost
        self._on_flow = on_flow

    def data_received(self, data: bytes) -> None:
        self._on_data(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self._on_lost()

    def eof_received(self) -> bool:
        self._on_lost()
        return False

    def pause_writing(self) -> None:
        self._on_flow(True)

    def resume_writing(self) -> None:
        self._on_flow(False)


class Session:
    _ids = itertools.count(1)

    def __init__(
        self,
        host: SessionHost,
        user: str,
        backend_key: tuple[int, int],
    ) -> None:
        self.id = next(self._ids)
        self.user = user
        self.counters = Counters()
        self.backend_key = backend_key
        self._host = host
        self._client: asyncio.Transport | None = None
        self._backend: asyncio.Transport | None = None
        self._closed = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        # Request side.
        self._incoming = b""
        self._delayed: deque[tuple[float, bytes]] = deque()
        self._waiting = False
        self._jobs_waited = False
        self._tx = _Transaction()
        self._doomed = False
        self._statements: dict[str, rules.Verdict] = {}
        self._portals: dict[str, rules.Verdict] = {}
        self._batch: list[bytes] = []
        self._batch_failed = False
        self._preempted = False
        self._rejections: dict[int, Rejection] = {}
        self._poison_ids = itertools.count(1)
        # Client messages since its last reply (a round trip when answered); their SQL if traced.
        self._request_messages = bytearray()
        self._request_sql: list[str] = []
        self._prepared_sql: dict[str, str] = {}
        # Response side.
        self._outgoing = b""
        # Request kinds whose final reply has not come back yet, oldest first.
        self._expect: deque[int] = deque()
        self._idle = asyncio.Event()
        self._idle.set()
        # Replies to the proxy's own messages, expected next: dropped, or turned into an error.
        self._intercept: deque[tuple[int, Rejection | None]] = deque()
        self._abort_when_idle = False
        self._wrapped = False
        self._wrap_failed = False
        self._response_explicit = False
        self._response_rows = 0
        self._drop_until_ready = False

    # -- lifecycle -------------------------------------------------------

    async def run(
        self,
        client: asyncio.Transport,
        client_leftover: bytes,
        backend: asyncio.Transport,
        backend_leftover: bytes,
    ) -> None:
        """Relay until either side hangs up, the age limit passes or :meth:`close` is called."""
        self._client, self._backend = client, backend
        client.set_protocol(_Side(self._client_data, self.close, self._client_flow))
        backend.set_protocol(_Side(self._backend_data, self.close, self._backend_flow))
        age_timer = self._loop.call_later(self._host.limits.max_connection_age, self._age_out)
        try:
            if backend_leftover:
                self._backend_data(backend_leftover)
            if client_leftover:
                self._client_data(client_leftover)
            await self._closed.wait()
        finally:
            age_timer.cancel()
            client.close()
            backend.close()

    def close(self) -> None:
        """Drop the connection the way DSQL does at the age limit: no error, just closed."""
        self._closed.set()

    def _age_out(self) -> None:
        self.counters.closed_at_age_limit += 1
        self._host.totals.closed_at_age_limit += 1
        self.close()

    def _client_flow(self, paused: bool) -> None:
        if self._backend is not None:
            (self._backend.pause_reading if paused else self._backend.resume_reading)()

    def _backend_flow(self, paused: bool) -> None:
        if self._client is not None and not self._waiting:
            (self._client.pause_reading if paused else self._client.resume_reading)()

    # -- client to backend -------------------------------------------------

    def _client_data(self, data: bytes) -> None:
        latency = self._host.latency
        if latency or self._delayed:
            self._delayed.append((self._loop.time() + latency, data))
            if len(self._delayed) == 1:
                self._loop.call_at(self._delayed[0][0], self._release_delayed)
            return
        self._incoming = self._incoming + data if self._incoming else data
        self._process_client()

    def _release_delayed(self) -> None:
        now = self._loop.time()
        while self._delayed and self._delayed[0][0] <= now:
            self._incoming += self._delayed.popleft()[1]
        if self._delayed:
            self._loop.call_at(self._delayed[0][0], self._release_delayed)
        self._process_client()

    def _process_client(self) -> None:
        incoming = self._incoming
        consumed = 0
        try:
            for kind, start, end in protocol.split(incoming):
                if self._waiting or self._closed.is_set():
                    break
                waiter = self._on_client_message(kind, incoming[start:end])
                if waiter is not None:
                    self._pause_until(waiter)  # the message stays unconsumed and is retried
                    break
                consumed = end
                self._trace(kind, incoming[start:end])
        except protocol.ProtocolError:
            self.close()
        self._incoming = incoming[consumed:]
        self._flush()

    def _trace(self, kind: int, raw: bytes) -> None:
        """Add a handled client message to the request that the next reply answers."""
        self._request_messages.append(kind)
        if self._host.log_round_trip is None:
            return
        if kind == 0x50:  # Parse
            name, offset = protocol.read_cstring(raw, 5)
            sql = protocol.read_cstring(raw, offset)[0]
            self._prepared_sql[name] = sql
            self._request_sql.append(sql)
        elif kind == 0x42:  # Bind: a statement parsed in an earlier request, or in this one
            offset = protocol.read_cstring(raw, 5)[1]
            sql = self._prepared_sql.get(protocol.read_cstring(raw, offset)[0], "")
            if sql not in self._request_sql:
                self._request_sql.append(sql)
        elif kind == 0x51:  # Query
            self._request_sql.append(raw[5:-1].decode())

    def _count_round_trip(self) -> None:
        """The client gets the first reply to what it sent: one round trip, whatever it held."""
        self.counters.round_trips += 1
        self._host.totals.round_trips += 1
        if self._host.log_round_trip is not None:
            entry = RoundTrip(self.id, self._request_messages.decode(), tuple(self._request_sql))
            self._request_sql.clear()
            self._host.log_round_trip(entry)
        self._request_messages.clear()

    def _pause_until(self, waiter: Waiter) -> None:
        """Stop reading the client until ``waiter`` is done, then go on processing its input."""
        self._waiting = True
        assert self._client is not None
        self._client.pause_reading()

        async def resume() -> None:
            try:
                await waiter
            finally:
                self._waiting = False
                if not self._closed.is_set():
                    assert self._client is not None
                    self._client.resume_reading()
                    self._process_client()

        self._loop.create_task(resume())

    def _on_client_message(self, kind: int, raw: bytes) -> Waiter | None:
        if kind == 0x42:  # Bind
            return self._on_bind(raw)
        if kind == 0x45:  # Execute
            return self._on_execute(raw)
        if kind == 0x53:  # Sync
            self._on_sync(raw)
        elif kind == 0x50:  # Parse
            return self._on_parse(raw)
        elif kind == 0x51:  # Query
            return self._on_query(raw)
        elif kind == 0x48:  # Flush
            self._batch.append(raw)
            self._flush()
        else:
            if kind == 0x43:  # Close
                name = protocol.read_cstring(raw, 6)[0]
                (self._statements if raw[5:6] == b"S" else self._portals).pop(name, None)
            self._forward(kind, raw)
        return None

    def _forward(self, kind: int, raw: bytes) -> None:
        """Queue a client message for the backend, noting the reply that will close it."""
        self._batch.append(raw)
        if kind in _AWAITS_REPLY:
            self._expect.append(kind)
            self._idle.clear()

    def _on_query(self, raw: bytes) -> Waiter | None:
        sql = raw[5:-1].decode()
        verdict = self._verdict(sql)
        if not isinstance(verdict, rules.Verdict):
            return verdict
        refused_commit = _is_commit(verdict) and self._commit_refused()
        wrap = verdict.rejection is None and not self._tx.active and _needs_wrap(verdict)
        waiter = self._job_waiter(verdict) or (
            self._idle_waiter() if wrap or refused_commit else None
        )
        if waiter is not None:
            return waiter
        self._log(sql, verdict)
        if refused_commit:
            self._count_statements(1)
            self._intercept.append((0x43, self._refuse_commit()))
            self._forward(0x51, protocol.message(b"Q", protocol.cstring("ROLLBACK")))
            self._flush()
            return None
        rejection = verdict.rejection
        text = sql
        if rejection is None:
            saved = replace(self._tx)
            for statement in verdict.statements:
                rejection = self._admit(statement)
                if rejection is not None:
                    self._tx = saved
                    break
            else:
                text = _backend_text(verdict, sql)
            if not self._tx.explicit:
                self._end_transaction(committed=rejection is None)
        self._count_statements(len(verdict.statements))
        if rejection is not None:
            text, wrap = self._poison(rejection), False
        if wrap:
            self._begin_wrap(sync=True)
        self._forward(0x51, protocol.message(b"Q", protocol.cstring(text)))
        self._flush()
        if wrap:
            self._pause_until(self._idle.wait())  # nothing else may run inside the wrapper
        return None

    def _on_parse(self, raw: bytes) -> Waiter | None:
        name, offset = protocol.read_cstring(raw, 5)
        sql, offset = protocol.read_cstring(raw, offset)
        verdict = self._verdict(sql)
        if not isinstance(verdict, rules.Verdict):
            return verdict
        waiter = self._job_waiter(verdict)
        if waiter is not None:
            return waiter
        self._log(sql, verdict)
        self._statements[name] = verdict
        rejection = verdict.rejection
        if rejection is None and self._preempted and not _ends_transaction(verdict):
            # The backend transaction may be aborted already and would refuse the Parse itself.
            rejection = self._take_preemption()
        if rejection is not None:
            self._batch_failed = True
            raw = _parse_message(name, self._poison(rejection), b"\x00\x00")
        else:
            text = _backend_text(verdict, sql)
            if text != sql:
                raw = _parse_message(name, text, raw[offset:])
        self._forward(0x50, raw)
        return None

    def _on_bind(self, raw: bytes) -> Waiter | None:
        portal, offset = protocol.read_cstring(raw, 5)
        verdict = self._statements.get(protocol.read_cstring(raw, offset)[0])
        if verdict is not None:
            # A reused prepared wait must wait too, before Bind takes its snapshot.
            waiter = self._job_waiter(verdict)
            if waiter is not None:
                return waiter
            self._portals[portal] = verdict
            if self._preempted and not _ends_transaction(verdict):
                self._batch_failed = True
                marker = protocol.cstring(self._poison(self._take_preemption()))
                raw = protocol.message(b"B", protocol.cstring(portal) + marker + bytes(6))
        self._forward(0x42, raw)
        return None

    def _on_execute(self, raw: bytes) -> Waiter | None:
        verdict = self._portals.get(protocol.read_cstring(raw, 5)[0])
        if verdict is None or self._batch_failed or not verdict.statements:
            self._count_statements(1)
            self._forward(0x45, raw)
            return None
        statement = verdict.statements[0]
        wrap = statement.kind is Kind.WRITE and not self._tx.active and not self._wrapped
        refused_commit = statement.kind is Kind.COMMIT and self._commit_refused()
        if (wrap or refused_commit) and not self._idle.is_set():
            # The proxy's own replies must be the next thing the backend answers.
            self._forward(0x48, protocol.message(b"H"))
            self._flush()
            return self._idle.wait()
        self._count_statements(1)
        if refused_commit:
            outcome = self._refuse_commit()
            self._flush()
            self._intercept.extend(
                [(0x31, None), (0x32, None), (0x43, outcome), (0x33, None), (0x33, None)]
            )
            self._forward(0x45, _internal("ROLLBACK", sync=False))
            return None
        rejection = self._admit(statement)
        if rejection is not None:
            self._batch_failed = True
            portal = protocol.cstring(self._poison(rejection))
            raw = protocol.message(b"E", portal + protocol.pack_int32(0))
        elif wrap:
            self._begin_wrap(sync=False)
        self._forward(0x45, raw)
        return None

    def _on_sync(self, raw: bytes) -> None:
        if self._tx.active and not self._tx.explicit:
            self._end_transaction(committed=not self._batch_failed)
        self._batch_failed = False
        self._forward(0x53, raw)
        self._flush()
        if self._wrapped:
            self._pause_until(self._idle.wait())  # nothing else may run inside the wrapper

    def _begin_wrap(self, *, sync: bool) -> None:
        """Open the proxy's own transaction around autocommit writes (nothing is in flight)."""
        self._flush()
        self._wrapped = True
        self._wrap_failed = False
        self._expect_internal(b"12C33Z" if sync else b"12C33")
        assert self._backend is not None
        self._backend.write(_internal("BEGIN", sync=sync))

    def _expect_internal(self, kinds: bytes, *, failing: Rejection | None = None) -> None:
        """Replies to come for the proxy's own messages: dropped, but a failing
        command's CommandComplete becomes ``failing``'s error."""
        self._intercept.extend(
            (kind, failing if kind == 0x43 and failing is not None else None) for kind in kinds
        )

    def _flush(self) -> None:
        if self._batch and self._backend is not None:
            self._backend.write(b"".join(self._batch))
            self._batch.clear()

    # -- statement rules -------------------------------------------------

    def _verdict(self, sql: str) -> rules.Verdict | Waiter:
        verdict = rules.check(sql)
        if verdict.rejection is None:
            second = self._host.cached_second_opinion(sql, verdict)
            if second is False:
                return self._host.fetch_second_opinion(sql)
            if isinstance(second, Rejection):
                verdict = rules.Verdict(verdict.statements, second)
        return verdict

    def _job_waiter(self, verdict: rules.Verdict) -> Waiter | None:
        """For ``sys.wait_for_job``: the job (or, for a parameter, every job) to wait for.

        The proxy waits before the statement reaches the backend, so that the
        statement's snapshot already shows the job's outcome.
        """
        if self._jobs_waited:
            self._jobs_waited = False
            return None
        for statement in verdict.statements:
            if statement.kind is Kind.WAIT_FOR_JOB:
                return self._wait_for_job(statement.job_id_literal)
        return None

    def _idle_waiter(self) -> Waiter | None:
        return None if self._idle.is_set() else self._idle.wait()

    async def _wait_for_job(self, job_id: str | None) -> None:
        await self._host.jobs.wait(job_id)
        self._jobs_waited = True

    def _log(self, sql: str, verdict: rules.Verdict) -> None:
        if verdict.rejection is not None:
            self._count_rejection()
        if self._host.log_statement is not None:
            self._host.log_statement(LoggedStatement(self.id, self.user, sql, verdict.rejection))

    def _admit(self, statement: rules.Statement) -> Rejection | None:
        """Check a statement against the transaction it would run in, and record it."""
        tx = self._tx
        kind = statement.kind
        if kind is Kind.ROLLBACK:
            self._doomed = self._preempted = self._abort_when_idle = False
            self._end_transaction(committed=False)
            return None
        if self._preempted:
            return self._take_preemption()
        if self._doomed:
            self._doomed = False
            return self._reject(_ABORTED)
        limit = self._host.limits.max_transaction_age
        if tx.active and time.monotonic() - tx.started > limit:
            return self._reject(Rejection("54000", f"transaction age limit of {limit:g}s exceeded"))
        if kind is Kind.BEGIN:
            if not tx.explicit:
                self._begin_transaction(explicit=True)
            return None
        if kind is Kind.COMMIT:
            self._end_transaction(committed=True)
            return None
        if kind in (Kind.EMPTY, Kind.SESSION) or (kind is Kind.READ and not tx.active):
            return None  # an autocommit read cannot break a transaction rule
        if not tx.active:
            self._begin_transaction(explicit=False)
            tx = self._tx
        if kind in (Kind.DDL, Kind.ASYNC_DDL):
            if tx.has_write:
                return self._reject(_DDL_AND_DML)
            if tx.has_ddl:
                return self._reject(_SECOND_DDL)
            tx.has_ddl = True
            tx.ddl_relations = statement.relations
            if kind is Kind.DDL:  # an async build changes the catalog only when it completes
                self._host.preempt(self, statement.relations)
        elif kind is Kind.WRITE and tx.has_ddl:
            return self._reject(_DDL_AND_DML)
        if kind in _CATALOG_CHECKED and self._host.catalog.changed_since(
            tx.catalog_version, statement.relations
        ):
            return self._conflict()
        if kind is Kind.WRITE:
            tx.has_write = True
        if statement.relations and not statement.relations <= tx.relations:
            tx.relations = tx.relations | statement.relations
        return None

    def _commit_refused(self) -> bool:
        """Whether a COMMIT now would fail (nothing is changed by asking)."""
        tx = self._tx
        return (
            self._preempted
            or self._doomed
            or (tx.active and bool(self._host.commit_failures))
            or (tx.active and time.monotonic() - tx.started > self._host.limits.max_transaction_age)
            or (tx.explicit and self._host.catalog.changed_since(tx.catalog_version, tx.relations))
        )

    def _refuse_commit(self) -> Rejection:
        """End a transaction that cannot commit; what its COMMIT answers instead.

        The proxy runs ROLLBACK in its place, so the session ends idle, as after
        any failed COMMIT. A transaction that had already failed answers as
        PostgreSQL does (the ROLLBACK tag, no error); otherwise the error says why.
        """
        tx = self._tx
        limit = self._host.limits.max_transaction_age
        if self._doomed:
            outcome = _KEEP
        elif tx.active and self._host.commit_failures:
            outcome = self._reject(self._host.commit_failures.popleft())
        elif self._preempted:
            outcome = self._take_preemption()
        elif tx.active and time.monotonic() - tx.started > limit:
            outcome = self._reject(
                Rejection("54000", f"transaction age limit of {limit:g}s exceeded")
            )
        else:
            outcome = self._conflict()
        self._doomed = self._preempted = self._abort_when_idle = False
        self._end_transaction(committed=False)
        return outcome

    def _count_statements(self, number: int) -> None:
        self.counters.statements += number
        self._host.totals.statements += number

    def _count_rejection(self) -> None:
        self.counters.rejections += 1
        self._host.totals.rejections += 1

    def _reject(self, rejection: Rejection) -> Rejection:
        self._count_rejection()
        return rejection

    def _conflict(self) -> Rejection:
        # The failed statement refreshes the session's catalog, as DSQL's retry would.
        self._tx.catalog_version = self._host.catalog.version
        self.counters.conflicts += 1
        self._host.totals.conflicts += 1
        return Rejection("40001", _OC001)

    def _begin_transaction(self, *, explicit: bool) -> None:
        self._tx = _Transaction(
            explicit=explicit,
            active=True,
            started=time.monotonic(),
            catalog_version=self._host.catalog.version,
        )
        self.counters.transactions += 1
        self._host.totals.transactions += 1

    def _end_transaction(self, *, committed: bool) -> None:
        if committed and self._tx.has_ddl:
            self._host.catalog.record(self._tx.ddl_relations)
        self._tx = _Transaction()

    def _poison(self, rejection: Rejection) -> str:
        number = next(self._poison_ids)
        self._rejections[number] = rejection
        return f"{_MARKER}{number}"

    # -- backend to client -------------------------------------------------

    def _backend_data(self, data: bytes) -> None:
        buffer = self._outgoing + data if self._outgoing else data
        out = bytearray()
        copied = last = 0
        try:
            for kind, start, end in protocol.split(buffer):
                last = end
                if kind in _PASS_THROUGH and not (self._intercept or self._drop_until_ready):
                    if kind != 0x44:
                        self._settle(kind)
                    continue  # relayed untouched, in one piece with its neighbours
                out += buffer[copied:start]
                copied = end
                self._on_backend_message(kind, bytes(buffer[start:end]), out)
        except protocol.ProtocolError:
            self.close()
            return
        out += buffer[copied:last]
        self._outgoing = buffer[last:]
        if out and self._client is not None:
            if self._request_messages:
                self._count_round_trip()
            self._client.write(out)

    def _on_backend_message(self, kind: int, raw: bytes, out: bytearray) -> None:
        if self._intercept:
            expected, rejection = self._intercept[0]
            if kind != expected:
                self._intercept.clear()
            else:
                self._intercept.popleft()
                if rejection is None:
                    return
                if rejection is not _KEEP:
                    out += protocol.error(
                        rejection.sqlstate, rejection.message, hint=rejection.hint
                    )
                    self._settle(0x45)
                    return
        if kind == 0x5A:  # ReadyForQuery
            self._on_ready(raw, out)
            return
        if not self._drop_until_ready:
            if kind == 0x45:  # ErrorResponse
                raw = self._translate_error(raw)
                if self._wrapped:
                    self._wrap_failed = True
            elif kind == 0x43:  # CommandComplete
                raw = self._on_command_complete(raw)
            out += raw
        self._settle(kind)

    def _on_ready(self, raw: bytes, out: bytearray) -> None:
        status = raw[5:6]
        self._drop_until_ready = False
        if self._wrapped:
            self._wrapped = False
            ending = "ROLLBACK" if self._wrap_failed or status != b"T" else "COMMIT"
            self._expect_internal(b"12C33")
            assert self._backend is not None
            self._backend.write(_internal(ending))
            self._response_rows = 0
            return
        if self._doomed and status == b"T":
            raw = protocol.ready_for_query(b"E")
        if status == b"I":
            self._response_explicit = False
            self._response_rows = 0
        out += raw
        self._settle(0x5A)
        if self._abort_when_idle and self._idle.is_set() and not self._batch:
            self._abort_backend()

    def _settle(self, kind: int) -> None:
        """Retire the request that ``kind`` (a backend message) answers in full."""
        expect = self._expect
        if not expect:
            return
        head = expect[0]
        if kind == 0x45:  # an error skips the rest of an extended batch, up to its Sync
            if head not in _SYNC_POINTS:
                while expect and expect[0] not in _SYNC_POINTS:
                    expect.popleft()
        elif kind in _REPLIES[head]:
            expect.popleft()
        if not expect:
            self._rejections.clear()
            self._idle.set()

    # -- schema conflicts ------------------------------------------------------

    def preempt(self, relations: frozenset[str]) -> None:
        """Another session's DDL changes ``relations``: fail this transaction if it used them.

        DSQL never blocks DDL behind open transactions; it fails them with OC001
        instead. PostgreSQL would make the DDL wait for their locks, so the
        proxy aborts the backend transaction (releasing its locks) and answers
        the client's next statement with the conflict.
        """
        tx = self._tx
        if not tx.explicit or not _overlap(tx.relations, relations) or self._preempted:
            return
        self._preempted = True
        if self._idle.is_set() and not self._waiting and not self._batch:
            self._abort_backend()
        else:
            self._abort_when_idle = True

    def _take_preemption(self) -> Rejection:
        """The conflict to answer with; the refused statement itself aborts the backend."""
        self._preempted = self._abort_when_idle = False
        return self._conflict()

    def _abort_backend(self) -> None:
        self._abort_when_idle = False
        self._expect_internal(b"EZ")
        assert self._backend is not None
        self._backend.write(protocol.message(b"Q", protocol.cstring(f"{_MARKER}0")))

    def _on_command_complete(self, raw: bytes) -> bytes:
        if raw[5] == 0x53:  # SELECT, SET, SHOW: nothing to count or track
            return raw
        tag = protocol.command_tag(raw[5:])
        if tag == "BEGIN":
            self._response_explicit = True
            self._response_rows = 0
        elif tag in ("COMMIT", "ROLLBACK"):
            self._response_explicit = False
            self._response_rows = 0
        changed = protocol.rows_modified(tag)
        if not changed:
            return raw
        self._response_rows += changed
        if self._response_rows <= self._host.limits.max_rows_per_transaction:
            return raw
        self._count_rejection()
        self._drop_until_ready = True
        if self._wrapped:
            self._wrap_failed = True
        elif self._response_explicit:
            self._doomed = True
        return protocol.error("54000", "transaction row limit exceeded")

    def _translate_error(self, raw: bytes) -> bytes:
        error_fields = protocol.parse_error_fields(raw[5:])
        text = error_fields.get("M", "")
        if _MARKER in text:
            digits = text.split(_MARKER, 1)[1]
            number = int("".join(itertools.takewhile(str.isdigit, digits)) or 0)
            rejection = self._rejections.pop(number, None)
            if rejection is not None:
                return protocol.error(rejection.sqlstate, rejection.message, hint=rejection.hint)
        if error_fields.get("C") in _CONFLICT_STATES:
            self.counters.conflicts += 1
            self._host.totals.conflicts += 1
            return protocol.error("40001", _OC000)
        return raw


def _backend_text(verdict: rules.Verdict, sql: str) -> str:
    """The text the backend runs for statements it cannot run as written."""
    if len(verdict.statements) != 1:
        return sql
    statement = verdict.statements[0]
    if statement.async_job is not None:
        job = statement.async_job
        return jobs.submit_sql(job.job_type, job.object_name, job.table, job.backend_sql)
    if statement.kind is Kind.WAIT_FOR_JOB:
        # The backend helper is a function, so DSQL's CALL form becomes a SELECT.
        return _CALL.sub("SELECT ", sql, count=1)
    if statement.kind is Kind.DDL and _AWS_IAM.match(sql):
        return _AWS_IAM_BACKEND_TEXT
    return sql


def _overlap(used: frozenset[str], changed: frozenset[str]) -> bool:
    unqualified = {name.rsplit(".", 1)[-1] for name in changed}
    return any(name.rsplit(".", 1)[-1] in unqualified for name in used)


def _is_commit(verdict: rules.Verdict) -> bool:
    return len(verdict.statements) == 1 and verdict.statements[0].kind is Kind.COMMIT


def _ends_transaction(verdict: rules.Verdict) -> bool:
    return any(statement.kind is Kind.ROLLBACK for statement in verdict.statements)


def _needs_wrap(verdict: rules.Verdict) -> bool:
    kinds = {statement.kind for statement in verdict.statements}
    return Kind.WRITE in kinds and not kinds & {Kind.BEGIN, Kind.COMMIT, Kind.ROLLBACK}


def _parse_message(name: str, sql: str, parameter_types: bytes) -> bytes:
    return protocol.message(b"P", protocol.cstring(name) + protocol.cstring(sql) + parameter_types)


def _internal(sql: str, *, sync: bool = True) -> bytes:
    """An extended-protocol run of ``sql`` that leaves no named objects behind.

    Its replies are ParseComplete, BindComplete, CommandComplete, two
    CloseComplete and, with ``sync``, ReadyForQuery.
    """
    name = protocol.cstring("dsql_local_internal")
    return b"".join(
        (
            protocol.message(b"P", name + protocol.cstring(sql) + b"\x00\x00"),
            protocol.message(b"B", name + name + b"\x00\x00\x00\x00\x00\x00"),
            protocol.message(b"E", name + protocol.pack_int32(0)),
            protocol.message(b"C", b"S" + name),
            protocol.message(b"C", b"P" + name),
            protocol.message(b"S") if sync else b"",
        )
    )
