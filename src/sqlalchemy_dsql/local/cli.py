"""``dsql-local``: run the Aurora DSQL emulator in the foreground until Ctrl-C.

``dsql-local`` prints the endpoint, the CA file and the environment a client
needs; ``dsql-local token`` prints an IAM token for the default endpoint and
the fixed test credentials (for psql: ``PGPASSWORD=$(dsql-local token)``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import sys
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path

from . import DEFAULT_CLUSTER_ID, DEFAULT_REGION, LocalDSQL, LoggedStatement
from .limits import Limits
from .server import PortInUse


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dsql-local", description="A local Aurora DSQL emulator on a real PostgreSQL 16."
    )
    parser.add_argument("command", nargs="?", choices=("serve", "token"), default="serve")
    parser.add_argument("--port", type=int, default=5432, help="port to listen on (0: any free)")
    parser.add_argument("--cluster-id", default=DEFAULT_CLUSTER_ID)
    parser.add_argument("--region", default=DEFAULT_REGION)
    parser.add_argument("--user", default="admin", help="for 'token': the database role")
    parser.add_argument("--backend-url", help="use this PostgreSQL 16 instead of an embedded one")
    parser.add_argument("--data-dir", help="keep the embedded backend's data here")
    parser.add_argument(
        "--auth",
        choices=("iam", "none"),
        default="iam",
        help="'none' accepts any password: for debugging only, DSQL never does this",
    )
    for limit in fields(Limits):
        parser.add_argument(
            "--" + limit.name.replace("_", "-"),
            type=type(limit.default),
            default=limit.default,
            metavar=limit.metadata["metavar"],
            help=f"{limit.metadata['help']} (default: %(default)s)",
        )
    parser.add_argument(
        "--latency-ms", type=float, default=0.0, help="one-way delay per message batch"
    )
    parser.add_argument(
        "--no-second-opinion", action="store_true", help="do not consult dsql-lint on DDL"
    )
    parser.add_argument("--log-statements", action="store_true", help="print each statement")
    parser.add_argument(
        "--ready-file",
        metavar="PATH",
        help="once listening, write endpoint, host, port, region, ca_file and pid here as JSON",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        dsql = _emulator(args)
    except ValueError as exc:
        parser.error(str(exc))
    if args.command == "token":
        print(dsql.token(args.user))
        return 0
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("sqlalchemy_dsql").setLevel(logging.INFO)
    try:
        dsql.start()
    except PortInUse:
        print(
            f"dsql-local: port {args.port} is in use (another dsql-local or a PostgreSQL?): "
            f"choose another with --port, or --port 0 for any free one",
            file=sys.stderr,
        )
        return 2
    auth = "IAM tokens, test credentials below" if args.auth == "iam" else "NONE (debug only)"
    token_command = "dsql-local token"
    if args.cluster_id != DEFAULT_CLUSTER_ID or args.region != DEFAULT_REGION:
        token_command += f" --cluster-id {args.cluster_id} --region {args.region}"
    try:
        if args.ready_file is not None:
            _write_ready_file(Path(args.ready_file), dsql)
        print(_banner(dsql, auth, token_command), flush=True)
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        with contextlib.suppress(KeyboardInterrupt):
            stop.wait()
    finally:
        dsql.stop()
    return 0


def _emulator(args: argparse.Namespace) -> LocalDSQL:
    return LocalDSQL(
        port=args.port,
        cluster_id=args.cluster_id,
        region=args.region,
        backend_url=args.backend_url,
        data_dir=args.data_dir,
        authenticate=args.auth == "iam",
        **{limit.name: getattr(args, limit.name) for limit in fields(Limits)},
        latency_ms=args.latency_ms,
        second_opinion=not args.no_second_opinion,
        statement_log=_print_statement if args.log_statements else False,
    )


def _banner(dsql: LocalDSQL, auth: str, token_command: str) -> str:
    """What a person needs: where it listens, and the environment a client reads."""
    lines = [
        "dsql-local is ready",
        f"  endpoint  {dsql.endpoint} (dial {dsql.host}:{dsql.port})",
        f"  region    {dsql.region}",
        f"  CA file   {dsql.ca_file}",
        f"  auth      {auth}",
        "",
        "# the environment sqlalchemy_dsql reads (the key pair is a fixed, fake test key)",
        *(f"export {name}={value}" for name, value in dsql.environ().items()),
        "",
        f'# then: create_async_engine("auroradsql+asyncpg://admin@{dsql.endpoint}/postgres")',
        f"# psql: PGHOST={dsql.endpoint} PGUSER=admin PGDATABASE=postgres "
        f"PGPASSWORD=$({token_command}) psql",
        "",
        "Ctrl-C to stop.",
    ]
    return "\n".join(lines)


def _write_ready_file(path: Path, dsql: LocalDSQL) -> None:
    """Where the emulator listens, for programs (``process.spawn``); the banner is for people."""
    ready = {
        "endpoint": dsql.endpoint,
        "host": dsql.host,
        "port": dsql.port,
        "region": dsql.region,
        "ca_file": dsql.ca_file,
        "pid": os.getpid(),
    }
    # Written aside and renamed, so that a reader never sees half a file.
    with tempfile.NamedTemporaryFile(
        "w", dir=path.parent, prefix=".dsql-local-ready-", delete=False
    ) as partial:
        json.dump(ready, partial)
    os.replace(partial.name, path)


def _print_statement(entry: LoggedStatement) -> None:
    verdict = "ok" if entry.rejection is None else f"REFUSED {entry.rejection.sqlstate}"
    print(f"[session {entry.session_id} {entry.user}] {verdict}: {entry.sql}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
