"""``dsql-local``: an Aurora DSQL emulator on a real PostgreSQL 16.

:class:`LocalDSQL` starts an embedded PostgreSQL (through ``pgserver``) or uses
one you name, and puts a PostgreSQL wire-protocol proxy in front of it that
behaves like DSQL where this toolkit depends on it: TLS only, IAM-token
authentication verified with botocore, DSQL's statement and transaction rules,
its quotas, asynchronous index builds with ``sys.jobs``, and optimistic
concurrency errors in DSQL's words. See ``docs/emulator.md`` for what is
emulated and how faithfully.

The proxy runs on an event loop of its own in a background thread, so it works
the same from synchronous code, from any asyncio loop and from test fixtures::

    async with LocalDSQL() as dsql:
        conn = await asyncpg.connect(**dsql.connect_kwargs())

    dsql = LocalDSQL().start()      # blocking form
    ...
    dsql.stop()

This package imports nothing from the rest of ``sqlalchemy_dsql``: it is a
separate program that happens to ship in the same wheel.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import ssl
import tempfile
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from botocore.credentials import Credentials

from .backend import DATABASE, Backend, BackendAddress
from .client import client_environ, client_url
from .limits import Limits
from .rules import Rejection
from .server import Server, ServerConfig
from .session import Counters, LoggedStatement, RoundTrip
from .tokens import TEST_ACCESS_KEY_ID, TEST_SECRET_ACCESS_KEY, fixed_test_credentials

__all__ = [
    "DEFAULT_CLUSTER_ID",
    "DEFAULT_REGION",
    "TEST_ACCESS_KEY_ID",
    "TEST_SECRET_ACCESS_KEY",
    "Counters",
    "Limits",
    "LocalDSQL",
    "LoggedStatement",
    "RoundTrip",
]

DEFAULT_CLUSTER_ID = "localdsql0000000000000000a"
DEFAULT_REGION = "us-east-1"
_LIMITS = Limits()


class LocalDSQL:
    """A running DSQL emulator; start it with ``async with`` or :meth:`start`.

    Attributes once started: ``host`` (the address to dial), ``port``,
    ``endpoint`` (the DSQL-shaped host name tokens are signed for and the
    certificate covers), ``region``, ``ca_file`` (PEM of the throwaway CA) and
    ``credentials`` (the fixed test key pair, a botocore ``Credentials``).

    To show authentication failures: ``connect_only_credentials`` are extra
    key pairs whose (pretend) IAM policy allows ``dsql:DbConnect`` but not
    ``dsql:DbConnectAdmin``; ``clock_offset`` is how many seconds the
    cluster's clock runs ahead of this machine's. The certificate also covers
    ``*.dsql.<region>.on.aws``, so a client may name another cluster id and
    meet the token check rather than the TLS check.
    """

    def __init__(
        self,
        *,
        port: int = 0,
        cluster_id: str = DEFAULT_CLUSTER_ID,
        region: str = DEFAULT_REGION,
        backend_url: str | None = None,
        data_dir: str | Path | None = None,
        credentials: Sequence[Credentials] | None = None,
        connect_only_credentials: Sequence[Credentials] = (),
        clock_offset: float = 0.0,
        authenticate: bool = True,
        max_connection_age: float = _LIMITS.max_connection_age,
        max_transaction_age: float = _LIMITS.max_transaction_age,
        max_rows_per_transaction: int = _LIMITS.max_rows_per_transaction,
        max_connections: int = _LIMITS.max_connections,
        connections_per_second: float = _LIMITS.connections_per_second,
        connection_burst: int = _LIMITS.connection_burst,
        lock_timeout_ms: int = _LIMITS.lock_timeout_ms,
        max_transaction_bytes: int = _LIMITS.max_transaction_bytes,
        max_value_bytes: int = _LIMITS.max_value_bytes,
        max_message_bytes: int = _LIMITS.max_message_bytes,
        latency_ms: float = 0.0,
        second_opinion: bool = True,
        statement_log: bool | Callable[[LoggedStatement], None] = False,
        round_trip_log: bool | Callable[[RoundTrip], None] = False,
    ) -> None:
        if latency_ms < 0:
            raise ValueError(f"latency_ms must be >= 0, got {latency_ms}")
        # Validated before anything is started: a bad limit fails here, not mid-test.
        self._limits = Limits(
            max_connection_age=max_connection_age,
            max_transaction_age=max_transaction_age,
            max_rows_per_transaction=max_rows_per_transaction,
            max_connections=max_connections,
            connections_per_second=connections_per_second,
            connection_burst=connection_burst,
            lock_timeout_ms=lock_timeout_ms,
            max_transaction_bytes=max_transaction_bytes,
            max_value_bytes=max_value_bytes,
            max_message_bytes=max_message_bytes,
        )
        self.host = "127.0.0.1"
        self.region = region
        self.endpoint = f"{cluster_id}.dsql.{region}.on.aws"
        self.credentials = fixed_test_credentials() if credentials is None else credentials[0]
        self._all_credentials = tuple(credentials or (self.credentials,)) + tuple(
            connect_only_credentials
        )
        self._connect_only = frozenset(c.access_key for c in connect_only_credentials)
        self._clock_offset = clock_offset
        self._requested_port = port
        self._backend = Backend(
            url=backend_url, data_dir=Path(data_dir) if data_dir is not None else None
        )
        self._latency = latency_ms / 1000.0
        self._authenticate = authenticate
        self._second_opinion = second_opinion
        # True keeps the log here for tests to read; a callable receives each entry.
        self.statement_log: collections.deque[LoggedStatement] | None = None
        self._log_statement: Callable[[LoggedStatement], None] | None = None
        if callable(statement_log):
            self._log_statement = statement_log
        elif statement_log:
            self.statement_log = collections.deque(maxlen=100_000)
            self._log_statement = self.statement_log.append
        # The same for every request a client waits on, with its protocol messages.
        self.round_trip_log: collections.deque[RoundTrip] | None = None
        self._log_round_trip: Callable[[RoundTrip], None] | None = None
        if callable(round_trip_log):
            self._log_round_trip = round_trip_log
        elif round_trip_log:
            self.round_trip_log = collections.deque(maxlen=100_000)
            self._log_round_trip = self.round_trip_log.append
        self._workdir: tempfile.TemporaryDirectory[str] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: Server | None = None
        self._token_client: Any = None
        self.ca_file = ""

    def __repr__(self) -> str:
        state = f"port={self.port}" if self._server else "stopped"
        return f"<LocalDSQL {self.endpoint} {state}>"

    # -- lifecycle -------------------------------------------------------

    def start(self) -> LocalDSQL:
        """Start the backend and the proxy; blocks until clients can connect."""
        if self._server is not None:
            raise RuntimeError("this LocalDSQL is already running")
        self._workdir = tempfile.TemporaryDirectory(prefix="dsql-local-tls-")
        try:
            tls = self._make_tls(Path(self._workdir.name))
            self._backend.start()
            self._loop = _new_loop()
            self._thread = threading.Thread(
                target=self._loop.run_forever, name="dsql-local", daemon=True
            )
            self._thread.start()
            config = ServerConfig(
                host=self.host,
                port=self._requested_port,
                endpoint=self.endpoint,
                region=self.region,
                credentials=self._all_credentials,
                limits=self._limits,
                latency=self._latency,
                authenticate=self._authenticate,
                second_opinion=self._second_opinion,
                connect_only=self._connect_only,
                clock_offset=self._clock_offset,
            )
            self._run(self._backend.install())
            server = Server(
                config, self._backend.address, tls, self._log_statement, self._log_round_trip
            )
            self._run(server.start())
            self._server = server
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Close every session, stop the proxy and the embedded backend. Idempotent."""
        server, self._server = self._server, None
        if server is not None and self._loop is not None:
            self._run(server.stop())
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            if self._thread is not None:
                self._thread.join(10)
            self._loop.close()
            self._loop = self._thread = None
        self._backend.stop()
        if self._workdir is not None:
            self._workdir.cleanup()
            self._workdir = None

    async def __aenter__(self) -> LocalDSQL:
        return await asyncio.to_thread(self.start)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await asyncio.to_thread(self.stop)

    def __enter__(self) -> LocalDSQL:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- what clients need -----------------------------------------------

    @property
    def port(self) -> int:
        return self._require_server().port

    @property
    def backend_url(self) -> str:
        """A libpq URL of the backend PostgreSQL itself, bypassing the proxy (for benchmarks)."""
        address = self._backend.address
        if address.host.startswith("/"):
            return (
                f"postgresql://{address.user}@/{DATABASE}?host={address.host}&port={address.port}"
            )
        password = f":{address.password}" if address.password else ""
        return f"postgresql://{address.user}{password}@{address.host}:{address.port}/{DATABASE}"

    def token(self, user: str = "admin", expires_in: int = 900) -> str:
        """A DSQL IAM token for ``user``, made by botocore with the test credentials."""
        if self._token_client is None:
            import botocore.session

            session = botocore.session.get_session()
            session.set_credentials(
                self.credentials.access_key, self.credentials.secret_key, self.credentials.token
            )
            self._token_client = session.create_client("dsql", region_name=self.region)
        if user == "admin":
            return str(
                self._token_client.generate_db_connect_admin_auth_token(
                    self.endpoint, self.region, expires_in
                )
            )
        return str(
            self._token_client.generate_db_connect_auth_token(
                self.endpoint, self.region, expires_in
            )
        )

    def ssl_context(self) -> ssl.SSLContext:
        """A verify-full client context trusting only this emulator's CA."""
        context = ssl.create_default_context(cafile=self.ca_file)
        context.check_hostname = True
        return context

    def connect_kwargs(self, user: str = "admin") -> dict[str, Any]:
        """Keyword arguments for ``asyncpg.connect`` with a fresh token and verify-full TLS."""
        return {
            "host": self.host,
            "port": self.port,
            "user": user,
            "password": self.token(user),
            "database": DATABASE,
            "ssl": self.ssl_context(),
        }

    def conninfo(self, user: str = "admin") -> str:
        """A libpq connection string (psycopg, psql) with a fresh token and verify-full TLS."""
        return (
            f"host={self.host} port={self.port} dbname={DATABASE} user={user} "
            f"password={self.token(user)} sslmode=verify-full sslrootcert={self.ca_file}"
        )

    def environ(self) -> dict[str, str]:
        """The environment a client needs, and exactly what ``sqlalchemy_dsql`` reads.

        The fixed test key pair and Region for the AWS credential chain, and
        libpq's variables for where to dial and which CA to trust: with these,
        ``create_async_engine("auroradsql+asyncpg://admin@<endpoint>/postgres")``
        reaches this emulator (``dsql-local`` prints them as ``export`` lines).
        """
        return client_environ(
            credentials=self.credentials,
            region=self.region,
            host=self.host,
            port=self.port,
            ca_file=self.ca_file,
        )

    def url(self, driver: str = "asyncpg", user: str = "admin") -> str:
        """A SQLAlchemy URL for this emulator, as plain ``create_(async_)engine`` takes it.

        ``auroradsql+<driver>://<user>@<endpoint>:<port>/postgres`` with the
        address to dial and the CA to trust as parameters; no secret is in
        it. The ``auroradsql`` dialect signs a token per connection with the
        credentials of the usual AWS chain, which must hold the test key pair
        (``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` from
        :meth:`environ`; the pytest plugin sets them while its emulator runs).
        """
        return client_url(
            endpoint=self.endpoint,
            host=self.host,
            port=self.port,
            ca_file=self.ca_file,
            driver=driver,
            user=user,
        )

    # -- observing and breaking things --------------------------------------

    def counters(self) -> dict[int, dict[str, int]]:
        """Per open session: round trips, statements, transactions, rejections, conflicts."""
        server = self._require_server()
        return {sid: session.counters.as_dict() for sid, session in list(server.sessions.items())}

    def totals(self) -> dict[str, int]:
        """The same counters summed over every session since start (closed ones included)."""
        return self._require_server().totals.as_dict()

    def admissions(self) -> dict[str, int]:
        """Logins since start: ``tokens_accepted`` and ``tokens_refused``."""
        return self._require_server().admissions.as_dict()

    def session_ids(self) -> list[int]:
        return list(self._require_server().sessions)

    def kill(self, session_id: int | None = None) -> int:
        """Close one session, or all when ``session_id`` is None, as DSQL closes them."""
        server = self._require_server()
        return int(self._call(server.kill, session_id))

    def fail_next_commits(self, sqlstate: str, message: str, times: int = 1) -> None:
        """Make the next ``times`` COMMITs of open transactions fail with this error.

        The transaction is rolled back, as after any failed COMMIT. For tests
        of retry logic: ``fail_next_commits("40001", "... (OC001)")``.
        """
        if times < 1 or len(sqlstate) != 5:
            raise ValueError("times must be >= 1 and sqlstate five characters")
        server = self._require_server()
        rejection = Rejection(sqlstate, message)
        self._call(server.commit_failures.extend, [rejection] * times)

    def set_latency(self, latency_ms: float) -> None:
        """Change the injected one-way delay for every session, open or new."""
        if latency_ms < 0:
            raise ValueError(f"latency_ms must be >= 0, got {latency_ms}")
        server = self._require_server()
        self._call(setattr, server, "latency", latency_ms / 1000.0)

    def truncate(self) -> list[str]:
        """Empty every user table, directly on the backend; returns the tables it emptied.

        For tests that need empty tables between them (``sqlalchemy_dsql.testing``
        calls it after each test): DSQL has no TRUNCATE, and deleting through the
        proxy is bound by the 3,000-row limit. Tables outside ``sys`` and
        PostgreSQL's own schemas are emptied in one ``TRUNCATE ... RESTART
        IDENTITY``, so identity columns start again at 1; tables already empty, with
        their sequences unused, are left alone. A session left idle in a
        transaction would make TRUNCATE wait for it, so it is ended first, and its
        client sees its connection closed.
        """
        self._require_server()
        return list(self._run(_truncate_user_tables(self._backend.address)))

    # -- internals -------------------------------------------------------

    def _make_tls(self, directory: Path) -> ssl.SSLContext:
        import trustme

        authority = trustme.CA(organization_name="dsql-local throwaway CA")
        # The wildcard lets a client reach the emulator under another cluster id of the
        # region, so that a token signed for the wrong cluster meets the token check.
        certificate = authority.issue_cert(
            "localhost", "127.0.0.1", self.endpoint, f"*.dsql.{self.region}.on.aws"
        )
        ca_path = directory / "dsql-local-ca.pem"
        authority.cert_pem.write_to_path(str(ca_path))
        self.ca_file = str(ca_path)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.set_alpn_protocols(["postgresql"])
        certificate.configure_cert(context)
        return context

    def _require_server(self) -> Server:
        if self._server is None:
            raise RuntimeError("LocalDSQL is not running: use 'async with LocalDSQL()' or .start()")
        return self._server

    def _run(self, coroutine: Any) -> Any:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def _call(self, function: Any, *args: Any) -> Any:
        assert self._loop is not None
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()

        def call() -> None:
            try:
                future.set_result(function(*args))
            except BaseException as exc:
                future.set_exception(exc)

        self._loop.call_soon_threadsafe(call)
        return future.result()


# User tables, and whether one of their sequences (identity, serial) has handed out a value.
_USER_TABLES_SQL = r"""
SELECT format('%I.%I', n.nspname, c.relname) AS name,
       EXISTS (
         SELECT FROM pg_depend d JOIN pg_class s ON s.oid = d.objid
         WHERE d.classid = 'pg_class'::regclass AND d.refobjid = c.oid
           AND CASE WHEN s.relkind = 'S' THEN pg_sequence_last_value(s.oid) END IS NOT NULL
       ) AS sequence_used
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND c.relpersistence = 'p'
  AND n.nspname NOT IN ('sys', 'information_schema') AND n.nspname NOT LIKE 'pg\_%'
ORDER BY 1
"""
_END_IDLE_TRANSACTIONS_SQL = """
SELECT pg_terminate_backend(pid) FROM pg_stat_activity
WHERE datname = current_database() AND pid <> pg_backend_pid()
  AND state IN ('idle in transaction', 'idle in transaction (aborted)')
"""


async def _truncate_user_tables(address: BackendAddress) -> list[str]:
    import asyncpg

    connection = await asyncpg.connect(**address.asyncpg_kwargs())
    try:
        await connection.execute(_END_IDLE_TRANSACTIONS_SQL)
        tables = await connection.fetch(_USER_TABLES_SQL)
        if not tables:
            return []
        # TRUNCATE costs milliseconds per table even when it is empty; asking first is cheaper.
        nonempty = " UNION ALL ".join(
            f"SELECT {number} WHERE EXISTS (SELECT FROM {table['name']})"
            for number, table in enumerate(tables)
        )
        with_rows = {record[0] for record in await connection.fetch(nonempty)}
        dirty = [
            table["name"]
            for number, table in enumerate(tables)
            if number in with_rows or table["sequence_used"]
        ]
        if dirty:
            # A statement still running on one of the tables is a bug in the caller;
            # fail after a while rather than hang.
            await connection.execute("SET lock_timeout = '10s'")
            await connection.execute(f"TRUNCATE {', '.join(dirty)} RESTART IDENTITY")
        return dirty
    finally:
        await connection.close()


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()
