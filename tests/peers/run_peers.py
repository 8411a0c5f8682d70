"""Run Amazon's own test suites, with Amazon's own packages, against dsql-local.

Two suites, each fetched from its pinned sdist on PyPI at run time (never
committed here) and unpacked under ``build/peers/``:

* ``sqlalchemy``: aurora-dsql-sqlalchemy's ``test/`` and
  ``examples/pet-clinic-app/test/``, with ``--driver psycopg`` or ``psycopg2``;
* ``connector``: aurora-dsql-python-connector's ``tests/integration/``
  (asyncpg, psycopg and psycopg2 at once).

The emulator runs in a process of its own. The suites find it the way they
find a real cluster in Amazon's CI: ``CLUSTER_ENDPOINT`` and ``CLUSTER_USER``,
tokens minted by boto3's default credential chain (here the emulator's fixed
test key), the CA in ``SSL_CERT_FILE``. libpq reaches the DSQL-shaped name
through ``PGHOSTADDR``; asyncpg, which has no such setting, through
``peer_plugin.py``. Amazon's packages register the same SQLAlchemy dialect
name as ours, so run this only in an environment made for it (``nox -s peers``).
pytest runs in the sdist's root, as in Amazon's CI, so the suites import the
sdist's copy of Amazon's package: the same files as the installed 1.3.0.

    python tests/peers/run_peers.py sqlalchemy --driver psycopg [-- PYTEST ARGS]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy_dsql.local import LocalDSQL
from sqlalchemy_dsql.local.process import SpawnedDSQL, spawn

HERE = Path(__file__).resolve().parent
CACHE = HERE.parents[1] / "build" / "peers"


@dataclass(frozen=True, slots=True)
class Suite:
    distribution: str
    version: str
    # Test directories inside the unpacked sdist; each runs with that sdist root as cwd.
    paths: tuple[str, ...]


SUITES = {
    "sqlalchemy": Suite(
        "aurora-dsql-sqlalchemy",
        "1.3.0",
        ("test", "examples/pet-clinic-app/test"),
    ),
    "connector": Suite("aurora-dsql-python-connector", "0.2.7", ("tests/integration",)),
}


def unpacked_sdist(suite: Suite, cache: Path) -> Path:
    """The sdist's source tree, downloaded and unpacked once per version."""
    name = suite.distribution.replace("-", "_")
    root = cache / f"{name}-{suite.version}"
    if (root / "PKG-INFO").exists():
        return root
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as download:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--no-deps",
                "--no-binary",
                ":all:",
                "--dest",
                download,
                f"{suite.distribution}=={suite.version}",
            ],
            check=True,
        )
        (archive,) = Path(download).glob("*.tar.gz")
        with tarfile.open(archive) as sdist:
            sdist.extractall(cache, filter="data")
    if not (root / "PKG-INFO").exists():
        raise RuntimeError(f"{archive.name} did not unpack to {root}")
    return root


def suite_environment(
    dsql: SpawnedDSQL | LocalDSQL, driver: str, user: str = "admin"
) -> dict[str, str]:
    """The environment Amazon's CI gives its suites, pointed at the emulator.

    Also what tests/peers/run_amazon.py gives them: one way from the emulator to
    Amazon's tests.
    """
    env = {
        name: value
        for name, value in os.environ.items()
        # Nothing from the caller's AWS or libpq setup may leak in and pick another target.
        if not name.startswith(("AWS_", "PG", "CLUSTER_"))
        and name not in {"SSL_CERT_FILE", "SSL_CERT_DIR"}
    }
    env.update(
        CLUSTER_ENDPOINT=dsql.endpoint,
        CLUSTER_USER=user,
        REGION=dsql.region,
        DRIVER=driver,
        AWS_ACCESS_KEY_ID=dsql.credentials.access_key,
        AWS_SECRET_ACCESS_KEY=dsql.credentials.secret_key,
        AWS_REGION=dsql.region,
        AWS_DEFAULT_REGION=dsql.region,
        # No profile or config file of the caller's takes part.
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        AWS_EC2_METADATA_DISABLED="true",
        # libpq: dial the emulator for the DSQL-shaped name, no DNS involved.
        PGHOSTADDR=dsql.host,
        PGPORT=str(dsql.port),
        PGSSLROOTCERT=dsql.ca_file,
        # Amazon's engine passes sslrootcert=system; its CI points SSL_CERT_FILE at
        # Amazon's root CA, here it is the emulator's.
        SSL_CERT_FILE=dsql.ca_file,
        # The connector suite's fixture reads the CA from here instead of downloading one.
        SSL_CERT_PATH=dsql.ca_file,
        DSQL_PEERS_HOSTADDR=dsql.host,
        PYTHONPATH=os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")])),
    )
    return env


def run(suite: Suite, root: Path, driver: str, label: str, pytest_args: list[str]) -> int:
    """One suite on one driver against a fresh emulator; pytest's exit code (0: all passed)."""
    failed = 0
    with spawn() as dsql:
        env = suite_environment(dsql, driver)
        for path in suite.paths:
            print(f"[peers] {label}: {suite.distribution} {suite.version} {path}", flush=True)
            command = [sys.executable, "-m", "pytest", path, "-p", "peer_plugin"]
            command += ["-p", "no:cacheprovider", *pytest_args]
            failed |= subprocess.run(command, cwd=root, env=env, check=False).returncode
    return failed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="run_peers.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("suites", nargs="+", choices=sorted(SUITES), metavar="SUITE")
    parser.add_argument(
        "--driver",
        action="append",
        choices=("psycopg", "psycopg2"),
        help="for the sqlalchemy suite (repeatable; default: both)",
    )
    parser.add_argument("--cache", type=Path, default=CACHE, help="where sdists are unpacked")
    argv = sys.argv[1:] if argv is None else argv
    # Everything after "--" goes to pytest untouched.
    split = argv.index("--") if "--" in argv else len(argv)
    args = parser.parse_args(argv[:split])
    pytest_args = argv[split + 1 :]
    outcomes: list[tuple[str, int]] = []
    for name in dict.fromkeys(args.suites):
        suite = SUITES[name]
        root = unpacked_sdist(suite, args.cache)
        # The connector suite picks its drivers itself (asyncpg, psycopg, psycopg2).
        drivers = (args.driver or ["psycopg", "psycopg2"]) if name == "sqlalchemy" else ["psycopg"]
        for driver in drivers:
            label = f"{name} ({driver})" if name == "sqlalchemy" else name
            outcomes.append((label, run(suite, root, driver, label, pytest_args)))
    for label, code in outcomes:
        print(f"[peers] {label}: {'passed' if code == 0 else f'FAILED (pytest exit {code})'}")
    return 0 if all(code == 0 for _, code in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
