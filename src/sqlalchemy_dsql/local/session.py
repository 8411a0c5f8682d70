"""One client connection: relays messages to its backend session and enforces DSQL's rules.

Every decision is made on the way in (client to backend). A refused statement is
not answered by the proxy itself: it is replaced by a *poison* message that makes
the backend fail at exactly that point (a syntax error for a query or a Parse, a
missing portal for an Execute). The backend then behaves as after any real
error (aborted transaction block, messages skipped until Sync), and the proxy
only swaps the backend's error text for DSQL's on the way out. Ordering,
pipelining and recovery are therefore PostgreSQL's own.

What DSQL allows in a transaction is decided by :mod:`.transaction`, which
knows nothing of sockets; this module only relays. Writes outside an explicit
transaction are wrapped by the proxy in a transaction of its own, so that a
statement that breaks the row limit is rolled back instead of committed: the
proxy must see the command tag before the commit. A simple-query ``BEGIN`` is
followed by an empty ``SELECT`` in the same query string, so that the backend
takes the transaction's snapshot at ``BEGIN``, as DSQL does, instead of at the
first statement, as PostgreSQL does.

The relay runs in protocol callbacks, not in tasks, so that a message costs no
extra trip through the event loop. A handler that must wait for something (a
``dsql-lint`` verdict, an async job, the end of in-flight work) returns an
awaitable instead of acting; the session stops reading from the client, awaits
it, and hands the same message to the handler again.
"""

from __future__ import annotations

import asyncio
import collections
import enum
import itertools
import re
import threading
import time
import zlib
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, fields

from . import jobs, protocol, rules
from .catalog import Catalog
from .limits import Limits
from .protocol import Backend, Frontend
from .rules import Kind, Rejection
from .transaction import ABORTED, CONFLICT, SCHEMA_CONFLICT, Transaction, TransactionState

_MARKER = "DSQL_LOCAL_REJECT_"
# Statements longer than this are parsed in a thread with a stack deep enough for the
# longest expression a 10 MiB message can hold (about 270 bytes of stack per term).
_LONG_SQL = 64 * 1024
_DEEP_STACK = 1024 * 1024 * 1024
_STACK_SIZE_LOCK = threading.Lock()
# The CONTEXT of errors raised by the helpers the emulator installs in the backend.
_OWN_CONTEXT = "PL/pgSQL function sys._"
# Serialization failure, deadlock, and a lock wait DSQL would not have made.
_CONFLICT_STATES = frozenset({"40001", "40P01", "55P03"})
# An intercepted reply that goes to the client unchanged.
_KEEP = Rejection("", "")
_CALL = re.compile(r"^\s*CALL\s+", re.IGNORECASE)
_AWS_IAM = re.compile(r"^\s*AWS\s+IAM\s+(GRANT|REVOKE)\b", re.IGNORECASE)
# IAM mappings do not exist here: any configured key may log in as any role.
_AWS_IAM_BACKEND_TEXT = "DO $$ BEGIN END $$"
# Appended to a simple-query BEGIN: a statement that takes the snapshot and returns nothing
# but a RowDescription and its tag. The newline ends a trailing "--" comment.
_SNAPSHOT_NOW = "\n;SELECT WHERE false"
# Backend messages relayed without a look.
_PASS_THROUGH = frozenset(
    {
        Backend.DATA_ROW,
        Backend.ROW_DESCRIPTION,
        Backend.PARSE_COMPLETE,
        Backend.BIND_COMPLETE,
        Backend.PARAMETER_DESCRIPTION,
        Backend.NO_DATA,
    }
)
# For each client request kind, the backend messages that complete it.
_REPLIES: dict[int, frozenset[int]] = {
    Frontend.PARSE: frozenset({Backend.PARSE_COMPLETE}),
    Frontend.BIND: frozenset({Backend.BIND_COMPLETE}),
    Frontend.DESCRIBE: frozenset({Backend.ROW_DESCRIPTION, Backend.NO_DATA}),
    Frontend.EXECUTE: frozenset(
        {Backend.COMMAND_COMPLETE, Backend.EMPTY_QUERY_RESPONSE, Backend.PORTAL_SUSPENDED}
    ),
    Frontend.CLOSE: frozenset({Backend.CLOSE_COMPLETE}),
    Frontend.SYNC: frozenset({Backend.READY_FOR_QUERY}),
    Frontend.QUERY: frozenset({Backend.READY_FOR_QUERY}),
    Frontend.FUNCTION_CALL: frozenset({Backend.READY_FOR_QUERY}),
}
_AWAITS_REPLY = frozenset(_REPLIES)
_SYNC_POINTS = frozenset({Frontend.SYNC, Frontend.QUERY, Frontend.FUNCTION_CALL})
# The replies to the proxy's own extended-protocol statement (see _internal), without Sync.
_INTERNAL_REPLIES = bytes(
    [
        Backend.PARSE_COMPLETE,
        Backend.BIND_COMPLETE,
        Backend.COMMAND_COMPLETE,
        Backend.CLOSE_COMPLETE,
        Backend.CLOSE_COMPLETE,
    ]
)

Waiter = Awaitable[object]


class Input(enum.Enum):
    """Whether the session is reading its client."""

    READING = "reading"
    #: Waiting for something before it handles the next message (which stays unconsumed).
    PAUSED = "paused"


class Batch(enum.Enum):
    """The extended-protocol messages since the last Sync."""

    RUNNING = "running"
    #: A statement in it was refused: the backend skips the rest up to the Sync.
    FAILED = "failed"


class Wrap(enum.Enum):
    """The proxy's own transaction around an autocommit write (see :meth:`Session._begin_wrap`)."""

    NONE = "none"
    OPEN = "open"
    #: It will be rolled back when the backend is ready: a statement in it failed.
    FAILED = "failed"


class Reply(enum.Enum):
    """What the relay does with backend messages."""

    RELAY = "relay"
    #: A statement broke a limit: its remaining replies are dropped up to ReadyForQuery.
    DROP_UNTIL_READY = "drop_until_ready"


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
        self._input = Input.READING
        # A message retried after a job wait must not wait again; what the wait found.
        self._job_waited = False
        self._job_outcome: bool | None = None
        # Long statements already parsed on a deep stack, about to be handled again.
        self._parsed_long: set[str] = set()
        self._tx = Transaction(host.limits, host.catalog, host.commit_failures)
        self._statements: dict[str, rules.Verdict] = {}
        self._portals: dict[str, rules.Verdict] = {}
        self._bind_sizes: dict[str, int] = {}
        self._batch: list[bytes] = []
        self._batch_state = Batch.RUNNING
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
        # Replies to the proxy's own messages, expected next: dropped, relayed (_KEEP),
        # or turned into an error.
        self._intercept: deque[tuple[int, Rejection | None]] = deque()
        # A stale transaction's backend must be aborted as soon as nothing is in flight.
        self._abort_when_idle = False
        self._wrap = Wrap.NONE
        self._reply = Reply.RELAY
        # Whether the backend is inside a transaction block, from the tags it sent.
        self._backend_in_block = False
        self._response_rows = 0

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
        if self._client is not None and self._input is Input.READING:
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
            # DSQL closes a connection that sends a message over its limit, without an error.
            for kind, start, end in protocol.split(incoming, self._host.limits.max_message_bytes):
                if self._input is Input.PAUSED or self._closed.is_set():
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
        if kind == Frontend.PARSE:
            name, offset = protocol.read_cstring(raw, 5)
            sql = protocol.read_cstring(raw, offset)[0]
            self._prepared_sql[name] = sql
            self._request_sql.append(sql)
        elif kind == Frontend.BIND:  # a statement parsed in an earlier request, or in this one
            offset = protocol.read_cstring(raw, 5)[1]
            sql = self._prepared_sql.get(protocol.read_cstring(raw, offset)[0], "")
            if sql not in self._request_sql:
                self._request_sql.append(sql)
        elif kind == Frontend.QUERY:
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
        self._input = Input.PAUSED
        assert self._client is not None
        self._client.pause_reading()

        async def resume() -> None:
            try:
                await waiter
            finally:
                self._input = Input.READING
                if not self._closed.is_set():
                    assert self._client is not None
                    self._client.resume_reading()
                    self._process_client()

        self._loop.create_task(resume())

    def _on_client_message(self, kind: int, raw: bytes) -> Waiter | None:
        if kind == Frontend.BIND:
            return self._on_bind(raw)
        if kind == Frontend.EXECUTE:
            return self._on_execute(raw)
        if kind == Frontend.SYNC:
            self._on_sync(raw)
        elif kind == Frontend.PARSE:
            return self._on_parse(raw)
        elif kind == Frontend.QUERY:
            return self._on_query(raw)
        elif kind == Frontend.FLUSH:
            self._batch.append(raw)
            self._flush()
        else:
            if kind == Frontend.CLOSE:
                name = protocol.read_cstring(raw, 6)[0]
                if raw[5:6] == b"S":
                    self._statements.pop(name, None)
                else:
                    self._portals.pop(name, None)
                    self._bind_sizes.pop(name, None)
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
        tx = self._tx
        refused_commit = _is_commit(verdict) and self._commit_refused()
        wrap = verdict.rejection is None and not tx.active and _needs_wrap(verdict)
        waiter = self._job_waiter(verdict) or (
            self._idle_waiter() if wrap or refused_commit else None
        )
        if waiter is not None:
            return waiter
        self._log(sql, verdict)
        if refused_commit:
            self._count_statements(1)
            self._intercept.append((Backend.COMMAND_COMPLETE, self._refuse_commit()))
            self._forward(Frontend.QUERY, protocol.message(b"Q", protocol.cstring("ROLLBACK")))
            self._flush()
            return None
        rejection = verdict.rejection
        text = sql
        snapshot = False
        if rejection is None:
            saved = tx.save()
            began = not tx.explicit
            size = len(raw)  # the query's text carries the data of all its statements
            for statement in verdict.statements:
                rejection = self._admit(statement, size)
                size = 0
                if rejection is not None:
                    tx.restore(saved)
                    break
            else:
                text = self._backend_text(verdict, sql)
                # Only with nothing in flight: the intercepted replies must come next.
                snapshot = (
                    began
                    and tx.explicit
                    and _is_begin(verdict)
                    and self._idle.is_set()
                    and not self._intercept
                )
            if not tx.explicit:
                self._tx.end(committed=rejection is None)
        self._count_statements(len(verdict.statements))
        if rejection is not None:
            text, wrap = self._poison(rejection), False
        if wrap:
            self._begin_wrap(sync=True)
        if snapshot:
            # BEGIN's tag goes to the client; the snapshot statement's replies do not.
            text = text.rstrip().rstrip(";") + _SNAPSHOT_NOW
            self._intercept.extend(
                [
                    (Backend.COMMAND_COMPLETE, _KEEP),
                    (Backend.ROW_DESCRIPTION, None),
                    (Backend.COMMAND_COMPLETE, None),
                ]
            )
        self._forward(Frontend.QUERY, protocol.message(b"Q", protocol.cstring(text)))
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
        if (
            rejection is None
            and self._tx.state is TransactionState.CONFLICTED
            and not _ends_transaction(verdict)
        ):
            # The backend transaction may be aborted already and would refuse the Parse itself.
            rejection = self._take_conflict()
        if rejection is not None:
            self._batch_state = Batch.FAILED
            raw = _parse_message(name, self._poison(rejection), b"\x00\x00")
        else:
            text = self._backend_text(verdict, sql)
            if text != sql:
                raw = _parse_message(name, text, raw[offset:])
        self._forward(Frontend.PARSE, raw)
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
            refusal = None
            if _writes(verdict):
                self._bind_sizes[portal] = len(raw)  # the data a write sends, for the size limit
                limit = self._host.limits.max_value_bytes
                if len(raw) > limit:  # only then can one value be over the limit
                    refusal = _oversized_value(raw, limit)
            if self._tx.state is TransactionState.CONFLICTED and not _ends_transaction(verdict):
                refusal = self._take_conflict()
            elif refusal is not None:
                self._count_rejection()
            if refusal is not None:
                self._batch_state = Batch.FAILED
                marker = protocol.cstring(self._poison(refusal))
                raw = protocol.message(b"B", protocol.cstring(portal) + marker + bytes(6))
        self._forward(Frontend.BIND, raw)
        return None

    def _on_execute(self, raw: bytes) -> Waiter | None:
        portal_name = protocol.read_cstring(raw, 5)[0]
        verdict = self._portals.get(portal_name)
        if verdict is None or self._batch_state is Batch.FAILED or not verdict.statements:
            self._count_statements(1)
            self._forward(Frontend.EXECUTE, raw)
            return None
        statement = verdict.statements[0]
        tx = self._tx
        wrap = statement.kind is Kind.WRITE and not tx.active and self._wrap is Wrap.NONE
        refused_commit = statement.kind is Kind.COMMIT and self._commit_refused()
        if (wrap or refused_commit) and not self._idle.is_set():
            # The proxy's own replies must be the next thing the backend answers.
            self._forward(Frontend.FLUSH, protocol.message(b"H"))
            self._flush()
            return self._idle.wait()
        self._count_statements(1)
        if refused_commit:
            outcome = self._refuse_commit()
            self._flush()
            self._intercept.extend(
                [
                    (Backend.PARSE_COMPLETE, None),
                    (Backend.BIND_COMPLETE, None),
                    (Backend.COMMAND_COMPLETE, outcome),
                    (Backend.CLOSE_COMPLETE, None),
                    (Backend.CLOSE_COMPLETE, None),
                ]
            )
            self._forward(Frontend.EXECUTE, _internal("ROLLBACK", sync=False))
            return None
        size = self._bind_sizes.pop(portal_name, 0) if statement.kind is Kind.WRITE else 0
        rejection = self._admit(statement, size)
        if rejection is not None:
            self._batch_state = Batch.FAILED
            portal = protocol.cstring(self._poison(rejection))
            raw = protocol.message(b"E", portal + protocol.pack_int32(0))
        elif wrap:
            self._begin_wrap(sync=False)
        self._forward(Frontend.EXECUTE, raw)
        return None

    def _on_sync(self, raw: bytes) -> None:
        if self._tx.state is TransactionState.IMPLICIT:
            self._tx.end(committed=self._batch_state is Batch.RUNNING)
        self._batch_state = Batch.RUNNING
        self._forward(Frontend.SYNC, raw)
        self._flush()
        if self._wrap is not Wrap.NONE:
            self._pause_until(self._idle.wait())  # nothing else may run inside the wrapper

    def _begin_wrap(self, *, sync: bool) -> None:
        """Open the proxy's own transaction around autocommit writes (nothing is in flight)."""
        self._flush()
        self._wrap = Wrap.OPEN
        if sync:
            self._expect_internal(_INTERNAL_REPLIES + bytes([Backend.READY_FOR_QUERY]))
        else:
            self._expect_internal(_INTERNAL_REPLIES)
        assert self._backend is not None
        self._backend.write(_internal("BEGIN", sync=sync))

    def _expect_internal(self, kinds: bytes) -> None:
        """Replies to come for the proxy's own messages: dropped."""
        self._intercept.extend((kind, None) for kind in kinds)

    def _flush(self) -> None:
        if self._batch and self._backend is not None:
            self._backend.write(b"".join(self._batch))
            self._batch.clear()

    # -- statement rules -------------------------------------------------

    def _verdict(self, sql: str) -> rules.Verdict | Waiter:
        if len(sql) > _LONG_SQL and sql not in self._parsed_long:
            return self._check_on_a_deep_stack(sql)
        self._parsed_long.discard(sql)
        verdict = rules.check(sql)
        if verdict.rejection is None:
            second = self._host.cached_second_opinion(sql, verdict)
            if second is False:
                return self._host.fetch_second_opinion(sql)
            if isinstance(second, Rejection):
                verdict = rules.Verdict(verdict.statements, second)
        return verdict

    async def _check_on_a_deep_stack(self, sql: str) -> None:
        """Parse a long statement in a thread of its own with a deep stack.

        PostgreSQL's parser recurses once per term of an expression, and a few
        tens of thousands of terms overflow a thread's usual 8 MiB stack, which
        would kill the whole emulator. The verdict lands in :func:`rules.check`'s
        cache, where the handler finds it when it runs the message again.
        """
        done: asyncio.Future[None] = self._loop.create_future()

        def parse() -> None:
            try:
                rules.check(sql)
            except BaseException as error:  # reported to the waiting session
                self._loop.call_soon_threadsafe(_settle_future, done, error)
            else:
                self._loop.call_soon_threadsafe(_settle_future, done, None)

        with _STACK_SIZE_LOCK:
            usual = threading.stack_size(_DEEP_STACK)
            try:
                threading.Thread(target=parse, name="dsql-local-parse", daemon=True).start()
            finally:
                threading.stack_size(usual)
        try:
            await done
        finally:
            self._parsed_long.add(sql)

    def _job_waiter(self, verdict: rules.Verdict) -> Waiter | None:
        """For ``sys.wait_for_job``: the job (or, for a parameter, every job) to wait for.

        The proxy waits before the statement reaches the backend, so that the
        statement's snapshot already shows the job's outcome.
        """
        if self._job_waited:
            self._job_waited = False
            return None
        for statement in verdict.statements:
            if statement.kind is Kind.WAIT_FOR_JOB:
                return self._wait_for_job(statement.job_id_literal)
        return None

    def _idle_waiter(self) -> Waiter | None:
        return None if self._idle.is_set() else self._idle.wait()

    async def _wait_for_job(self, job_id: str | None) -> None:
        self._job_outcome = await self._host.jobs.wait(job_id)
        self._job_waited = True

    def _backend_text(self, verdict: rules.Verdict, sql: str) -> str:
        """The text the backend runs for statements it cannot run as written."""
        outcome, self._job_outcome = self._job_outcome, None
        if len(verdict.statements) != 1:
            return sql
        statement = verdict.statements[0]
        if statement.async_job is not None:
            job = statement.async_job
            return jobs.submit_sql(job.job_type, job.object_name, job.table, job.backend_sql)
        if statement.kind is Kind.WAIT_FOR_JOB:
            if outcome is not None and _CALL.match(sql):
                # The job manager's answer, not the backend's: a transaction whose snapshot
                # predates the job's end would still see it running.
                return f"SELECT {str(outcome).lower()} AS succeeded"
            # The backend helper is a function (its OUT parameter names the column), so DSQL's
            # CALL form becomes a SELECT from it.
            return _CALL.sub("SELECT * FROM ", sql, count=1)
        if statement.kind is Kind.DDL and _AWS_IAM.match(sql):
            return _AWS_IAM_BACKEND_TEXT
        return sql

    def _log(self, sql: str, verdict: rules.Verdict) -> None:
        if verdict.rejection is not None:
            self._count_rejection()
        if self._host.log_statement is not None:
            self._host.log_statement(LoggedStatement(self.id, self.user, sql, verdict.rejection))

    def _admit(self, statement: rules.Statement, size: int) -> Rejection | None:
        """Check a statement against its transaction (``size``: the bytes that carried it)."""
        tx = self._tx
        began = not tx.active
        rejection = tx.admit(statement, time.monotonic())
        if rejection is None and statement.kind is Kind.WRITE:
            tx.add_bytes(size)
            if not tx.explicit:  # an explicit transaction's size is judged at COMMIT
                rejection = tx.size_refusal()
        if rejection is None:
            if began and tx.active:
                self._count_transaction()
            if statement.kind is Kind.ROLLBACK:
                self._abort_when_idle = False
            elif statement.kind is Kind.DDL:
                self._host.preempt(self, statement.relations)
            return None
        return self._count(rejection)

    def _commit_refused(self) -> bool:
        """Whether a COMMIT now would fail (nothing is changed by asking)."""
        return self._tx.commit_refusal(time.monotonic()) is not None

    def _refuse_commit(self) -> Rejection:
        """End a transaction that cannot commit; what its COMMIT answers instead.

        The proxy runs ROLLBACK in its place, so the session ends idle, as after
        any failed COMMIT. A transaction that had already failed answers as
        PostgreSQL does (the ROLLBACK tag, no error); otherwise the error says why.
        """
        self._abort_when_idle = False
        refusal = self._tx.refuse_commit(time.monotonic())
        if refusal is ABORTED:
            return _KEEP
        return self._count(refusal)

    def _count(self, rejection: Rejection) -> Rejection:
        """Count a refusal as a conflict or a rejection; return it."""
        if rejection is SCHEMA_CONFLICT:
            self.counters.conflicts += 1
            self._host.totals.conflicts += 1
        else:
            self._count_rejection()
        return rejection

    def _count_statements(self, number: int) -> None:
        self.counters.statements += number
        self._host.totals.statements += number

    def _count_rejection(self) -> None:
        self.counters.rejections += 1
        self._host.totals.rejections += 1

    def _count_transaction(self) -> None:
        self.counters.transactions += 1
        self._host.totals.transactions += 1

    def _poison(self, rejection: Rejection) -> str:
        number = next(self._poison_ids)
        self._rejections[number] = rejection
        return f"{_MARKER}{number}"

    # -- backend to client -------------------------------------------------

    def _backend_data(self, data: bytes) -> None:
        buffer = self._outgoing + data if self._outgoing else data
        out = bytearray()
        copied = last = 0
        # Only _on_backend_message changes what may be relayed without a look.
        plain = not self._intercept and self._reply is Reply.RELAY
        try:
            for kind, start, end in protocol.split(buffer):
                last = end
                if plain and kind in _PASS_THROUGH:
                    if kind != Backend.DATA_ROW:
                        self._settle(kind)
                    continue  # relayed untouched, in one piece with its neighbours
                out += buffer[copied:start]
                copied = end
                self._on_backend_message(kind, bytes(buffer[start:end]), out)
                plain = not self._intercept and self._reply is Reply.RELAY
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
                    out += _encode(rejection)
                    self._settle(Backend.ERROR_RESPONSE)
                    return
        if kind == Backend.READY_FOR_QUERY:
            self._on_ready(raw, out)
            return
        if self._reply is Reply.RELAY:
            if kind == Backend.ERROR_RESPONSE:
                raw = self._translate_error(raw)
                if self._wrap is Wrap.OPEN:
                    self._wrap = Wrap.FAILED
            elif kind == Backend.COMMAND_COMPLETE:
                raw = self._on_command_complete(raw)
            out += raw
        self._settle(kind)

    def _on_ready(self, raw: bytes, out: bytearray) -> None:
        status = raw[5:6]
        self._reply = Reply.RELAY
        if self._wrap is not Wrap.NONE:
            ending = "ROLLBACK" if self._wrap is Wrap.FAILED or status != b"T" else "COMMIT"
            self._wrap = Wrap.NONE
            self._expect_internal(_INTERNAL_REPLIES)
            assert self._backend is not None
            self._backend.write(_internal(ending))
            self._response_rows = 0
            return
        if self._tx.state is TransactionState.FAILED and status == b"T":
            raw = protocol.ready_for_query(b"E")
        if status == b"I":
            self._backend_in_block = False
            self._response_rows = 0
        out += raw
        self._settle(Backend.READY_FOR_QUERY)
        if self._abort_when_idle and self._idle.is_set() and not self._batch:
            self._abort_backend()

    def _settle(self, kind: int) -> None:
        """Retire the request that ``kind`` (a backend message) answers in full."""
        expect = self._expect
        if not expect:
            return
        head = expect[0]
        if kind == Backend.ERROR_RESPONSE:  # an error skips the rest of a batch, up to its Sync
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
        the client's next statement, or COMMIT, with the conflict.
        """
        if not self._tx.preempt(relations):
            return
        if self._idle.is_set() and self._input is Input.READING and not self._batch:
            self._abort_backend()
        else:
            self._abort_when_idle = True

    def _take_conflict(self) -> Rejection:
        """The schema conflict to answer with; the refused statement itself aborts the backend."""
        self._abort_when_idle = False
        return self._count(self._tx.take_conflict())

    def _abort_backend(self) -> None:
        self._abort_when_idle = False
        self._expect_internal(bytes([Backend.ERROR_RESPONSE, Backend.READY_FOR_QUERY]))
        assert self._backend is not None
        self._backend.write(protocol.message(b"Q", protocol.cstring(f"{_MARKER}0")))

    def _on_command_complete(self, raw: bytes) -> bytes:
        if raw[5] == 0x53:  # SELECT, SET, SHOW: nothing to count or track
            return raw
        tag = protocol.command_tag(raw[5:])
        if tag == "BEGIN":
            self._backend_in_block = True
            self._response_rows = 0
        elif tag in ("COMMIT", "ROLLBACK"):
            self._backend_in_block = False
            self._response_rows = 0
        changed = protocol.rows_modified(tag)
        if not changed:
            return raw
        self._response_rows += changed
        if self._response_rows <= self._host.limits.max_rows_per_transaction:
            return raw
        self._count_rejection()
        self._reply = Reply.DROP_UNTIL_READY
        if self._wrap is Wrap.OPEN:
            self._wrap = Wrap.FAILED
        elif self._backend_in_block:
            self._tx.fail()
        return protocol.error("54000", "transaction row limit exceeded")

    def _translate_error(self, raw: bytes) -> bytes:
        error_fields = protocol.parse_error_fields(raw[5:])
        text = error_fields.get("M", "")
        if _MARKER in text:
            digits = text.split(_MARKER, 1)[1]
            number = int("".join(itertools.takewhile(str.isdigit, digits)) or 0)
            rejection = self._rejections.pop(number, None)
            if rejection is not None:
                return _encode(rejection)
        if error_fields.get("C") in _CONFLICT_STATES:
            self.counters.conflicts += 1
            self._host.totals.conflicts += 1
            return _encode(CONFLICT)
        if error_fields.get("W", "").startswith(_OWN_CONTEXT):
            # Raised by the emulator's own catalog checks: DSQL's errors carry no CONTEXT.
            del error_fields["W"]
            return protocol.error_from_fields(error_fields)
        return raw


def _oversized_value(raw: bytes, limit: int) -> Rejection | None:
    """DSQL's refusal of a bound value stored over ``limit`` bytes, if the Bind ``raw`` has one.

    DSQL judges the stored, compressed size (a long run of one character passes), so
    the value is compressed first; zlib stands in for DSQL's lz4. The type is told
    from the value: text if it is UTF-8, bytea otherwise.
    """
    for value in protocol.bind_values(raw):
        if len(value) > limit and len(zlib.compress(value, 1)) > limit:
            try:
                value.decode()
                kind = "text"
            except UnicodeDecodeError:
                kind = "bytea"
            return Rejection(
                "54000", f"datatype limit greater than {limit} bytes not supported for {kind}"
            )
    return None


def _settle_future(future: asyncio.Future[None], error: BaseException | None) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)


def _encode(rejection: Rejection) -> bytes:
    """The ErrorResponse that carries ``rejection``."""
    return protocol.error(
        rejection.sqlstate, rejection.message, hint=rejection.hint, detail=rejection.detail
    )


def _is_commit(verdict: rules.Verdict) -> bool:
    return len(verdict.statements) == 1 and verdict.statements[0].kind is Kind.COMMIT


def _is_begin(verdict: rules.Verdict) -> bool:
    return len(verdict.statements) == 1 and verdict.statements[0].kind is Kind.BEGIN


def _writes(verdict: rules.Verdict) -> bool:
    return bool(verdict.statements) and verdict.statements[0].kind is Kind.WRITE


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
