"""The soak's emulator process: ``python soak_emulator.py '<LocalDSQL options as JSON>'``.

:class:`harness.soak.ControlledEmulator` runs this file as a script, so it
imports nothing but the standard library and ``sqlalchemy_dsql.local``: it
prints where the emulator listens as one JSON line, then answers one JSON
request per line on stdin (kill sessions, set the latency, read the counters)
until stdin ends.
"""

from __future__ import annotations

import json
import random
import sys
from typing import Any

from sqlalchemy_dsql.local import LocalDSQL


def serve(options: dict[str, Any]) -> None:
    """Run LocalDSQL and answer requests until stdin ends."""
    with LocalDSQL(**options) as dsql:
        banner = {
            "endpoint": dsql.endpoint,
            "host": dsql.host,
            "port": dsql.port,
            "region": dsql.region,
            "ca_file": dsql.ca_file,
            "url": dsql.url(),
        }
        print(json.dumps(banner), flush=True)
        for line in sys.stdin:
            command = json.loads(line)
            reply: dict[str, Any]
            try:
                if command["op"] == "kill":
                    if command["sessions"] is None:
                        reply = {"killed": dsql.kill()}
                    else:
                        ids = dsql.session_ids()
                        chosen = random.sample(ids, min(command["sessions"], len(ids)))
                        reply = {"killed": sum(dsql.kill(i) for i in chosen)}
                elif command["op"] == "latency":
                    dsql.set_latency(command["ms"])
                    reply = {}
                elif command["op"] == "state":
                    reply = {"totals": dsql.totals(), "open_sessions": len(dsql.session_ids())}
                else:
                    reply = {"error": f"unknown op {command['op']!r}"}
            except Exception as error:  # answer, so that the test sees it and fails
                reply = {"error": repr(error)}
            print(json.dumps(reply), flush=True)


if __name__ == "__main__":
    serve(json.loads(sys.argv[1]))
