"""pytest plugin loaded into Amazon's suites by run_peers.py (``-p peer_plugin``).

It changes no test: it only settles two things about the machine the suites run on.

* Name resolution: DSQL endpoints (``<id>.dsql.<region>.on.aws``) resolve in
  public DNS; the emulator's do not. libpq dials ``PGHOSTADDR`` instead, but
  asyncpg has no such setting and asks ``getaddrinfo``, so in this process
  alone such names (and no others) answer with the emulator's address. The
  system hosts file is never touched.
* Dialect names: Amazon's package and ours both register ``auroradsql``
  through entry points, and which one SQLAlchemy picks would depend on install
  order. Amazon's suites are about Amazon's dialect, so its names are
  registered explicitly, as Amazon's own ``test/conftest.py`` does for some.
"""

from __future__ import annotations

import os
import re
import socket
from importlib import metadata
from typing import Any

from sqlalchemy.dialects import registry

_DSQL_NAME = re.compile(r"^[a-z0-9]+\.dsql(-[^.]+)?\.[a-z0-9-]+\.on\.aws$")
_HOSTADDR = os.environ["DSQL_PEERS_HOSTADDR"]
_system_getaddrinfo = socket.getaddrinfo


def _getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    if isinstance(host, str) and _DSQL_NAME.match(host.lower()):
        host = _HOSTADDR
    return _system_getaddrinfo(host, *args, **kwargs)


socket.getaddrinfo = _getaddrinfo


def _register_amazon_dialects() -> None:
    try:
        amazon = metadata.distribution("aurora-dsql-sqlalchemy")
    except metadata.PackageNotFoundError:
        return
    for entry in amazon.entry_points.select(group="sqlalchemy.dialects"):
        module, _, name = entry.value.partition(":")
        registry.register(entry.name, module, name)


_register_amazon_dialects()


def pytest_report_header() -> list[str]:
    dialect = registry.load("auroradsql")
    return [f"peers: auroradsql is {dialect.__module__}, {_DSQL_NAME.pattern} -> {_HOSTADDR}"]
