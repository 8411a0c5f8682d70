"""The emulator's listener: TLS, the startup exchange and IAM-token authentication.

Like DSQL, the server speaks only TLS. A client may ask for it with an
SSLRequest or start TLS directly (PostgreSQL 17's ``sslnegotiation=direct``,
ALPN ``postgresql``); a plaintext startup is refused with a FATAL error. The
password must be a DSQL IAM token for this endpoint, verified with botocore.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import errno
import logging
import random
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, fields

from botocore.credentials import Credentials

from . import backend, protocol, rules
from .catalog import Catalog
from .jobs import JobRunner
from .limits import Limits
from .rules import Rejection
from .session import Counters, LoggedStatement, RoundTrip, Session, SessionHost
from .tokens import TokenRejected, TokenVerifier

_log = logging.getLogger("sqlalchemy_dsql.local")
_TLS_HANDSHAKE = 0x16
_GOODBYE_TIMEOUT = 1.0
_STARTUP_TIMEOUT = 30.0
# Startup packet keys that are not configuration parameters.
_CONNECTION_KEYS = frozenset({"user", "database", "options"})
# ParameterStatus values DSQL reports where the backend's would differ: pistachio's wire
# recording of a live cluster (testdata/dsql/dsql.yaml, 2026-10-10) has server_version 16.15.
_REPORTED_STATUS = {"server_version": "16.15"}
_ACCESS_DENIED = "unable to accept connection, access denied"
_SECOND_OPINION_KINDS = frozenset({rules.Kind.DDL, rules.Kind.ASYNC_DDL})


@dataclass(frozen=True, slots=True)
class ServerConfig:
    host: str
    port: int
    endpoint: str
    region: str
    credentials: tuple[Credentials, ...]
    limits: Limits
    latency: float
    authenticate: bool
    second_opinion: bool
    connect_only: frozenset[str] = frozenset()
    clock_offset: float = 0.0


class PortInUse(OSError):
    """The emulator's port is taken; the message says how to choose another."""


@dataclass
class Admissions:
    """What the token check saw: logins admitted and refused.

    Tokens signed in the same second for the same user and endpoint are equal
    (SigV4 dates have whole seconds), so counting distinct tokens would not
    tell a client that signs per connection from one that reuses a token.
    """

    tokens_accepted: int = 0
    tokens_refused: int = 0

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


class Server(SessionHost):
    """Accepts clients and runs a :class:`Session` for each."""

    def __init__(
        self,
        config: ServerConfig,
        address: backend.BackendAddress,
        tls: ssl.SSLContext,
        log_statement: Callable[[LoggedStatement], None] | None,
        log_round_trip: Callable[[RoundTrip], None] | None = None,
    ) -> None:
        self.config = config
        self.address = address
        self.catalog = Catalog()
        self.limits = config.limits
        self.latency = config.latency
        self.totals = Counters()
        self.admissions = Admissions()
        self.commit_failures: collections.deque[Rejection] = collections.deque()
        self.log_statement = log_statement
        self.log_round_trip = log_round_trip
        self.jobs = JobRunner(address, self.catalog)
        self.sessions: dict[int, Session] = {}
        self._tls = tls
        self._verifier = TokenVerifier.create(
            config.endpoint,
            config.region,
            config.credentials,
            connect_only=config.connect_only,
            clock_offset=config.clock_offset,
        )
        self._connection_tokens = float(config.limits.connection_burst)
        self._tokens_updated = time.monotonic()
        self._second_opinions: dict[str, rules.Rejection | None] = {}
        self._cancel_keys: dict[tuple[int, int], Session] = {}
        self._listener: socket.socket | None = None
        self._accept_task: asyncio.Task[None] | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self.port = config.port

    async def start(self) -> None:
        # Bound first: a port in use then fails before anything else has started.
        try:
            listener = socket.create_server((self.config.host, self.config.port), backlog=512)
        except OSError as error:
            if error.errno != errno.EADDRINUSE:
                raise
            raise PortInUse(
                error.errno,
                f"port {self.config.port} on {self.config.host} is in use (another dsql-local "
                f"or a PostgreSQL?): pick another port, or port 0 for any free one",
            ) from None
        await self.jobs.start()
        listener.setblocking(False)
        self._listener = listener
        self.port = listener.getsockname()[1]
        self._accept_task = asyncio.create_task(self._accept(listener), name="dsql-local-accept")

    async def stop(self) -> None:
        if self._accept_task is not None:
            self._accept_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._accept_task
        if self._listener is not None:
            self._listener.close()
        for session in list(self.sessions.values()):
            session.close()
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        await self.jobs.stop()

    def kill(self, session_id: int | None = None) -> int:
        """Close one session (or all of them) as DSQL does at the age limit. Returns how many."""
        targets = [
            session
            for session in self.sessions.values()
            if session_id is None or session.id == session_id
        ]
        for session in targets:
            session.close()
        return len(targets)

    def cached_second_opinion(
        self, sql: str, verdict: rules.Verdict
    ) -> rules.Rejection | bool | None:
        if not self.config.second_opinion:
            return None
        if not any(s.kind in _SECOND_OPINION_KINDS for s in verdict.statements):
            return None
        return self._second_opinions.get(sql, False)

    def preempt(self, source: Session, relations: frozenset[str]) -> None:
        for session in self.sessions.values():
            if session is not source:
                session.preempt(relations)

    async def fetch_second_opinion(self, sql: str) -> None:
        self._second_opinions[sql] = await asyncio.to_thread(rules.lint_second_opinion, sql)

    # -- connections -------------------------------------------------------

    async def _accept(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            client, _ = await loop.sock_accept(listener)
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            task = asyncio.create_task(self._handle(client))
            self._handlers.add(task)
            task.add_done_callback(self._handlers.discard)

    async def _handle(self, client: socket.socket) -> None:
        try:
            streams = await asyncio.wait_for(self._negotiate_tls(client), _STARTUP_TIMEOUT)
            if streams is None:
                return
            reader, writer = streams
            try:
                started = await asyncio.wait_for(self._startup(reader, writer), _STARTUP_TIMEOUT)
                if started is None:
                    return
                session, connection = started
                try:
                    await session.run(
                        writer.transport,  # type: ignore[arg-type]
                        _take_buffered(reader),
                        connection.writer.transport,  # type: ignore[arg-type]
                        _take_buffered(connection.reader),
                    )
                finally:
                    del self.sessions[session.id]
                    self._cancel_keys = {
                        k: v for k, v in self._cancel_keys.items() if v is not session
                    }
            finally:
                await _say_goodbye(writer)
        except (
            OSError,
            asyncio.IncompleteReadError,
            ssl.SSLError,
            asyncio.TimeoutError,
            protocol.ProtocolError,
        ) as exc:
            _log.debug("connection ended: %s", exc)
        finally:
            client.close()

    async def _negotiate_tls(
        self, client: socket.socket
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        loop = asyncio.get_running_loop()
        while True:
            first = await _peek(client)
            if first is None:
                return None
            if first == _TLS_HANDSHAKE:
                streams = await self._wrap(client)
                if streams[1].get_extra_info("ssl_object").selected_alpn_protocol() != "postgresql":
                    streams[1].close()
                    return None  # PostgreSQL requires ALPN for direct TLS
                return streams
            header = await _receive_exactly(client, 8)
            length, code = protocol.int32(header), protocol.int32(header, 4)
            if length == 8 and code == protocol.SSL_REQUEST:
                await loop.sock_sendall(client, b"S")
                return await self._wrap(client)
            if length == 8 and code == protocol.GSSENC_REQUEST:
                await loop.sock_sendall(client, b"N")
                continue
            if code == protocol.CANCEL_REQUEST and length == 16:
                await self._cancel(await _receive_exactly(client, 8))
                return None
            # DSQL's words: Amazon's connector tests assert "SSL is mandatory" and asyncpg's
            # ProtocolViolationError (08P01) for ssl=False and sslmode=disable.
            await loop.sock_sendall(client, protocol.error("08P01", "SSL is mandatory", fatal=True))
            return None

    async def _wrap(
        self, client: socket.socket
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=1 << 20)
        reader_protocol = asyncio.StreamReaderProtocol(reader)
        transport, _ = await loop.connect_accepted_socket(
            lambda: reader_protocol, client, ssl=self._tls
        )
        return reader, asyncio.StreamWriter(transport, reader_protocol, reader, loop)

    async def _cancel(self, key: bytes) -> None:
        session = self._cancel_keys.get((protocol.int32(key), protocol.int32(key, 4)))
        if session is not None:
            await backend.cancel(self.address, *session.backend_key)

    async def _startup(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> tuple[Session, backend.BackendConnection] | None:
        length = protocol.int32(await reader.readexactly(4))
        if not 8 <= length <= 10000:
            raise protocol.ProtocolError(f"invalid startup packet length {length}")
        body = await reader.readexactly(length - 4)
        version = protocol.int32(body)
        if version == protocol.CANCEL_REQUEST:
            await self._cancel(body[4:12])
            return None
        if version != protocol.PROTOCOL_3_0:
            await _fatal(
                writer, "08P01", f"unsupported frontend protocol {version >> 16}.{version & 0xFFFF}"
            )
            return None
        parameters = protocol.parse_startup_pairs(body[4:])
        user = parameters.get("user", "")
        database = parameters.get("database") or user
        if not user:
            await _fatal(writer, "28000", "no user name given in the startup packet")
            return None
        if database != backend.DATABASE:
            await _fatal(
                writer,
                "3D000",
                f'database "{database}" does not exist',
                hint="Aurora DSQL has a single database, postgres",
            )
            return None
        refusal = self._admission_refusal()
        if refusal is not None:
            await _fatal(writer, *refusal)
            return None
        if self.config.authenticate and not await self._check_token(reader, writer, user):
            return None
        # After authentication, as PostgreSQL applies startup settings: nothing about them
        # is told to a client that has not proved who it is.
        settings = _startup_settings(parameters)
        if isinstance(settings, Rejection):
            await _fatal(writer, settings.sqlstate, settings.message, settings.hint)
            return None
        try:
            connection = await backend.connect(
                self.address, user, settings, self.limits.lock_timeout_ms
            )
        except backend.RoleRefused:
            # DSQL's words for this are not recorded; its class is: Amazon's connector tests
            # expect asyncpg's ProtocolViolationError (08P01) for a user with no role
            # (test_integration_asyncpg.py::test_invalid_user_fails).
            await _fatal(writer, "08P01", _ACCESS_DENIED, hint=f'role "{user}" does not exist')
            return None
        except backend.BackendError as exc:
            await _fatal(writer, "28000", f"unable to accept connection: {exc}")
            return None
        session = Session(self, user, (connection.process_id, connection.secret))
        self.sessions[session.id] = session  # before the client can see it is connected
        secret = random.getrandbits(31)
        self._cancel_keys[(session.id, secret)] = session
        greeting = protocol.authentication(0)
        for name, value in {**connection.parameters, **_REPORTED_STATUS}.items():
            greeting += protocol.parameter_status(name, value)
        greeting += protocol.backend_key_data(session.id, secret)
        greeting += protocol.ready_for_query(b"I")
        writer.write(greeting)
        return session, connection

    def _admission_refusal(self) -> tuple[str, str] | None:
        """DSQL's cluster-wide connection quotas: a token bucket for the rate, and a cap."""
        limits = self.limits
        # DSQL's words for both quotas, from its quotas page (as quoted by agent-plugins
        # troubleshooting.md, which did not reproduce them on a cluster).
        if len(self.sessions) >= limits.max_connections:
            return "53300", "Unable to accept connection, too many open connections."
        now = time.monotonic()
        self._connection_tokens = min(
            float(limits.connection_burst),
            self._connection_tokens + (now - self._tokens_updated) * limits.connections_per_second,
        )
        self._tokens_updated = now
        if self._connection_tokens < 1:
            return "53400", "Unable to accept connection, rate exceeded."
        self._connection_tokens -= 1
        return None

    async def _check_token(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, user: str
    ) -> bool:
        writer.write(protocol.authentication(3))  # cleartext password, inside TLS
        await writer.drain()
        header = await reader.readexactly(5)
        if header[:1] != b"p":
            raise protocol.ProtocolError("expected a password message")
        token = (await reader.readexactly(protocol.int32(header, 1) - 4)).rstrip(b"\x00").decode()
        try:
            self._verifier.verify(user, token)
        except TokenRejected as exc:
            # DSQL's message for every token refusal; the reason goes in the HINT, where
            # DSQL puts "Signature expired: ..." (agent-plugins troubleshooting.md).
            self.admissions.tokens_refused += 1
            await _fatal(writer, "28P01", _ACCESS_DENIED, hint=str(exc))
            return False
        self.admissions.tokens_accepted += 1
        return True


def _startup_settings(parameters: dict[str, str]) -> dict[str, str] | Rejection:
    """The startup packet's configuration parameters, or DSQL's refusal of one.

    DSQL fails the connection with the refusal it gives ``SET`` for the same
    parameter (pistachio DSQL.md: ``default_transaction_read_only`` in the
    startup packet is FATAL 0A000 ``setting configuration parameter ... not
    supported``, as the SET is), so each one, whether sent as its own key or
    as ``-c name=value`` in ``options``, is judged by the SET rules.
    """
    settings = {k: v for k, v in parameters.items() if k not in _CONNECTION_KEYS}
    options = _parse_options(parameters.get("options", ""))
    if isinstance(options, Rejection):
        return options
    settings.update(options)
    # Protocol extensions (_pq_.*) are the protocol's business, not settings.
    settings = {k: v for k, v in settings.items() if not k.startswith("_pq_.")}
    for name, value in settings.items():
        refusal = rules.check(f"SET {_quote_identifier(name)} TO {_quote_literal(value)}").rejection
        if refusal is not None:
            return Rejection("0A000", refusal.message, refusal.hint)
    return settings


def _parse_options(options: str) -> dict[str, str] | Rejection:
    """``-c name=value`` and ``--name=value`` switches, with libpq's backslash escapes."""
    words: list[str] = []
    word: list[str] = []
    characters = iter(options)
    for character in characters:
        if character == "\\":
            word.append(next(characters, ""))
        elif character.isspace():
            if word:
                words.append("".join(word))
                word = []
        else:
            word.append(character)
    if word:
        words.append("".join(word))
    settings: dict[str, str] = {}
    switches = iter(words)
    for switch in switches:
        if switch == "-c":
            switch = "--" + next(switches, "")
        elif switch.startswith("-c"):
            switch = "--" + switch[2:]
        name, equals, value = switch[2:].partition("=")
        if not switch.startswith("--") or not name or not equals:
            # PostgreSQL's words for a switch it cannot use from a client.
            return Rejection("08P01", f"invalid command-line argument for server process: {switch}")
        settings[name.replace("-", "_")] = value
    return settings


def _quote_identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _quote_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


async def _fatal(
    writer: asyncio.StreamWriter, sqlstate: str, text: str, hint: str | None = None
) -> None:
    writer.write(protocol.error(sqlstate, text, hint=hint, fatal=True))
    with contextlib.suppress(OSError):
        await writer.drain()


async def _say_goodbye(writer: asyncio.StreamWriter) -> None:
    # A TLS connection closed gracefully stays open until the client answers TLS's
    # close_notify. A client whose event loop is gone never does, and its socket would
    # stay open until the emulator's loop is closed, which then waits for it for ever.
    writer.close()
    try:
        await asyncio.wait_for(writer.wait_closed(), _GOODBYE_TIMEOUT)
    finally:
        writer.transport.abort()


def _take_buffered(reader: asyncio.StreamReader) -> bytes:
    """Bytes a stream reader already holds, before its transport is handed to a session."""
    buffered: bytearray = reader._buffer  # type: ignore[attr-defined]
    data = bytes(buffered)
    buffered.clear()
    return data


async def _peek(client: socket.socket) -> int | None:
    """The first byte the client sent, left unread (None if it hung up)."""
    while True:
        try:
            data = client.recv(1, socket.MSG_PEEK)
        except BlockingIOError:
            await _readable(client)
            continue
        return data[0] if data else None


async def _readable(client: socket.socket) -> None:
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(client.fileno(), wake)
    try:
        await ready
    finally:
        loop.remove_reader(client.fileno())


async def _receive_exactly(client: socket.socket, size: int) -> bytes:
    loop = asyncio.get_running_loop()
    data = b""
    while len(data) < size:
        chunk = await loop.sock_recv(client, size - len(data))
        if not chunk:
            raise asyncio.IncompleteReadError(data, size)
        data += chunk
    return data
