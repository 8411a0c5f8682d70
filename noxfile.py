"""Sessions: tests on both supported SQLAlchemy lines, the compliance suite, lint, types."""

from __future__ import annotations

import argparse

import nox

nox.options.default_venv_backend = "uv"
nox.options.sessions = ["tests", "suite", "lint", "typecheck"]

# The newest release of each supported line; SQLAlchemy 2.1 needs Python >= 3.11.
SQLALCHEMY_LINES = {"2.0": "sqlalchemy[asyncio]>=2.0,<2.1", "2.1": "sqlalchemy[asyncio]>=2.1,<2.2"}


@nox.session
@nox.parametrize(
    ("python", "sqlalchemy"),
    # The oldest Python each line supports, so both minimums stay tested.
    [("3.10", "2.0"), ("3.11", "2.1")],
    ids=["sqlalchemy-2.0", "sqlalchemy-2.1"],
)
def tests(session: nox.Session, sqlalchemy: str) -> None:
    session.install("-e", ".[local,psycopg]", "--group", "dev")
    session.install(SQLALCHEMY_LINES[sqlalchemy])
    session.run("python", "-c", "import sqlalchemy; print('SQLAlchemy', sqlalchemy.__version__)")
    session.run("pytest", *session.posargs)


@nox.session(python="3.11")
@nox.parametrize("sqlalchemy", list(SQLALCHEMY_LINES), ids=["sqlalchemy-2.0", "sqlalchemy-2.1"])
def suite(session: nox.Session, sqlalchemy: str) -> None:
    """SQLAlchemy's dialect compliance suite against auroradsql+asyncpg through dsql-local."""
    session.install("-e", ".[local,psycopg]", "--group", "dev")
    session.install(SQLALCHEMY_LINES[sqlalchemy])
    session.run("python", "-c", "import sqlalchemy; print('SQLAlchemy', sqlalchemy.__version__)")
    session.run(
        "pytest",
        "-c",
        "tests/suite/pytest.ini",
        "tests/suite",
        "-p",
        "no:randomly",
        *session.posargs,
    )


@nox.session(python="3.11")
def soak(session: nox.Session) -> None:
    """The fault-injection soak for a chosen time: ``nox -s soak -- --duration 600`` (seconds)."""
    parser = argparse.ArgumentParser(prog="nox -s soak --")
    parser.add_argument("--duration", type=float, default=600.0, help="seconds (CI runs 60)")
    args, pytest_args = parser.parse_known_args(session.posargs)
    session.install("-e", ".[local,psycopg]", "--group", "dev")
    session.run(
        "pytest",
        "tests/reliability/test_soak.py",
        "-s",
        *pytest_args,
        env={"DSQL_RELIABILITY_SOAK_SECONDS": str(args.duration)},
    )


@nox.session(python="3.11")
def bench(session: nox.Session) -> None:
    """Every benchmark against its alternatives: ``nox -s bench`` (``-- --quick`` for CI)."""
    session.install("-e", ".[local,psycopg2]", "--group", "bench")
    # Amazon's dialect, the contender named by the workload benchmark; kept out of the
    # dev environment because it registers the same dialect name ("auroradsql") as ours.
    session.install("aurora-dsql-sqlalchemy==1.3.0")
    session.run("python", "benchmarks/run.py", *session.posargs)


PEER_SUITES = ("sqlalchemy", "connector")


@nox.session(python="3.11")
def peers(session: nox.Session) -> None:
    """Amazon's own suites, with Amazon's packages, against dsql-local (tests/peers/).

    ``nox -s peers`` runs aurora-dsql-sqlalchemy's tests on psycopg and psycopg2
    and the python connector's integration tests; ``-- sqlalchemy`` or
    ``-- connector`` picks one (CI runs the sqlalchemy part).
    """
    session.install("-e", ".[local]")
    # Amazon's packages stay in this session's environment: they register the same
    # dialect name ("auroradsql") as ours. The versions match the sdists whose
    # tests tests/peers/run_peers.py downloads.
    session.install(
        "aurora-dsql-sqlalchemy==1.3.0",
        "aurora-dsql-python-connector[psycopg,psycopg2,asyncpg]==0.2.7",
        # What Amazon's suites import besides their packages, and pip to fetch the sdists.
        "pytest",
        "pytest-asyncio>=1.2",
        "python-dotenv",
        "pip",
    )
    # Suite names, then "--" and pytest arguments: ``nox -s peers -- connector -- -k ssl``.
    session.run("python", "tests/peers/run_peers.py", *(session.posargs or PEER_SUITES))


@nox.session(python="3.11")
def peers_ours(session: nox.Session) -> None:
    """Amazon's aurora-dsql-sqlalchemy tests with our dialect swapped in for Amazon's.

    tests/peers/run_amazon.py puts a shim ``aurora_dsql_sqlalchemy`` (re-exporting
    ours) in place of Amazon's package and leaves out the differences docs/dialect.md
    documents, so a green run means no undocumented drop-in gap.
    """
    # No Amazon package here: the shim takes its import name.
    session.install("-e", ".[local,psycopg,psycopg2]", "pytest", "python-dotenv", "pip")
    for driver in ("psycopg", "psycopg2"):
        for suite in ("test", "pet-clinic"):
            session.run(
                "python",
                "tests/peers/run_amazon.py",
                "--dialect",
                "ours",
                "--driver",
                driver,
                "--suite",
                suite,
                "--deselect-documented",
                *session.posargs,
            )


@nox.session(python="3.11")
def lint(session: nox.Session) -> None:
    session.install("ruff")
    session.run("ruff", "check", "src", "tests", "examples", "benchmarks", "noxfile.py")
    session.run("ruff", "format", "--check", "src", "tests", "examples", "benchmarks", "noxfile.py")


@nox.session(python="3.11")
def typecheck(session: nox.Session) -> None:
    session.install("-e", ".[local,psycopg]", "--group", "dev")
    session.run("mypy")
