"""Run ``dsql-local`` in a process of its own.

:class:`~sqlalchemy_dsql.local.LocalDSQL` runs the proxy on a thread of the
calling process, which is what tests want most of the time. Load tests and
benchmarks want the proxy's CPU work out of the client's interpreter, so that
the client's event loop and the emulator don't take turns on one GIL::

    from sqlalchemy_dsql.local.process import spawn

    with spawn(latency_ms=2, max_connection_age=4) as dsql:
        engine = create_async_dsql_engine(
            dsql.endpoint, hostaddr=dsql.host, port=dsql.port,
            sslrootcert=dsql.ca_file, ...
        )

Keyword arguments are ``dsql-local`` options with dashes written as
underscores; ``True`` passes a bare flag. The process is stopped when the
``with`` block ends.
"""

from __future__ import annotations

import contextlib
import re
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO

from botocore.credentials import Credentials

from .tokens import fixed_test_credentials

__all__ = ["SpawnedDSQL", "spawn"]

_BANNER_END = "CA file"
_DIAL = re.compile(r"endpoint\s+(\S+) \(dial ([\d.]+):(\d+)\)")
_REGION = re.compile(r"region\s+(\S+)")
_CA_FILE = re.compile(r"CA file\s+(\S+)")


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


def _argv(options: dict[str, object]) -> list[str]:
    argv = [sys.executable, "-m", "sqlalchemy_dsql.local.cli", "--port", "0"]
    for name, value in options.items():
        flag = "--" + name.replace("_", "-")
        if value is True:
            argv.append(flag)
        elif value is not False and value is not None:
            argv += [flag, str(value)]
    return argv


def _parse(banner: str, pid: int) -> SpawnedDSQL:
    dial, region, ca_file = _DIAL.search(banner), _REGION.search(banner), _CA_FILE.search(banner)
    if not (dial and region and ca_file):
        raise RuntimeError(f"dsql-local printed a banner this helper cannot read:\n{banner}")
    return SpawnedDSQL(
        endpoint=dial[1],
        host=dial[2],
        port=int(dial[3]),
        region=region[1],
        ca_file=ca_file[1],
        credentials=fixed_test_credentials(),
        pid=pid,
    )


@contextlib.contextmanager
def spawn(**options: object) -> Iterator[SpawnedDSQL]:
    """Start ``dsql-local`` on a free port, wait until it is ready, stop it on exit."""
    with tempfile.TemporaryFile(mode="w+") as errors:
        process = subprocess.Popen(_argv(options), stdout=subprocess.PIPE, stderr=errors, text=True)
        try:
            yield _wait_until_ready(process, errors)
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_until_ready(process: subprocess.Popen[str], errors: IO[str]) -> SpawnedDSQL:
    assert process.stdout is not None
    banner = ""
    while _BANNER_END not in banner:
        line = process.stdout.readline()
        if not line:
            code = process.wait()
            errors.seek(0)
            raise RuntimeError(
                f"dsql-local exited before it was ready (exit code {code}):\n"
                f"{banner}{errors.read()}"
            )
        banner += line
    # The child keeps printing; drain its output so it never blocks on a full pipe.
    threading.Thread(target=process.stdout.read, daemon=True).start()
    return _parse(banner, process.pid)
