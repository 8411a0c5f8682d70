"""Starting and stopping the emulator, its command line, an external backend, cancels."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import asyncpg
import psutil
import psycopg
import pytest

from sqlalchemy_dsql.local import LocalDSQL
from sqlalchemy_dsql.local.server import PortInUse

pytestmark = pytest.mark.integration


def _postgres_processes(data_dir: str) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["name", "cmdline"]):
        if process.info["name"] == "postgres" and data_dir in " ".join(
            process.info["cmdline"] or []
        ):
            found.append(process)
    return found


def test_stop_leaves_no_backend_process_behind(tmp_path: Path) -> None:
    data_dir = tmp_path / "pgdata"
    with LocalDSQL(data_dir=data_dir) as emulator, psycopg.connect(emulator.conninfo()) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
        assert _postgres_processes(str(data_dir))
    assert not _postgres_processes(str(data_dir))


# A client that leaves its connection in a transaction and loses its event loop, as a
# test with a loop of its own can; then the emulator is emptied and stopped.
_ABANDONED_CLIENT = """
import asyncio

import asyncpg

from sqlalchemy_dsql.local import LocalDSQL

dsql = LocalDSQL().start()
loop = asyncio.new_event_loop()
connection = loop.run_until_complete(asyncpg.connect(**dsql.connect_kwargs()))
loop.run_until_complete(connection.execute("BEGIN; SELECT 1"))
loop.close()
dsql.truncate()
dsql.stop()
print("stopped")
"""


def test_stop_after_a_client_lost_its_loop_under_warnings_as_errors() -> None:
    environment = {name: value for name, value in os.environ.items() if name != "XDG_RUNTIME_DIR"}
    result = subprocess.run(
        [sys.executable, "-W", "error", "-"],
        input=_ABANDONED_CLIENT,
        capture_output=True,
        text=True,
        env=environment,
        timeout=60,
    )
    assert (result.returncode, result.stdout) == (0, "stopped\n"), result.stderr


def test_data_dir_keeps_data_across_restarts(tmp_path: Path) -> None:
    data_dir = tmp_path / "pgdata"
    with (
        LocalDSQL(data_dir=data_dir) as emulator,
        psycopg.connect(emulator.conninfo(), autocommit=True) as conn,
    ):
        conn.execute("CREATE TABLE kept (id bigint PRIMARY KEY)")
        conn.execute("INSERT INTO kept VALUES (7)")
    with LocalDSQL(data_dir=data_dir) as emulator, psycopg.connect(emulator.conninfo()) as conn:
        assert conn.execute("SELECT id FROM kept").fetchall() == [(7,)]


def test_existing_server_as_backend(dsql: LocalDSQL) -> None:
    """A second emulator in front of the first one's PostgreSQL, given by URL."""
    with (
        LocalDSQL(backend_url=dsql.backend_url) as emulator,
        psycopg.connect(emulator.conninfo(), autocommit=True) as conn,
    ):
        assert conn.execute("SHOW transaction_isolation").fetchone() == ("repeatable read",)
        conn.execute("CREATE TABLE IF NOT EXISTS shared_t (id bigint PRIMARY KEY, a int)")
        with pytest.raises(psycopg.errors.FeatureNotSupported):
            conn.execute("TRUNCATE shared_t")
        job_id = conn.execute(
            "CREATE INDEX ASYNC IF NOT EXISTS shared_idx ON shared_t (a)"
        ).fetchone()
        assert job_id is not None
        assert conn.execute("CALL sys.wait_for_job(%s)", job_id).fetchone() == (True,)


def test_backend_url_must_name_the_postgres_database() -> None:
    with pytest.raises(Exception, match="must be 'postgres'"):
        LocalDSQL(backend_url="postgresql://postgres@localhost/app").start()


def test_bad_limits_are_refused_up_front() -> None:
    with pytest.raises(ValueError, match="max_connection_age"):
        LocalDSQL(max_connection_age=0)
    with pytest.raises(ValueError, match="latency_ms"):
        LocalDSQL(latency_ms=-1)


async def test_connection_rate_and_count_limits() -> None:
    async with LocalDSQL(connections_per_second=0.01, connection_burst=2) as emulator:
        kept = [await asyncpg.connect(**emulator.connect_kwargs()) for _ in range(2)]
        with pytest.raises(asyncpg.PostgresError, match="rate exceeded") as caught:
            await asyncpg.connect(**emulator.connect_kwargs())
        assert caught.value.sqlstate == "53400"
        for conn in kept:
            await conn.close()
    async with LocalDSQL(max_connections=1) as emulator:
        conn = await asyncpg.connect(**emulator.connect_kwargs())
        with pytest.raises(asyncpg.TooManyConnectionsError, match="too many open connections"):
            await asyncpg.connect(**emulator.connect_kwargs())
        await conn.close()


async def test_cancel_request_reaches_the_backend(dsql: LocalDSQL) -> None:
    conn = await asyncpg.connect(**dsql.connect_kwargs())
    try:
        with pytest.raises(asyncio.TimeoutError):
            await conn.fetchval("SELECT pg_sleep(30)", timeout=0.5)
        # asyncpg sent a CancelRequest on timeout; the connection is usable again.
        assert await conn.fetchval("SELECT 1") == 1
    finally:
        await conn.close()


async def test_aws_iam_grant_is_accepted(dsql: LocalDSQL) -> None:
    conn = await asyncpg.connect(**dsql.connect_kwargs())
    try:
        await conn.execute("AWS IAM GRANT admin TO 'arn:aws:iam::123456789012:role/app'")
        await conn.execute("AWS IAM REVOKE admin FROM 'arn:aws:iam::123456789012:role/app'")
    finally:
        await conn.close()


def test_command_line_serves_until_interrupted(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "sqlalchemy_dsql.local.cli", "--port", "0", "--log-statements"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert process.stdout is not None
        lines = []
        for line in process.stdout:
            lines.append(line)
            if line.startswith("Ctrl-C"):
                break
        output = "".join(lines)
        assert "dsql-local is ready" in output
        exports = dict(
            item.split("=", 1)
            for line in lines
            if line.startswith("export ")
            for item in line.split()[1:]
        )
        token = subprocess.run(
            [sys.executable, "-m", "sqlalchemy_dsql.local.cli", "token"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        endpoint = next(line.split()[1] for line in lines if line.strip().startswith("endpoint"))
        with psycopg.connect(
            host=endpoint,
            hostaddr=exports["PGHOSTADDR"],
            port=exports["PGPORT"],
            user="admin",
            dbname="postgres",
            sslmode=exports["PGSSLMODE"],
            sslrootcert=exports["PGSSLROOTCERT"],
            password=token,
        ) as conn:
            assert conn.execute("SELECT 'via cli'").fetchone() == ("via cli",)
    finally:
        process.send_signal(signal.SIGINT)
        _out, err = process.communicate(timeout=30)
    assert process.returncode == 0
    assert "SELECT 'via cli'" in err


def test_a_port_in_use_is_one_line_from_the_command_line() -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "sqlalchemy_dsql.local.cli", "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"dsql-local: port {port} is in use (another dsql-local or a PostgreSQL?): choose "
        f"another with --port, or --port 0 for any free one"
    ]


def test_a_port_in_use_from_python_says_so_and_leaves_nothing_running() -> None:
    threads = threading.active_count()
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        with pytest.raises(PortInUse, match=rf"port {port} on 127.0.0.1 is in use.*port 0"):
            LocalDSQL(port=port).start()
    assert threading.active_count() == threads  # the emulator's loop thread is gone
