"""The first study's whole plan through the real engine, in replay: does it hold at scale?

``petl-sweep plan --preset petl_vision_vtab1k`` is 304 studies and 9,804 grid trials. Here
the shipped table ``petl_vision_vtab1k`` replays them (``petl-sweep run --replay``): every
configuration of every study (published-grid semantics), 10 reported epochs each, 16
concurrent trials (Ray ``num_cpus`` 16, one CPU a trial: replayed trials only sleep), one
final run per study, a SQLite store. Everything but training is the real sweep: one Ray Tune
run, the multiplexing searcher, the trial logger, the tracker actor, MLflow, the leaderboard.

It measures what grows with a sweep: wall time; time per finished trial over the first and
the last 1,000 trials (tenths at ``--quick``) and their ratio; peak memory of the driver,
the tuning task (Ray Tune's controller) and the tracker actor; ``petl-sweep leaderboard``'s
time on the store; and that every trial, study and final run is in MLflow.

Usage: ``python bench/engine_scale.py [--quick] [--slots N] [--epoch-s S] [--kill-at F]
[--workdir DIR] [--out FILE]``.
``--quick`` replays 2 tasks × 16 methods (32 studies, about a tenth of the trials).
``--kill-at 0.5`` SIGKILLs the sweep (its whole process group, as a lost machine would) once
half its trials finished, then runs ``--resume``: the result adds the resume's wall time and
whether every trial finished before the kill kept its run and end time, with no trial run
twice (``tuner.sweep.recorded`` replays those Ray Tune's last save missed).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import yaml

BIN = Path(sys.executable).parent
TABLE = "petl_vision_vtab1k"
#: Ray actor and task processes retitle themselves ``ray::<Class>.<method>`` / ``ray::<fn>``
ROLES = {"tracker": "ray::BufferedTracker", "tuning": "ray::run_shared"}


def sweep_config(
    workdir: Path, quick: bool, epochs: int, slots: int, epoch_s: float = 0.0
) -> dict[str, Any]:
    """The study-000 plan as a replay sweep (``--quick``: its first 2 tasks)."""
    from tuner.config import ReplaySettings
    from tuner.replay.engine import replay_table

    table = replay_table(ReplaySettings(table=TABLE))
    tasks = list(dict.fromkeys(t for t, _ in table.studies()))
    return {
        "name": "engine_scale",
        "replay": {"table": TABLE, "epoch_s": epoch_s},
        "tasks": tasks[:2] if quick else tasks,
        "methods": ["*"],
        "out_dir": str(workdir / "results"),
        "search": {"space": "published_grid"},
        "tune": {
            "max_epochs": epochs,
            "early_stopping": False,
            "max_concurrent_trials": 8,
            "grace_period": 1,
        },
        "final": {"seeds": 1},
        "ray": {"num_cpus": slots},
        "resources": {"cpus_per_trial": 1},
    }


class PeakMemory:
    """Peak RSS of the driver and of the sweep's Ray processes by role, sampled each second."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak = pid, {"driver": 0, **{role: 0 for role in ROLES}}
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        while not self.done.wait(1.0):
            try:
                driver = psutil.Process(self.pid)
                self._see("driver", driver)
            except psutil.Error:
                continue
            # the driver's own Ray: raylet is its child, every worker the raylet's
            for proc in driver.children(recursive=True):
                try:
                    line = " ".join(proc.cmdline())
                except psutil.Error:
                    continue
                for role, title in ROLES.items():
                    if line.startswith(title):
                        self._see(role, proc)

    def _see(self, role: str, proc: psutil.Process) -> None:
        with contextlib.suppress(psutil.Error):
            self.peak[role] = max(self.peak[role], proc.memory_info().rss)

    def __enter__(self) -> PeakMemory:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.thread.join()


def _runs(db: Path) -> list[tuple[str, str, int | None, str | None, str | None]]:
    """(run id, status, end time, stage, trial id) of every run in the store."""
    if not db.exists():
        return []
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30) as conn:
            return conn.execute(
                "SELECT r.run_uuid, r.status, r.end_time, "
                "(SELECT value FROM tags WHERE run_uuid = r.run_uuid AND key = 'stage'), "
                "(SELECT value FROM tags WHERE run_uuid = r.run_uuid AND key = 'trial_id') "
                "FROM runs r"
            ).fetchall()
    except sqlite3.OperationalError:  # tables not created yet
        return []


def finished_trials(db: Path) -> dict[str, tuple[str, int | None]]:
    """trial id → (run id, end time) of every FINISHED trial run."""
    return {t: (r, end) for r, status, end, _, t in _runs(db) if t and status == "FINISHED"}


def store_counts(db: Path) -> dict[str, Any]:
    """Runs in the store by kind and status, every trial run's end time (ms), and how many
    trial ids have more than one run (a trial run twice)."""
    counts: dict[str, int] = {}
    ends, per_trial = [], {}
    for _, status, end, stage, trial in _runs(db):
        kind = "trial" if trial else (stage or "other")
        counts[f"{kind}/{status}"] = counts.get(f"{kind}/{status}", 0) + 1
        if trial:
            per_trial[trial] = per_trial.get(trial, 0) + 1
        if trial and status == "FINISHED":
            ends.append(end)
    twice = sum(n > 1 for n in per_trial.values())
    return {"counts": counts, "trial_ends_ms": sorted(ends), "trials_with_two_runs": twice}


def kill_then_resume(
    cmd: list[str], workdir: Path, proc: subprocess.Popen, at: int, memory: PeakMemory
) -> dict[str, Any]:
    """SIGKILL the sweep once ``at`` trials finished, then ``--resume`` it to the end."""
    db = workdir / "results" / "mlflow.db"
    while len(finished_trials(db)) < at:
        if proc.poll() is not None:
            raise SystemExit(f"the sweep ended ({proc.returncode}) before {at} trials finished")
        time.sleep(2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    time.sleep(2)
    kept = finished_trials(db)
    began = time.time()
    with open(workdir / "resume.log", "w") as out:
        second = subprocess.Popen([*cmd, "--resume"], stdout=out, stderr=subprocess.STDOUT,
                                  cwd=workdir, start_new_session=True)  # fmt: skip
        with PeakMemory(second.pid) as again:
            code = second.wait()
    for role, peak in again.peak.items():
        memory.peak[role] = max(memory.peak[role], peak)
    if code != 0:
        text = (workdir / "resume.log").read_text()[-4000:]
        raise SystemExit(f"the resume failed ({code}):\n{text}")
    after = finished_trials(db)
    text = (workdir / "resume.log").read_text()
    replayed = text.split("replaying ")[1].split()[0] if "replaying " in text else "0"
    return {
        "killed_after_trials": len(kept),
        "resume_wall_s": time.time() - began,
        "replayed": int(replayed),
        "finished_kept": all(after.get(t) == v for t, v in kept.items()),
    }


def per_trial_times(ends_ms: list[int], window: int) -> dict[str, float]:
    """Seconds per finished trial over the first and the last ``window`` trials."""
    first = (ends_ms[window] - ends_ms[0]) / 1000 / window
    last = (ends_ms[-1] - ends_ms[-1 - window]) / 1000 / window
    return {"window": window, "first_s": first, "last_s": last, "last_over_first": last / first}


def run(
    workdir: Path,
    quick: bool,
    epochs: int,
    slots: int,
    kill_at: float = 0.0,
    epoch_s: float = 0.0,
) -> dict[str, Any]:
    cfg = sweep_config(workdir, quick, epochs, slots, epoch_s)
    path = workdir / "sweep.yaml"
    path.write_text(yaml.safe_dump(cfg))
    from tuner.config import load_config
    from tuner.replay.engine import replay_plan

    studies = replay_plan(load_config(path))
    expected = sum(len(s.points) for s in studies)
    log = workdir / "sweep.log"
    cmd = [str(BIN / "petl-sweep"), "run", str(path), "--no-progress"]
    resumed: dict[str, Any] = {}
    started = time.time()
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=workdir,
                                start_new_session=True)  # fmt: skip
        with PeakMemory(proc.pid) as memory:
            if kill_at:
                at = max(1, int(expected * kill_at))
                resumed = kill_then_resume(cmd, workdir, proc, at, memory)
            code = 0 if kill_at else proc.wait()
    wall = time.time() - started
    if code != 0:
        raise SystemExit(f"the sweep failed ({code}):\n{log.read_text()[-4000:]}")
    db = workdir / "results" / "mlflow.db"
    store = store_counts(db)
    ends = store.pop("trial_ends_ms")
    twice = store.pop("trials_with_two_runs")
    board = workdir / "leaderboard"
    began = time.time()
    subprocess.run(
        [str(BIN / "petl-sweep"), "leaderboard", "--experiment", "engine_scale",
         "--tracking-uri", f"sqlite:///{db}", "--out", str(board), "--no-log"],
        check=True, capture_output=True, cwd=workdir,
    )  # fmt: skip
    leaderboard_s = time.time() - began
    counts = store["counts"]
    complete = (
        counts.get("trial/FINISHED", 0) == expected
        and counts.get("tune/FINISHED", 0) == len(studies)
        and counts.get("final/FINISHED", 0) == len(studies)
        and twice == 0
    )
    return {
        "command": "python bench/engine_scale.py"
        + (" --quick" if quick else "")
        + (f" --slots {slots}" if slots != 16 else "")
        + (f" --epoch-s {epoch_s:g}" if epoch_s else "")
        + (f" --kill-at {kill_at:g}" if kill_at else ""),
        "machine": f"{platform.node()}: {psutil.cpu_count()} CPUs, "
        f"{psutil.virtual_memory().total / 2**30:.0f} GiB, {platform.platform()}",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "studies": len(studies),
        "trials": expected,
        "epochs": epochs,
        "slots": slots,
        "epoch_s": epoch_s,
        "wall_s": wall,
        "per_trial": per_trial_times(ends, 1000 if not quick else len(ends) // 10),
        "peak_rss_mib": {k: v / 2**20 for k, v in memory.peak.items()},
        "leaderboard_s": leaderboard_s,
        "runs": counts,
        "all_in_mlflow": complete,
        **({"kill_and_resume": resumed} if kill_at else {}),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 tasks × 16 methods")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--slots", type=int, default=16)
    parser.add_argument(
        "--epoch-s", type=float, default=0.0,
        help="seconds each replayed epoch takes (0: trials only report; the controller sets "
        "the pace and no trial ever waits for a slot)",
    )  # fmt: skip
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument(
        "--kill-at", type=float, default=0.0,
        help="SIGKILL the sweep once this fraction of its trials finished, then --resume it",
    )  # fmt: skip
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="engine_scale-"))
    workdir.mkdir(parents=True, exist_ok=True)
    result = run(workdir.resolve(), args.quick, args.epochs, args.slots, args.kill_at, args.epoch_s)
    name = "engine_scale" + ("_quick" if args.quick else "") + ("_resume" if args.kill_at else "")
    out = args.out or Path(__file__).with_name(f"{name}.json")
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
