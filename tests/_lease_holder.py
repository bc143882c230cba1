"""A stand-in sweep driver for the lease tests: take the lease, hold it, say what happened.

``python tests/_lease_holder.py URI EXPERIMENT GO STOP TIMEOUT HEARTBEAT SETTLE`` waits for
the file GO, takes the lease, prints one JSON line per event (``held``, ``locked``,
``lost``) and holds it until the file STOP exists. Exit 0: held and released; 3: locked;
4: lost while held.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from tuner.tracking.lease import SweepLease, SweepLocked


def say(event: str, **data: object) -> None:
    print(json.dumps({"event": event, "t": time.time(), **data}), flush=True)


def main() -> int:
    uri, experiment, go, stop = sys.argv[1], sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4])
    timeout_s, heartbeat_s, settle_s = map(float, sys.argv[5:8])
    while not go.exists():
        time.sleep(0.005)
    started = time.time()
    lease = SweepLease(
        uri,
        experiment,
        timeout_s=timeout_s,
        heartbeat_s=heartbeat_s,
        settle_s=settle_s,
        on_lost=lambda reason: say("lost", reason=reason),
    )
    try:
        with lease:
            say("held", takeover=lease.takeover, took_s=time.time() - started)
            while not stop.exists():
                if lease.lost.wait(0.05):
                    return 4
    except SweepLocked as err:
        holder = err.holder
        say("locked", message=str(err), holder_pid=holder.pid, took_s=time.time() - started)
        return 3
    say("released")
    return 0


if __name__ == "__main__":
    sys.exit(main())
