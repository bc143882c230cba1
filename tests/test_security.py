"""What a sweep exposes on the machine it runs on: a local Ray listens on loopback only."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

PROBE = textwrap.dedent(
    """
    import json, sys, time
    import psutil, ray
    from tuner.config import parse_config
    from tuner.sweep.orchestrate import init_ray

    cfg = parse_config({"name": "loopback", "tasks": ["synth/count"], "methods": ["linear"],
                        "out_dir": sys.argv[1], "ray": {"num_cpus": 1}})
    init_ray(cfg)
    ray.get(ray.remote(lambda: 1).remote())  # a worker process is up too
    time.sleep(2)  # agents bind a moment after start
    me = psutil.Process()
    listening = []
    for proc in [me, *me.children(recursive=True)]:
        try:
            for conn in proc.net_connections(kind="inet"):
                if conn.status == psutil.CONN_LISTEN:
                    listening.append([proc.name(), conn.laddr.ip, conn.laddr.port])
        except psutil.Error:
            pass
    print(json.dumps(listening))
    ray.shutdown()
    """
)
LOOPBACK = {"127.0.0.1", "::1", "::ffff:127.0.0.1"}


def test_a_local_sweep_ray_listens_on_loopback_only(tmp_path):
    """Ray's GCS, raylet, agents and workers would otherwise listen on every interface (and
    the agents on the machine's address): a laptop sweep must not be reachable from the LAN."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(tmp_path)],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    listening = json.loads(out.stdout.strip().splitlines()[-1])
    names = {name for name, _, _ in listening}
    assert {"gcs_server", "raylet"} <= names, listening  # the probe saw Ray's own servers
    exposed = [entry for entry in listening if entry[1] not in LOOPBACK]
    assert not exposed, exposed
