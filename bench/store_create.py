"""A new SQLite tracking store: MLflow's own migration vs the migrated template we copy.

Every sweep on a fresh ``out_dir`` (and every test store) starts with a new SQLite store;
``tuner.tracking.store.ensure_store`` copies a template MLflow migrated once per machine
instead of running MLflow's Alembic migrations again. This creates ``--stores`` stores each
way, alternating, in fresh subprocesses (so no engine or import is cached between them),
and prints the median wall and CPU seconds per store and their ratio.

Usage: ``python bench/store_create.py [--stores 5]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

#: One store, timed inside the process after the imports (both ways import the same)
SCRIPT = """
import sys, time, json
from mlflow import MlflowClient
from tuner.tracking.store import ensure_store
way, uri = sys.argv[1:]
wall, cpu = time.perf_counter(), time.process_time()
if way == "template":
    ensure_store(uri)
MlflowClient(tracking_uri=uri).search_experiments(max_results=1)  # first use
print(json.dumps([time.perf_counter() - wall, time.process_time() - cpu]))
"""


def one(way: str, db: Path, cache: Path) -> tuple[float, float]:
    env = {"PETL_SWEEP_CACHE": str(cache), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", SCRIPT, way, f"sqlite:///{db}"],
                         capture_output=True, text=True, check=True, env=env)  # fmt: skip
    wall, cpu = json.loads(out.stdout.strip().splitlines()[-1])
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stores", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        one("template", root / "warm.db", root / "cache")  # builds the template once
        times: dict[str, list[tuple[float, float]]] = {"migrate": [], "template": []}
        for i in range(args.stores):
            for way in times:
                times[way].append(one(way, root / f"{way}{i}.db", root / "cache"))
    med = {w: (statistics.median(t[0] for t in v), statistics.median(t[1] for t in v))
           for w, v in times.items()}  # fmt: skip
    for way, (wall, cpu) in med.items():
        print(f"{way:>8}: {wall:.3f} s wall, {cpu:.3f} s CPU a new store (median of {args.stores})")
    print(f"ratio migrate/template: {med['migrate'][0] / med['template'][0]:.1f}x wall, "
          f"{med['migrate'][1] / med['template'][1]:.1f}x CPU")  # fmt: skip


if __name__ == "__main__":
    main()
