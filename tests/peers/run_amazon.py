"""Run Amazon's aurora-dsql-sqlalchemy test suites against dsql-local.

    python tests/peers/run_amazon.py --dialect ours --driver psycopg
    python tests/peers/run_amazon.py --dialect amazon --driver psycopg2 \\
        --python /path/to/venv-with-amazons-dialect/bin/python --source aurora_dsql_sqlalchemy-1.3.0

Amazon's ``test/`` (and ``examples/pet-clinic-app/test/`` with ``--suite pet-clinic``)
run against a real cluster in Amazon's CI and find it through environment variables
(``CLUSTER_ENDPOINT``, ``CLUSTER_USER``, ``DRIVER``) and boto3's default credential
chain. This runner starts the emulator in its own process, then runs pytest in a child
process whose environment points those at it:

- the emulator's fixed test key as ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY``,
  its Region as ``AWS_REGION``, and no AWS config or credentials files, so nothing of
  the machine's own AWS setup is used;
- ``PGHOSTADDR=127.0.0.1`` and ``PGPORT``: libpq dials the emulator while the host name
  (tokens, certificate) stays the DSQL-shaped endpoint; no hosts file is touched;
- the emulator's CA as ``SSL_CERT_FILE`` (both dialects pass ``sslrootcert=system``,
  which libpq resolves through OpenSSL's default store, which this variable replaces)
  and ``PGSSLROOTCERT``.

``--dialect ours`` puts ``tests/peers/shim`` first on ``PYTHONPATH``: an
``aurora_dsql_sqlalchemy`` package that re-exports sqlalchemy-dsql under Amazon's
names. ``--dialect amazon`` needs Amazon's package installed in ``--python``'s
environment, never in this project's (both register the ``auroradsql`` dialect).
``--python`` must also have pytest, python-dotenv and the driver; the runner itself
needs only this project with its ``local`` extra.

``--source`` is Amazon's sdist, extracted or as a ``.tar.gz``; without it the sdist of
aurora-dsql-sqlalchemy 1.3.0 is fetched with pip. ``--deselect-documented`` leaves out
the tests that fail with our dialect on purpose (docs/dialect.md lists them), so that
a green run means no other difference. Arguments after ``--`` go to pytest. The exit
status is pytest's.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from run_peers import suite_environment

from sqlalchemy_dsql.local import LocalDSQL

AMAZON_VERSION = "1.3.0"
SHIM = Path(__file__).resolve().parent / "shim"
SUITES = {"test": (".", "test"), "pet-clinic": ("examples/pet-clinic-app", "test")}
# Amazon's tests that fail with our dialect on purpose, each explained in docs/dialect.md
# ("Differences from Amazon's aurora-dsql-sqlalchemy"); keep the two lists the same.
DOCUMENTED_DIFFERENCES = (
    "test_add_non_check_constraint_gets_no_not_valid",
    "test_inline_foreign_key",
    "test_unsupported_decimal_seq",
    "test_invalid_cache_size",
    "test_profile_used_for_connection",
    # test_create_dsql_engine.py: these patch aurora_dsql_sqlalchemy's internals.
    "test_default_engine_params",
    "test_default_driver_is_psycopg",
    "test_default_dbname",
    "test_custom_pool_size",
    "test_sslnegotiation_based_on_libpq_version",
    "test_engine_kwargs_passed_through",
)


def _parse(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(
        description="Run Amazon's aurora-dsql-sqlalchemy tests against dsql-local."
    )
    parser.add_argument("--dialect", choices=("amazon", "ours"), required=True)
    parser.add_argument("--driver", choices=("psycopg", "psycopg2"), required=True)
    parser.add_argument("--suite", choices=tuple(SUITES), default="test")
    parser.add_argument("--source", type=Path, help="Amazon's sdist: a directory or a .tar.gz")
    parser.add_argument("--python", default=sys.executable, help="the interpreter that runs pytest")
    parser.add_argument("--user", default="admin", help="CLUSTER_USER (default admin)")
    parser.add_argument(
        "--deselect-documented",
        action="store_true",
        help="with --dialect ours: leave out the tests docs/dialect.md lists as deliberate "
        "differences (a -k expression; do not pass -k to pytest as well)",
    )
    own, _, rest = _split(argv)
    args = parser.parse_args(own)
    if args.deselect_documented and args.dialect != "ours":
        parser.error("--deselect-documented is for --dialect ours")
    return args, rest


def _split(argv: list[str]) -> tuple[list[str], str, list[str]]:
    if "--" in argv:
        at = argv.index("--")
        return argv[:at], "--", argv[at + 1 :]
    return argv, "", []


def _pip() -> list[str]:
    if subprocess.run([sys.executable, "-m", "pip", "--version"], capture_output=True).returncode:
        found = shutil.which("pip") or shutil.which("pip3")
        if found is None:
            sys.exit("run_amazon: no pip to fetch Amazon's sdist with; pass --source")
        return [found]
    return [sys.executable, "-m", "pip"]


def _source(given: Path | None, scratch: Path) -> Path:
    """The root of Amazon's extracted sdist."""
    if given is None:
        subprocess.run(
            [
                *_pip(),
                "download",
                f"aurora-dsql-sqlalchemy=={AMAZON_VERSION}",
                "--no-deps",
                "--no-binary",
                ":all:",
                "-d",
                str(scratch),
            ],
            check=True,
        )
        given = next(scratch.glob("aurora_dsql_sqlalchemy-*.tar.gz"))
    if given.is_dir():
        return given.resolve()
    scratch.mkdir(parents=True, exist_ok=True)
    with tarfile.open(given) as archive:
        # The "data" filter (no absolute paths, links out or devices) where Python has it.
        safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        archive.extractall(scratch, **safe)  # type: ignore[arg-type]
    (root,) = (path for path in scratch.iterdir() if path.is_dir())
    return root


def _environment(dsql: LocalDSQL, args: argparse.Namespace) -> dict[str, str]:
    env = suite_environment(dsql, args.driver, args.user)
    if args.dialect == "ours":
        env["PYTHONPATH"] = str(SHIM)
    return env


def _check_dialect(python: str, dialect: str, env: dict[str, str], cwd: Path) -> None:
    """Refuse to run a suite on the wrong dialect: the package must be the one asked for."""
    probe = "import aurora_dsql_sqlalchemy as a; print(a.__file__)"
    found = subprocess.run([python, "-c", probe], env=env, cwd=cwd, capture_output=True, text=True)
    if found.returncode:
        sys.exit(
            f"run_amazon: {python} cannot import aurora_dsql_sqlalchemy:\n{found.stderr.strip()}"
        )
    is_shim = Path(found.stdout.strip()).resolve().is_relative_to(SHIM)
    if is_shim != (dialect == "ours"):
        sys.exit(
            f"run_amazon: --dialect {dialect} but aurora_dsql_sqlalchemy comes from "
            f"{found.stdout.strip()}"
        )


def main(argv: list[str] | None = None) -> int:
    args, pytest_args = _parse(sys.argv[1:] if argv is None else argv)

    with tempfile.TemporaryDirectory(prefix="amazon-peers-") as scratch:
        root = _source(args.source, Path(scratch) / "sdist")
        where, tests = SUITES[args.suite]
        if not (root / where / tests).is_dir():
            sys.exit(f"run_amazon: {root / where / tests} is not there; is {root} Amazon's sdist?")
        # A copy without the sdist's own package, which pytest's rootdir on sys.path would
        # import instead of the installed dialect (or the shim).
        cwd = Path(scratch) / "run"
        shutil.copytree(
            root / where, cwd, ignore=shutil.ignore_patterns("aurora_dsql_sqlalchemy", ".venv")
        )
        with LocalDSQL() as dsql:
            env = _environment(dsql, args)
            _check_dialect(args.python, args.dialect, env, cwd)
            print(
                f"run_amazon: {args.suite} with {args.dialect} dialect, {args.driver}, against "
                f"{dsql.endpoint} at {dsql.host}:{dsql.port}",
                flush=True,
            )
            command = [
                args.python,
                "-m",
                "pytest",
                tests,
                "-p",
                "no:cacheprovider",
                "-p",
                "no:randomly",
                *pytest_args,
            ]
            if args.deselect_documented:
                command += ["-k", f"not ({' or '.join(DOCUMENTED_DIFFERENCES)})"]
            return subprocess.run(command, cwd=cwd, env=env).returncode


if __name__ == "__main__":
    sys.exit(main())
