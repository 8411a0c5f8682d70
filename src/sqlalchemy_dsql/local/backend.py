"""The real PostgreSQL behind the emulator: an embedded ``pgserver`` or a server given by URL.

Every client session gets its own backend connection, opened as the backend's
superuser and then narrowed with ``SET SESSION AUTHORIZATION`` to the role the
client logged in as, so the emulator needs no per-role passwords. Backend
sessions run at REPEATABLE READ, DSQL's only isolation level.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
import shutil
import tempfile
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

from . import protocol

DATABASE = "postgres"
ISOLATION = "repeatable read"

# Created once per backend. ``sys`` mirrors DSQL's job catalogue; the functions
# are internal helpers the proxy rewrites async DDL and job waits into. The
# rest makes the backend answer as DSQL does where only the catalog can tell
# (see _DSQL_SHAPES_SQL).
_SETUP_SQL = """
DO $$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'admin') THEN
    CREATE ROLE admin LOGIN CREATEROLE;
  END IF;
END $$;
ALTER DATABASE postgres OWNER TO admin;
ALTER SCHEMA public OWNER TO admin;
CREATE SCHEMA IF NOT EXISTS sys;
GRANT USAGE ON SCHEMA sys TO PUBLIC;
CREATE TABLE IF NOT EXISTS sys._jobs (
  job_id text PRIMARY KEY,
  status text NOT NULL,
  details text,
  job_type text NOT NULL,
  object_name text NOT NULL,
  table_name text NOT NULL,
  backend_sql text NOT NULL,
  start_time timestamptz NOT NULL DEFAULT now(),
  update_time timestamptz NOT NULL DEFAULT now()
);
-- The submitting session's search_path: the job resolves the table's name as it would have.
ALTER TABLE sys._jobs ADD COLUMN IF NOT EXISTS search_path text NOT NULL DEFAULT 'public';
-- The table as the submitting session resolved it, for the per-table index limit.
ALTER TABLE sys._jobs ADD COLUMN IF NOT EXISTS table_oid oid;
DROP FUNCTION IF EXISTS sys._submit_job(text, text, text, text);
DROP FUNCTION IF EXISTS sys._submit_job(text, text, text, text, text);
-- DSQL's columns (a live cluster, 2026-09-23): the object as a catalog address, its name
-- schema-qualified, and no update_time until the job has moved on from submitted.
DROP VIEW IF EXISTS sys.jobs;
CREATE VIEW sys.jobs AS
  SELECT j.job_id, j.status, j.details, j.job_type,
         CASE j.job_type WHEN 'INDEX_BUILD' THEN 'pg_class'::regclass::oid
                         ELSE 'pg_constraint'::regclass::oid END AS class_id,
         CASE j.job_type
           WHEN 'INDEX_BUILD' THEN (SELECT c.oid FROM pg_class c
                                    WHERE c.relname = j.object_name
                                      AND c.relnamespace = t.relnamespace)
           ELSE (SELECT k.oid FROM pg_constraint k
                 WHERE k.conrelid = j.table_oid AND k.conname = j.object_name)
         END AS object_id,
         CASE WHEN j.job_type = 'INDEX_BUILD' AND n.nspname IS NOT NULL
              THEN n.nspname || '.' || j.object_name ELSE j.object_name END AS object_name,
         j.start_time,
         CASE WHEN j.status = 'submitted' THEN NULL ELSE j.update_time END AS update_time
  FROM sys._jobs j
  LEFT JOIN pg_class t ON t.oid = j.table_oid
  LEFT JOIN pg_namespace n ON n.oid = t.relnamespace;
GRANT SELECT ON sys.jobs TO PUBLIC;
CREATE OR REPLACE FUNCTION sys._submit_job(job_type text, object_name text, table_name text,
                                           backend_sql text, search_path text, table_oid oid)
RETURNS text LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
DECLARE
  -- 128 random bits as DSQL writes job ids: 26 characters of lowercase base32.
  raw bytea := uuid_send(gen_random_uuid());
  new_id text := (
    SELECT string_agg(substr('abcdefghijklmnopqrstuvwxyz234567', 1 + (
             SELECT sum(get_bit(raw, i * 5 + b) << b)::integer
             FROM generate_series(0, 4) b WHERE i * 5 + b < 128), 1), '' ORDER BY i)
    FROM generate_series(0, 25) i);
BEGIN
  -- DSQL counts an index against the table's 24 from submission on, built or not.
  IF job_type = 'INDEX_BUILD' AND table_oid IS NOT NULL
     AND (SELECT count(*) FROM pg_index i WHERE i.indrelid = table_oid)
         + (SELECT count(*) FROM sys._jobs j
            WHERE j.table_oid = _submit_job.table_oid AND j.job_type = 'INDEX_BUILD'
              AND j.status IN ('submitted', 'processing')) >= 24 THEN
    RAISE EXCEPTION 'more than 24 indexes per table are not allowed' USING ERRCODE = '54000';
  END IF;
  INSERT INTO sys._jobs (job_id, status, job_type, object_name, table_name, backend_sql,
                         search_path, table_oid)
  VALUES (new_id, 'submitted', job_type, object_name, table_name, backend_sql, search_path,
          table_oid);
  PERFORM pg_notify('dsql_local_jobs', new_id);
  RETURN new_id;
END $$;
-- The OUT parameter names the column that CALL sys.wait_for_job(...) answers with on
-- DSQL (succeeded), once the proxy sends the CALL as SELECT * FROM sys.wait_for_job(...).
DO $$ BEGIN
  IF EXISTS (SELECT FROM pg_proc WHERE oid = 'sys.wait_for_job(text)'::regprocedure
             AND proargnames IS DISTINCT FROM ARRAY['job_id', 'succeeded']) THEN
    DROP FUNCTION sys.wait_for_job(text);
  END IF;
EXCEPTION WHEN undefined_function THEN NULL;
END $$;
CREATE OR REPLACE FUNCTION sys.wait_for_job(job_id text, OUT succeeded boolean)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
DECLARE job_status text;
BEGIN
  SELECT j.status INTO job_status FROM sys._jobs j WHERE j.job_id = wait_for_job.job_id;
  IF job_status IS NULL THEN
    RAISE EXCEPTION 'job % does not exist', job_id USING ERRCODE = '42704';
  END IF;
  succeeded := job_status = 'completed';
END $$;
GRANT EXECUTE ON FUNCTION sys.wait_for_job(text) TO PUBLIC;
GRANT EXECUTE ON FUNCTION sys._submit_job(text, text, text, text, text, oid) TO PUBLIC;
"""

# What DSQL's catalog shows and the limits only the catalog can check, installed in
# the backend so that every path (simple and extended protocol, the job runner) sees
# them. Sources: winebarrel/pistachio DSQL.md and testdata/dsql/dsql.yaml (live
# cluster, 2026-10-10); awslabs/agent-plugins dsql references troubleshooting.md and
# limits-and-error-codes.md (observed 2026-10-01).
_DSQL_SHAPES_SQL = r"""
-- DSQL reports its major version; a live cluster answered 1 (pistachio, 2026-10-10).
CREATE OR REPLACE FUNCTION sys.dsql_major_version() RETURNS integer
LANGUAGE sql IMMUTABLE AS $$ SELECT 1 $$;
GRANT EXECUTE ON FUNCTION sys.dsql_major_version() TO PUBLIC;

-- DSQL's version() names only the major version ("PostgreSQL 16", a live cluster's answer
-- on 2026-09-23); like the printers below, the replacement works because it is inlined.
CREATE OR REPLACE FUNCTION pg_catalog.version() RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE AS $$ SELECT 'PostgreSQL 16'::text $$;

-- PostgreSQL's own definition printers, kept under private names: the public ones
-- are replaced to print what DSQL's catalog prints (access method btree_index, and a
-- primary key INCLUDE-ing every other column). A built-in function's C code runs
-- whatever pg_proc says, so the replacements only take effect because the planner
-- inlines them: they must stay single-SELECT SQL functions without STRICT or SET.
CREATE OR REPLACE FUNCTION sys._pg_indexdef(oid, integer, boolean) RETURNS text
LANGUAGE internal STABLE STRICT PARALLEL SAFE AS 'pg_get_indexdef_ext';
CREATE OR REPLACE FUNCTION sys._pg_constraintdef(oid, boolean) RETURNS text
LANGUAGE internal STABLE STRICT PARALLEL SAFE AS 'pg_get_constraintdef_ext';
-- The columns DSQL adds to a primary key's INCLUDE: every column not already in its index.
-- No SET search_path on these: PostgreSQL qualifies every name the caller's path does
-- not show, so they must run under the caller's path (catalog names are qualified).
CREATE OR REPLACE FUNCTION sys._pkey_include(index_oid oid) RETURNS text
LANGUAGE sql STABLE AS $$
  SELECT pg_catalog.string_agg(pg_catalog.quote_ident(a.attname), ', ' ORDER BY a.attnum)
  FROM pg_catalog.pg_index i JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid
  WHERE i.indexrelid = index_oid AND i.indisprimary
    AND a.attnum > 0 AND NOT a.attisdropped AND a.attnum <> ALL (i.indkey::int2[])
$$;
CREATE OR REPLACE FUNCTION sys._dsql_indexdef(index_oid oid, pretty boolean) RETURNS text
LANGUAGE sql STABLE AS $$
  WITH d AS (
    SELECT pg_catalog.replace(sys._pg_indexdef(index_oid, 0, pretty),
                   ' USING btree (', ' USING btree_index (') AS def,
           sys._pkey_include(index_oid) AS extra
  )
  SELECT CASE
    WHEN extra IS NULL THEN def
    WHEN def ~ '\) INCLUDE \('
      THEN pg_catalog.regexp_replace(def, '\) INCLUDE \((.*)\)$',
                                     ') INCLUDE (\1, ' || extra || ')')
    ELSE pg_catalog.regexp_replace(def, '\)$', ') INCLUDE (' || extra || ')')
  END FROM d
$$;
CREATE OR REPLACE FUNCTION pg_catalog.pg_get_indexdef(oid) RETURNS text
LANGUAGE sql STABLE CALLED ON NULL INPUT PARALLEL SAFE AS $$
  SELECT sys._dsql_indexdef($1, false)
$$;
CREATE OR REPLACE FUNCTION pg_catalog.pg_get_indexdef(oid, integer, boolean) RETURNS text
LANGUAGE sql STABLE CALLED ON NULL INPUT PARALLEL SAFE AS $$
  SELECT CASE WHEN $2 = 0 THEN sys._dsql_indexdef($1, $3) ELSE sys._pg_indexdef($1, $2, $3) END
$$;
CREATE OR REPLACE FUNCTION sys._dsql_constraintdef(constraint_oid oid, pretty boolean) RETURNS text
LANGUAGE sql STABLE AS $$
  WITH d AS (
    SELECT sys._pg_constraintdef(constraint_oid, pretty) AS def,
           (SELECT sys._pkey_include(c.conindid) FROM pg_catalog.pg_constraint c
            WHERE c.oid = constraint_oid AND c.contype = 'p') AS extra
  )
  SELECT CASE
    WHEN extra IS NULL THEN def
    WHEN def ~ '^PRIMARY KEY \([^)]*\) INCLUDE \('
      THEN pg_catalog.regexp_replace(def, '^(PRIMARY KEY \([^)]*\) INCLUDE \([^)]*)\)',
                                     '\1, ' || extra || ')')
    ELSE pg_catalog.regexp_replace(def, '^(PRIMARY KEY \([^)]*\))',
                                   '\1 INCLUDE (' || extra || ')')
  END FROM d
$$;
CREATE OR REPLACE FUNCTION pg_catalog.pg_get_constraintdef(oid) RETURNS text
LANGUAGE sql STABLE CALLED ON NULL INPUT PARALLEL SAFE AS $$
  SELECT sys._dsql_constraintdef($1, false)
$$;
CREATE OR REPLACE FUNCTION pg_catalog.pg_get_constraintdef(oid, boolean) RETURNS text
LANGUAGE sql STABLE CALLED ON NULL INPUT PARALLEL SAFE AS $$
  SELECT sys._dsql_constraintdef($1, $2)
$$;

-- Tables created with a primary key: DSQL never lets one be dropped.
CREATE TABLE IF NOT EXISTS sys._keyed (relid oid PRIMARY KEY);
CREATE OR REPLACE FUNCTION sys._ddl_limits() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
DECLARE
  command record;
  target oid;
  keyed boolean;
  columns integer;
  bare record;
BEGIN
  FOR command IN SELECT * FROM pg_event_trigger_ddl_commands() LOOP
    IF command.command_tag = 'CREATE SCHEMA' THEN
      IF (SELECT count(*) FROM pg_namespace
          WHERE nspname NOT IN ('public', 'sys', 'information_schema')
            AND nspname NOT LIKE 'pg\_%') > 10 THEN
        RAISE EXCEPTION 'more than 10 schemas not allowed' USING ERRCODE = '54000';
      END IF;
      CONTINUE;
    END IF;
    IF command.command_tag IN ('CREATE VIEW', 'CREATE SEQUENCE') THEN
      -- Documented quotas (AWS quotas page), not seen on a cluster.
      IF (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE c.relkind = CASE command.command_tag WHEN 'CREATE VIEW' THEN 'v' ELSE 'S' END
            AND n.nspname NOT IN ('sys', 'information_schema')
            AND n.nspname NOT LIKE 'pg\_%') > 5000 THEN
        IF command.command_tag = 'CREATE VIEW' THEN
          RAISE EXCEPTION 'creating more than 5000 views not allowed' USING ERRCODE = '54000';
        END IF;
        RAISE EXCEPTION 'creating more than 5000 sequences is not allowed'
          USING ERRCODE = '54000';
      END IF;
      CONTINUE;
    END IF;
    IF command.command_tag = 'CREATE STATISTICS' THEN
      IF (SELECT count(*) FROM pg_statistic_ext
          WHERE stxrelid = (SELECT stxrelid FROM pg_statistic_ext WHERE oid = command.objid))
         > 5 THEN
        RAISE EXCEPTION 'more than 5 extended statistics per table are not allowed'
          USING ERRCODE = '54000';
      END IF;
      CONTINUE;
    END IF;
    IF command.command_tag = 'CREATE INDEX' THEN
      SELECT indrelid INTO target FROM pg_index WHERE indexrelid = command.objid;
    ELSIF command.object_type = 'table'
          AND command.command_tag IN ('CREATE TABLE', 'ALTER TABLE') THEN
      target := command.objid;
    ELSE
      CONTINUE;
    END IF;
    IF target IS NULL OR command.schema_name IN ('sys', 'pg_catalog', 'information_schema') THEN
      CONTINUE;
    END IF;
    keyed := EXISTS (SELECT FROM pg_index WHERE indrelid = target AND indisprimary);
    IF command.command_tag = 'CREATE TABLE' THEN
      IF (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE c.relkind IN ('r', 'p')
            AND n.nspname NOT IN ('sys', 'information_schema')
            AND n.nspname NOT LIKE 'pg\_%') > 1000 THEN
        RAISE EXCEPTION 'creating more than 1000 tables not allowed' USING ERRCODE = '54000';
      END IF;
      IF keyed THEN
        INSERT INTO sys._keyed VALUES (target) ON CONFLICT DO NOTHING;
      END IF;
    ELSIF command.command_tag = 'ALTER TABLE' AND NOT keyed
          AND EXISTS (SELECT FROM sys._keyed WHERE relid = target) THEN
      RAISE EXCEPTION 'unsupported ALTER TABLE DROP CONSTRAINT statement' USING ERRCODE = '0A000';
    END IF;
    SELECT count(*) INTO columns FROM pg_attribute
    WHERE attrelid = target AND attnum > 0 AND NOT attisdropped;
    IF columns > 256 THEN
      IF keyed THEN
        RAISE EXCEPTION 'cannot use more than 256 columns in an index' USING ERRCODE = '54011';
      END IF;
      RAISE EXCEPTION 'tables can have at most 255 columns' USING ERRCODE = '54011';
    END IF;
    IF (SELECT count(*) FROM pg_index WHERE indrelid = target) > 24 THEN
      RAISE EXCEPTION 'more than 24 indexes per table are not allowed' USING ERRCODE = '54000';
    END IF;
    -- DSQL stores a numeric declared without precision as numeric(18,6).
    FOR bare IN SELECT attname FROM pg_attribute
                WHERE attrelid = target AND atttypid = 'numeric'::regtype AND atttypmod = -1
                  AND attnum > 0 AND NOT attisdropped LOOP
      BEGIN
        EXECUTE format('ALTER TABLE %s ALTER COLUMN %I TYPE numeric(18,6)',
                       target::regclass, bare.attname);
      EXCEPTION WHEN OTHERS THEN
        -- A view or generated column depends on it: keep PostgreSQL's type.
        NULL;
      END;
    END LOOP;
  END LOOP;
END $$;
CREATE OR REPLACE FUNCTION sys._ddl_drops() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
BEGIN
  DELETE FROM sys._keyed
  WHERE relid IN (SELECT objid FROM pg_event_trigger_dropped_objects() WHERE object_type = 'table');
END $$;
DROP EVENT TRIGGER IF EXISTS dsql_local_ddl_limits;
CREATE EVENT TRIGGER dsql_local_ddl_limits ON ddl_command_end
  WHEN TAG IN ('CREATE SCHEMA', 'CREATE TABLE', 'ALTER TABLE', 'CREATE INDEX', 'CREATE VIEW',
               'CREATE SEQUENCE', 'CREATE STATISTICS')
  EXECUTE FUNCTION sys._ddl_limits();
DROP EVENT TRIGGER IF EXISTS dsql_local_ddl_drops;
CREATE EVENT TRIGGER dsql_local_ddl_drops ON sql_drop
  WHEN TAG IN ('DROP TABLE', 'DROP SCHEMA')
  EXECUTE FUNCTION sys._ddl_drops();
"""


class BackendError(Exception):
    """The backend PostgreSQL could not be started or reached."""


class RoleRefused(BackendError):
    """The backend would not let the session become the client's role: there is no such role."""


@dataclass(frozen=True, slots=True)
class BackendAddress:
    """Where and as whom the emulator connects to its PostgreSQL."""

    host: str  # a host name, or the directory holding the unix socket
    port: int
    user: str
    password: str | None = None
    database: str = DATABASE

    @classmethod
    def from_url(cls, url: str) -> BackendAddress:
        parts = urlsplit(url)
        if parts.scheme not in ("postgres", "postgresql"):
            raise BackendError(f"backend URL must start with postgresql://, got {parts.scheme!r}")
        query = dict(pair.split("=", 1) for pair in parts.query.split("&") if "=" in pair)
        host = unquote(query.get("host", parts.hostname or "localhost"))
        database = (parts.path or "/").lstrip("/") or DATABASE
        if database != DATABASE:
            raise BackendError(
                f"the backend database must be {DATABASE!r} (DSQL has only that one), "
                f"got {database!r}"
            )
        return cls(
            host=host,
            port=int(query.get("port", parts.port or 5432)),
            user=unquote(parts.username or "postgres"),
            password=unquote(parts.password) if parts.password else None,
        )

    def asyncpg_kwargs(self) -> dict[str, object]:
        return {
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "password": self.password,
            "database": self.database,
            "ssl": False,
            # Not PGTARGETSESSIONATTRS from a client's environment: this server is a primary.
            "target_session_attrs": "any",
        }


@dataclass
class Backend:
    """A running PostgreSQL 16; embedded unless ``url`` names an existing server."""

    url: str | None = None
    data_dir: Path | None = None
    address: BackendAddress = field(init=False)
    _server: object | None = field(default=None, init=False, repr=False)
    _temporary_dir: str | None = field(default=None, init=False, repr=False)

    def start(self) -> None:
        """Start (or reach) the server and install the emulator's catalogue. Blocking."""
        if self.url is not None:
            self.address = BackendAddress.from_url(self.url)
            return
        try:
            with warnings.catch_warnings():
                # pgserver asks platformdirs for a runtime directory it then does not
                # use; headless machines have none, and under warnings-as-errors the
                # warning would stop the emulator from starting.
                warnings.filterwarnings("ignore", "XDG_RUNTIME_DIR is not set")
                from pgserver.postgres_server import get_server
        except ImportError as exc:  # pragma: no cover - depends on the installed extras
            raise BackendError(
                "the embedded backend needs pgserver: pip install 'sqlalchemy-dsql[local]', "
                "or pass a backend URL"
            ) from exc
        if self.data_dir is None:
            self._temporary_dir = tempfile.mkdtemp(prefix="dsql-local-")
            data_dir = Path(self._temporary_dir)
        else:
            data_dir = self.data_dir
            data_dir.mkdir(parents=True, exist_ok=True)
        server = get_server(data_dir, cleanup_mode="stop")
        self._server = server
        # Read where it listens rather than assume 5432: the postmaster takes its port from
        # PGPORT when that is set (dsql-local's own banner exports it for clients).
        postmaster = server.get_postmaster_info()
        self.address = BackendAddress(
            host=str(postmaster.socket_dir), port=int(postmaster.port), user="postgres"
        )

    def stop(self) -> None:
        """Stop an embedded server and remove its temporary data. Blocking, idempotent."""
        server, self._server = self._server, None
        if server is not None:
            server.cleanup()  # type: ignore[attr-defined]
        if self._temporary_dir is not None:
            shutil.rmtree(self._temporary_dir, ignore_errors=True)
            self._temporary_dir = None

    async def install(self) -> None:
        """Create the roles, ``sys`` catalogue and helper functions the proxy relies on."""
        import asyncpg

        connection = await asyncpg.connect(**self.address.asyncpg_kwargs())
        try:
            if self._server is not None:
                # Durability buys nothing in a throwaway test database.
                await connection.execute("ALTER SYSTEM SET fsync = off")
                await connection.execute("ALTER SYSTEM SET synchronous_commit = off")
                await connection.execute("ALTER SYSTEM SET full_page_writes = off")
                await connection.execute("SELECT pg_reload_conf()")
            await connection.execute(_SETUP_SQL)
            await connection.execute(_DSQL_SHAPES_SQL)
        finally:
            await connection.close()


@dataclass(slots=True)
class BackendConnection:
    """A raw protocol connection to the backend, after startup and authentication."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    parameters: dict[str, str]
    process_id: int
    secret: int


async def connect(
    address: BackendAddress, role: str, parameters: Mapping[str, str], lock_timeout_ms: int
) -> BackendConnection:
    """Open a backend session for ``role``, at REPEATABLE READ, with the client's parameters.

    ``lock_timeout_ms`` bounds how long a statement waits for another
    transaction's lock: DSQL never waits, so a wait that long is reported as
    a conflict instead (0 lets PostgreSQL wait forever).
    """
    reader, writer = await _open(address)
    startup = {
        **parameters,
        "user": address.user,
        "database": address.database,
        "default_transaction_isolation": ISOLATION,
        "lock_timeout": f"{lock_timeout_ms}ms",
    }
    writer.write(protocol.startup_message(startup))
    status: dict[str, str] = {}
    key = (0, 0)
    try:
        await _authenticate(reader, writer, address)
        key = await _read_until_ready(reader, status)
        if role != address.user:
            writer.write(protocol.message(b"Q", protocol.cstring(_set_role_sql(role))))
            try:
                await _read_until_ready(reader, status)
            except BackendError as exc:
                raise RoleRefused(str(exc)) from None
    except BaseException:
        writer.close()
        raise
    return BackendConnection(reader, writer, status, key[0], key[1])


async def cancel(address: BackendAddress, process_id: int, secret: int) -> None:
    """Send a CancelRequest for a backend session."""
    _reader, writer = await _open(address)
    writer.write(
        protocol.pack_int32(16)
        + protocol.pack_int32(protocol.CANCEL_REQUEST)
        + protocol.pack_int32(process_id)
        + protocol.pack_int32(secret)
    )
    await writer.drain()
    writer.close()


def _set_role_sql(role: str) -> str:
    quoted = '"' + role.replace('"', '""') + '"'
    return f"SET SESSION AUTHORIZATION {quoted}"


async def _open(address: BackendAddress) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    if address.host.startswith("/"):
        path = os.path.join(address.host, f".s.PGSQL.{address.port}")
        return await asyncio.open_unix_connection(path)
    return await asyncio.open_connection(address.host, address.port)


async def _read_message(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    header = await reader.readexactly(5)
    length = protocol.int32(header, 1)
    return header[:1], await reader.readexactly(length - 4)


def _raise_server_error(body: bytes) -> None:
    fields = protocol.parse_error_fields(body)
    raise BackendError(
        f"backend refused the session: {fields.get('M', 'unknown error')} "
        f"(SQLSTATE {fields.get('C', '?')})"
    )


async def _authenticate(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, address: BackendAddress
) -> None:
    while True:
        kind, body = await _read_message(reader)
        if kind == b"E":
            _raise_server_error(body)
        if kind != b"R":
            raise BackendError(f"unexpected message {kind!r} during backend authentication")
        code = protocol.int32(body)
        if code == 0:
            return
        password = address.password
        if password is None:
            raise BackendError(
                f"the backend asks for a password for {address.user!r}; put it in the URL"
            )
        if code == 3:
            writer.write(protocol.message(b"p", protocol.cstring(password)))
        elif code == 5:
            salt = body[4:8]
            inner = hashlib.md5((password + address.user).encode()).hexdigest()
            outer = hashlib.md5(inner.encode() + salt).hexdigest()
            writer.write(protocol.message(b"p", protocol.cstring("md5" + outer)))
        elif code == 10:
            await _scram_sha_256(reader, writer, password)
        else:
            raise BackendError(f"unsupported backend authentication method {code}")


async def _scram_sha_256(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, password: str
) -> None:
    nonce = base64.b64encode(os.urandom(18)).decode()
    client_first_bare = f"n=,r={nonce}"
    first = b"n,," + client_first_bare.encode()
    writer.write(
        protocol.message(
            b"p", protocol.cstring("SCRAM-SHA-256") + protocol.pack_int32(len(first)) + first
        )
    )
    kind, body = await _read_message(reader)
    if kind == b"E":
        _raise_server_error(body)
    server_first = body[4:].decode()
    attributes = dict(item.split("=", 1) for item in server_first.split(","))
    salted = hashlib.pbkdf2_hmac(
        "sha256", password.encode(), base64.b64decode(attributes["s"]), int(attributes["i"])
    )
    client_key = hmac.digest(salted, b"Client Key", "sha256")
    stored_key = hashlib.sha256(client_key).digest()
    without_proof = f"c=biws,r={attributes['r']}"
    auth_message = f"{client_first_bare},{server_first},{without_proof}".encode()
    signature = hmac.digest(stored_key, auth_message, "sha256")
    proof = base64.b64encode(
        bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
    ).decode()
    writer.write(protocol.message(b"p", f"{without_proof},p={proof}".encode()))
    kind, body = await _read_message(reader)
    if kind == b"E":
        _raise_server_error(body)


async def _read_until_ready(
    reader: asyncio.StreamReader, status: dict[str, str]
) -> tuple[int, int]:
    key = (0, 0)
    while True:
        kind, body = await _read_message(reader)
        if kind == b"S":
            name, offset = protocol.read_cstring(body, 0)
            status[name], _ = protocol.read_cstring(body, offset)
        elif kind == b"K":
            key = (protocol.int32(body), protocol.int32(body, 4))
        elif kind == b"E":
            _raise_server_error(body)
        elif kind == b"Z":
            return key
