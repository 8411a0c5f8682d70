"""The emulator's front door against what live DSQL clusters were seen to do.

Startup parameters, the greeting's ParameterStatus values, the plaintext
refusal and IAM-token refusals, each in DSQL's recorded words (sources in
the comments), through raw asyncpg and psycopg; and the emulator program
itself: started with a client's libpq environment, and spawned through its
machine-readable ready file.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import asyncpg
import psycopg
import pytest

from sqlalchemy_dsql.local import LocalDSQL
from sqlalchemy_dsql.local.process import spawn

pytestmark = pytest.mark.integration

# What dsql-local's banner tells a shell to export, with a port that is not 5432.
_BANNER_ENVIRONMENT = {
    "PGPORT": "6543",
    "PGHOST": "127.0.0.1",
    "PGUSER": "admin",
    "PGDATABASE": "postgres",
    "PGSSLMODE": "verify-full",
}


# -- the program: a client's libpq environment, the ready file -----------------------------


async def test_local_dsql_starts_with_the_banners_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in _BANNER_ENVIRONMENT.items():
        monkeypatch.setenv(name, value)
    async with LocalDSQL(second_opinion=False) as emulator:
        conn = await asyncpg.connect(**emulator.connect_kwargs())
        try:
            assert await conn.fetchval("SELECT 41 + 1") == 42
        finally:
            await conn.close()
        assert emulator.truncate() == []  # the backend is reachable directly too


def test_spawned_cli_starts_with_pgport_set(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in _BANNER_ENVIRONMENT.items():
        monkeypatch.setenv(name, value)
    with (
        spawn(no_second_opinion=True) as spawned,
        psycopg.connect(
            host=spawned.host,
            port=spawned.port,
            dbname="postgres",
            user="admin",
            password=_token(spawned.endpoint, spawned.region),
            sslmode="verify-full",
            sslrootcert=spawned.ca_file,
        ) as conn,
    ):
        assert conn.execute("SELECT current_user").fetchone() == ("admin",)


def _token(endpoint: str, region: str) -> str:
    import botocore.session

    from sqlalchemy_dsql.local import TEST_ACCESS_KEY_ID, TEST_SECRET_ACCESS_KEY

    session = botocore.session.get_session()
    session.set_credentials(TEST_ACCESS_KEY_ID, TEST_SECRET_ACCESS_KEY)
    client = session.create_client("dsql", region_name=region)
    return str(client.generate_db_connect_admin_auth_token(endpoint, region, 900))


def test_cli_ready_file_says_where_it_listens(tmp_path: Path) -> None:
    ready_file = tmp_path / "ready.json"
    command = [sys.executable, "-m", "sqlalchemy_dsql.local.cli", "--port", "0"]
    command += ["--no-second-opinion", "--region", "eu-west-1", "--ready-file", str(ready_file)]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    try:
        assert process.stdout is not None
        banner = process.stdout.readline()  # the banner for people still comes first
        assert banner.startswith("dsql-local is ready")
        ready = json.loads(ready_file.read_text())
        assert set(ready) == {"endpoint", "host", "port", "region", "ca_file", "pid"}
        assert ready["pid"] == process.pid
        assert ready["region"] == "eu-west-1"
        assert ready["endpoint"].endswith(".dsql.eu-west-1.on.aws")
        assert os.path.exists(ready["ca_file"])
        assert isinstance(ready["port"], int)
        assert ready["port"] > 0
        # No stray partial file is left next to it.
        assert [p.name for p in tmp_path.iterdir()] == ["ready.json"]
    finally:
        process.terminate()
        process.wait(30)
