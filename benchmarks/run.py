"""Every benchmark, one after another, then one report: what ``uv run nox -s bench`` runs.

Each benchmark runs in a process of its own and writes its Markdown table,
PNG chart and headline figures (JSON); this script then writes ``REPORT.md``
beside them: a summary of every headline figure and target, followed by each
benchmark's full report. A benchmark that fails (a contender that cannot
connect, a unit of work that errs) stops the run with a non-zero exit.

* ``uv run nox -s bench``: the full run, about 20 minutes on 2 cores, into
  ``benchmarks/results/`` (the figures the README quotes);
* ``uv run nox -s bench -- --quick``: every benchmark and every contender with
  few samples, in a few minutes, into ``benchmarks/results-quick/`` (not
  committed): what CI runs to show that all of them still work. Its figures
  are too short to quote.

``--only workload token_connect`` runs a subset; the report still shows the
other benchmarks' results found in the directory, marked as from an earlier run
(``--report-only`` runs nothing and rebuilds the report from them).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

from _common import RESULTS, machine

HERE = Path(__file__).parent
QUICK_RESULTS = HERE / "results-quick"

# name: (full-run arguments, quick-run arguments)
BENCHMARKS: dict[str, tuple[str, str]] = {
    "workload": ("--rounds 3 --seconds 6", "--rounds 1 --seconds 1 --profile-seconds 1"),
    "token_connect": (
        "",
        "--rounds 2 --token-samples 100 --slow-token-samples 4 --connects 20 --warmup 2",
    ),
    "retry_batch": (
        "--rounds 2",
        "--rounds 1 --skip-sweep --tasks 10 --increments 3 --rows 5000 --batch-sizes 250",
    ),
    "proxy_latency": ("", "--rounds 2000 --batches 2"),
    "conflicts": ("--rounds 20", "--rounds 2"),
    "concurrency": ("", "--tasks 500 --waiters 100"),
}


def _run(name: str, arguments: list[str], results: Path) -> float:
    command = [sys.executable, str(HERE / f"{name}.py"), *arguments, "--results", str(results)]
    print(f"\n=== {name}: {' '.join(command[1:])}", flush=True)
    started = time.perf_counter()
    finished = subprocess.run(command, check=False)
    if finished.returncode != 0:
        raise SystemExit(f"benchmark {name} failed with exit code {finished.returncode}")
    return time.perf_counter() - started


def _demoted(markdown: str) -> str:
    """One heading level down, so that each report nests under the combined one."""
    return re.sub(r"^(#+) ", lambda m: "#" + m[1] + " ", markdown, flags=re.MULTILINE)


def _report(results: Path, seconds: dict[str, float], quick: bool) -> str:
    present = [name for name in BENCHMARKS if name in seconds]
    earlier = [n for n in BENCHMARKS if n not in present and (results / f"{n}.md").exists()]
    lines = [
        "# sqlalchemy-dsql benchmarks",
        "",
        "`uv run nox -s bench"
        + (" -- --quick`" if quick else "`")
        + (" (quick mode: too few samples to quote)." if quick else "."),
        "",
        machine(["sqlalchemy-dsql", "sqlalchemy", "asyncpg"]),
        "",
        "## Summary",
        "",
        "| benchmark | figure | value | target | verdict |",
        "|---|---|---|---|---|",
    ]
    for name in [n for n in present + earlier if (results / f"{n}.json").exists()]:
        for headline in json.loads((results / f"{name}.json").read_text()):
            verdict = f"**{headline['verdict']}**" if headline["verdict"] else ""
            lines.append(
                f"| [{name}](#{name}) | {headline['figure']} | {headline['value']} | "
                f"{headline['target']} | {verdict} |"
            )
    if seconds:
        lines += ["", "Run time: " + ", ".join(f"{n} {s:.0f} s" for n, s in seconds.items()) + "."]
    if earlier:
        lines += [
            "",
            ("Not run this time, shown" if seconds else "Rebuilt (`--report-only`)")
            + " from the results in this directory, each naming the command that produced it: "
            + ", ".join(f"[{name}](#{name})" for name in earlier)
            + ". A report without a headline file is not in the summary.",
        ]
    for name in present + earlier:
        lines += [
            "",
            f'<a id="{name}"></a>',
            "",
            _demoted((results / f"{name}.md").read_text()).strip(),
            "",
            f"![{name}]({name}.png)",
        ]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="few samples, for CI")
    parser.add_argument("--only", nargs="+", choices=list(BENCHMARKS), default=list(BENCHMARKS))
    parser.add_argument(
        "--report-only", action="store_true", help="run nothing; rebuild REPORT.md from results"
    )
    args = parser.parse_args()
    results = QUICK_RESULTS if args.quick else RESULTS
    seconds = {}
    for name in [] if args.report_only else args.only:
        full, quick = BENCHMARKS[name]
        seconds[name] = _run(name, (quick if args.quick else full).split(), results)
    report = _report(results, seconds, args.quick)
    (results / "REPORT.md").write_text(report)
    print("\n" + report.split("\n<a id=")[0])
    print(f"Written: {results / 'REPORT.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
