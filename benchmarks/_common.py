"""What every benchmark here shares: where results go, the machine line, statistics, CPU meters."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import ssl
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import psutil

from sqlalchemy_dsql.local.process import SpawnedDSQL
from sqlalchemy_dsql.local.tokens import TEST_ACCESS_KEY_ID, TEST_SECRET_ACCESS_KEY

RESULTS = Path(__file__).parent / "results"


@dataclass(frozen=True)
class Headline:
    """One figure for the combined report's summary table."""

    figure: str
    value: str
    target: str = ""
    verdict: str = ""


def results_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--results",
        type=Path,
        default=RESULTS,
        help="directory for the Markdown table, PNG chart and headline JSON",
    )


def write_results(
    directory: Path, name: str, report: str, headlines: Sequence[Headline]
) -> tuple[Path, Path]:
    """Write ``<name>.md`` and ``<name>.json``; return the .md path and the .png path to draw."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{name}.md").write_text(report)
    (directory / f"{name}.json").write_text(
        json.dumps([asdict(h) for h in headlines], indent=2) + "\n"
    )
    return directory / f"{name}.md", directory / f"{name}.png"


def command_line(script: str) -> str:
    return " ".join([f"python benchmarks/{script}", *sys.argv[1:]])


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def machine(libraries: Sequence[str]) -> str:
    """The line every report starts with: hardware, OS, Python and library versions."""
    installed = ", ".join(f"{name} {version(name)}" for name in libraries)
    return (
        f"Machine: {platform.machine()}, {cpu_model()}, {os.cpu_count()} CPUs, "
        f"{platform.system()} {platform.release()}. Python {platform.python_version()}. "
        f"Libraries: {installed}."
    )


def percentile(samples: Sequence[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def spread(values: Sequence[float], digits: int = 1) -> str:
    """``median (min-max)`` of per-round figures: the spread the reports show."""
    middle = statistics.median(values)
    if len(values) == 1:
        return f"{middle:,.{digits}f}"
    return f"{middle:,.{digits}f} ({min(values):,.{digits}f}-{max(values):,.{digits}f})"


class PinnedHostname(ssl.SSLContext):
    """Checks the server's certificate against ``verify_host``, whatever address was dialled."""

    verify_host: str

    def wrap_bio(self, *args: Any, **kwargs: Any) -> ssl.SSLObject:
        kwargs["server_hostname"] = self.verify_host
        return super().wrap_bio(*args, **kwargs)


def tls_like_the_engine(ca_file: str, endpoint: str) -> ssl.SSLContext:
    """verify-full against the DSQL endpoint's name while dialling the emulator's address."""
    context = PinnedHostname(ssl.PROTOCOL_TLS_CLIENT)
    context.verify_host = endpoint
    context.check_hostname = True
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_verify_locations(cafile=ca_file)
    return context


def use_test_credentials_from_environment() -> None:
    """Amazon's connector builds a default ``boto3.Session()`` per token: point it at the test keys.

    A profile or session token in the environment would change which
    credentials that session picks, so they are dropped in this process.
    """
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
        os.environ.pop(name, None)
    os.environ["AWS_ACCESS_KEY_ID"] = TEST_ACCESS_KEY_ID
    os.environ["AWS_SECRET_ACCESS_KEY"] = TEST_SECRET_ACCESS_KEY


class CPUMeter:
    """CPU seconds of this process, the spawned emulator's proxy and its PostgreSQL backend."""

    def __init__(self, dsql: SpawnedDSQL, data_dir: Path) -> None:
        self.proxy = psutil.Process(dsql.pid)
        postmaster_pid = int((data_dir / "postmaster.pid").read_text().splitlines()[0])
        self.postmaster = psutil.Process(postmaster_pid)

    def _backend(self) -> float:
        total = float(sum(self.postmaster.cpu_times()[:2]))
        for child in self.postmaster.children(recursive=True):
            with contextlib.suppress(psutil.NoSuchProcess):
                total += sum(child.cpu_times()[:2])
        return total

    def read(self) -> dict[str, float]:
        return {
            "client": time.process_time(),
            "proxy": sum(self.proxy.cpu_times()[:2]),
            "backend": self._backend(),
        }


def claim_auroradsql_psycopg2(module: str, cls: str) -> None:
    """Make ``auroradsql+psycopg2`` mean ``module.cls`` in this process.

    Amazon's package, installed beside ours for its contender, registers the
    same dialect name; each contender claims it before making its engine.
    """
    from sqlalchemy.dialects import registry

    registry.register("auroradsql.psycopg2", module, cls)


def amazon_engine(dsql: Any, pool_size: int, **engine_kwargs: Any) -> Any:
    """Amazon's ``create_dsql_engine`` (psycopg2) on the emulator ``dsql``."""
    from aurora_dsql_sqlalchemy import create_dsql_engine

    claim_auroradsql_psycopg2("aurora_dsql_sqlalchemy.psycopg2", "AuroraDSQLDialect_psycopg2")
    engine = create_dsql_engine(
        host=dsql.endpoint,
        user="admin",
        driver="psycopg2",
        sslrootcert=dsql.ca_file,
        pool_size=pool_size,
        max_overflow=0,
        connect_args={"hostaddr": dsql.host, "port": dsql.port, "region": dsql.region},
        **engine_kwargs,
    )
    if not type(engine.dialect).__module__.startswith("aurora_dsql_sqlalchemy"):
        raise RuntimeError(f"Amazon's engine got {type(engine.dialect)}, not Amazon's dialect")
    return engine
