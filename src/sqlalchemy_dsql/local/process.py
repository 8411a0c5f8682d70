"""Run ``dsql-local`` in a process of its own.

:class:`~sqlalchemy_dsql.local.LocalDSQL` runs the proxy on a thread of the
calling process, which is what tests want most of the time. Load tests and
benchmarks want the proxy's CPU work out of the client's interpreter, so that
the client's event loop and the emulator don't take turns on one GIL::

    from sqlalchemy_dsql.local.process import spawn

    with spawn(latency_ms=2, max_connection_age=4) as dsql:
        engine = create_async_engine(dsql.url())   # the test key pair in the environment

Keyword arguments are ``dsql-local`` options with dashes written as
underscores; ``True`` passes a bare flag. The child tells where it listens
through ``--ready-file`` (JSON), not through the banner it prints for people.
The process is stopped when the ``with`` block ends.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from botocore.credentials import Credentials

from .client import client_environ, client_url
from .tokens import fixed_test_credentials

__all__ = ["SpawnedDSQL", "spawn"]

# Starting the embedded PostgreSQL takes seconds; a child that is not ready
# after this long is stuck, and waiting longer would hang the caller's tests.
_READY_TIMEOUT = 120.0
_POLL_INTERVAL = 0.05


@dataclass(frozen=True, slots=True)
class SpawnedDSQL:
    """Where a spawned ``dsql-local`` listens, and the credentials it accepts."""

    endpoint: str
    host: str
    port: int
    region: str
    ca_file: str
    credentials: Credentials
    pid: int

    def url(self, driver: str = "asyncpg", user: str = "admin") -> str:
        """A SQLAlchemy URL for this emulator, as :meth:`LocalDSQL.url` gives it: no secret."""
        return client_url(
            endpoint=self.endpoint,
            host=self.host,
            port=self.port,
            ca_file=self.ca_file,
            driver=driver,
            user=user,
        )

    def environ(self) -> dict[str, str]:
        """What a client needs in its environment, as :meth:`LocalDSQL.environ` gives it."""
        return client_environ(
            credentials=self.credentials,
            region=self.region,
            host=self.host,
            port=self.port,
            ca_file=self.ca_file,
        )


def _argv(options: dict[str, object], ready_file: Path) -> list[str]:
    argv = [sys.executable, "-m", "sqlalchemy_dsql.local.cli", "--port", "0"]
    for name, value in options.items():
        flag = "--" + name.replace("_", "-")
        if value is True:
            argv.append(flag)
        elif value is not False and value is not None:
            argv += [flag, str(value)]
    return [*argv, "--ready-file", str(ready_file)]


@contextlib.contextmanager
def spawn(**options: object) -> Iterator[SpawnedDSQL]:
    """Start ``dsql-local`` on a free port, wait until it is ready, stop it on exit."""
    with (
        tempfile.TemporaryDirectory(prefix="dsql-local-spawn-") as directory,
        tempfile.TemporaryFile(mode="w+") as errors,
    ):
        ready_file = Path(directory) / "ready.json"
        # The banner and statement log are for people; nobody reads them here.
        process = subprocess.Popen(
            _argv(options, ready_file), stdout=subprocess.DEVNULL, stderr=errors, text=True
        )
        try:
            yield _wait_until_ready(process, ready_file, errors)
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_until_ready(
    process: subprocess.Popen[str], ready_file: Path, errors: IO[str]
) -> SpawnedDSQL:
    deadline = time.monotonic() + _READY_TIMEOUT
    while not ready_file.exists():
        code = process.poll()
        if code is not None:
            errors.seek(0)
            raise RuntimeError(
                f"dsql-local exited before it was ready (exit code {code}):\n{errors.read()}"
            )
        if time.monotonic() > deadline:
            errors.seek(0)
            raise RuntimeError(
                f"dsql-local was not ready after {_READY_TIMEOUT:.0f} s:\n{errors.read()}"
            )
        time.sleep(_POLL_INTERVAL)
    ready = json.loads(ready_file.read_text())
    return SpawnedDSQL(
        endpoint=ready["endpoint"],
        host=ready["host"],
        port=int(ready["port"]),
        region=ready["region"],
        ca_file=ready["ca_file"],
        credentials=fixed_test_credentials(),
        pid=int(ready["pid"]),
    )
