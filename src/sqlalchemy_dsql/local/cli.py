"""``dsql-local``: run the Aurora DSQL emulator in the foreground until Ctrl-C.

``dsql-local`` prints the endpoint, the CA file and the environment a client
needs; ``dsql-local token`` prints an IAM token for the default endpoint and
the fixed test credentials (for psql: ``PGPASSWORD=$(dsql-local token)``).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import sys
import threading
from collections.abc import Sequence

from . import DEFAULT_CLUSTER_ID, DEFAULT_REGION, LocalDSQL, LoggedStatement


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
    parser.add_argument("--max-connection-age", type=float, default=3600.0, metavar="SECONDS")
    parser.add_argument("--max-transaction-age", type=float, default=300.0, metavar="SECONDS")
    parser.add_argument("--max-rows-per-transaction", type=int, default=3000, metavar="ROWS")
    parser.add_argument("--max-connections", type=int, default=10_000)
    parser.add_argument("--connections-per-second", type=float, default=100.0)
    parser.add_argument("--connection-burst", type=int, default=1000)
    parser.add_argument(
        "--lock-timeout-ms",
        type=int,
        default=50,
        help="a lock wait this long becomes an OC000 conflict (0: wait like PostgreSQL)",
    )
    parser.add_argument(
        "--latency-ms", type=float, default=0.0, help="one-way delay per message batch"
    )
    parser.add_argument(
        "--no-second-opinion", action="store_true", help="do not consult dsql-lint on DDL"
    )
    parser.add_argument("--log-statements", action="store_true", help="print each statement")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    dsql = LocalDSQL(
        port=args.port,
        cluster_id=args.cluster_id,
        region=args.region,
        backend_url=args.backend_url,
        data_dir=args.data_dir,
        authenticate=args.auth == "iam",
        max_connection_age=args.max_connection_age,
        max_transaction_age=args.max_transaction_age,
        max_rows_per_transaction=args.max_rows_per_transaction,
        max_connections=args.max_connections,
        connections_per_second=args.connections_per_second,
        connection_burst=args.connection_burst,
        lock_timeout_ms=args.lock_timeout_ms,
        latency_ms=args.latency_ms,
        second_opinion=not args.no_second_opinion,
        statement_log=_print_statement if args.log_statements else False,
    )
    if args.command == "token":
        print(dsql.token(args.user))
        return 0
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("sqlalchemy_dsql").setLevel(logging.INFO)
    dsql.start()
    auth = "IAM tokens, test credentials below" if args.auth == "iam" else "NONE (debug only)"
    token_command = "dsql-local token"
    if args.cluster_id != DEFAULT_CLUSTER_ID or args.region != DEFAULT_REGION:
        token_command += f" --cluster-id {args.cluster_id} --region {args.region}"
    try:
        print(
            f"dsql-local is ready\n"
            f"  endpoint  {dsql.endpoint} (dial {dsql.host}:{dsql.port})\n"
            f"  region    {dsql.region}\n"
            f"  CA file   {dsql.ca_file}\n"
            f"  auth      {auth}\n"
            f"\n# environment for clients (the key pair is a fixed, fake test key)\n"
            f"export AWS_ACCESS_KEY_ID={dsql.credentials.access_key}\n"
            f"export AWS_SECRET_ACCESS_KEY={dsql.credentials.secret_key}\n"
            f"export AWS_REGION={dsql.region}\n"
            f"export DSQL_LOCAL_ENDPOINT={dsql.endpoint}\n"
            f"export PGHOST={dsql.host} PGPORT={dsql.port} PGUSER=admin PGDATABASE=postgres\n"
            f"export PGSSLMODE=verify-full PGSSLROOTCERT={dsql.ca_file}\n"
            f"# psql: PGPASSWORD=$({token_command}) psql\n"
            f"\nCtrl-C to stop.",
            flush=True,
        )
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        with contextlib.suppress(KeyboardInterrupt):
            stop.wait()
    finally:
        dsql.stop()
    return 0


def _print_statement(entry: LoggedStatement) -> None:
    verdict = "ok" if entry.rejection is None else f"REFUSED {entry.rejection.sqlstate}"
    print(f"[session {entry.session_id} {entry.user}] {verdict}: {entry.sql}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
