"""What the sweep adds to one trial: Ray Tune, reporting, checkpoints, the MLflow callback.

Side by side in one run, same trial spec (task, method, hyper-parameters, seed, epochs,
threads), the same data already decoded:

* plain: ``Trainer`` in a loop, every epoch trained and evaluated (what a script would do);
* sweep: a one-study, one-trial sweep (``run_sweep``, ASHA unable to stop it, no final
  stage work counted): the trial's own wall time as its MLflow run records it (start of the
  trial to its last report), and the study's (its opening to its summary).

Ratios > 1 are overhead. Usage: ``python bench/overhead.py [--epochs 12] [--quick]``; writes
``bench/overhead.json``. The issue's goal for the trial ratio is <= 1.05.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import ray

from tuner.config import parse_config
from tuner.sweep.orchestrate import run_sweep
from tuner.sweep.specs import trial_spec
from tuner.tracking.client import TrackingService
from tuner.tracking.names import PARENT_RUN_TAG
from tuner.training.trainer import Trainer

HP = {"lr": 3e-3, "weight_decay": 1e-4, "rank": 8}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--task", default="synth/count")
    parser.add_argument("--method", default="lora")
    parser.add_argument("--quick", action="store_true", help="6 epochs")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_suffix(".json"))
    args = parser.parse_args()
    epochs = 6 if args.quick else args.epochs
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        cfg = parse_config(
            {
                "name": "overhead", "tasks": [args.task], "methods": [args.method],
                "data_root": str(root / "data"), "out_dir": str(root / "out"),
                "tune": {"num_samples": 1, "max_epochs": epochs, "grace_period": epochs,
                         "max_concurrent_trials": 1},
                "search": {"fixed": {args.method: HP}},
                "final": {"seeds": 1, "epochs": 1},
                "resources": {"cpus_per_trial": 2}, "ray": {"num_cpus": 2},
            }
        )  # fmt: skip
        spec = trial_spec(cfg, args.task, args.method, dict(HP), "tune", cfg.seed)
        Trainer(spec)  # decode the data once, for both arms
        start = time.perf_counter()
        trainer = Trainer(spec)
        history = list(trainer.epochs())
        plain = time.perf_counter() - start
        in_epochs = sum(h["epoch_time_s"] for h in history)

        start = time.perf_counter()
        result = run_sweep(cfg)
        sweep_wall = time.perf_counter() - start
        ray.shutdown()
        (study,) = result.studies.values()
        tracker = TrackingService(cfg.tracking_uri, cfg.experiment, create=False)
        (trial,) = [r for r in tracker.search() if PARENT_RUN_TAG in r["tags"]]
        trial_wall = (trial["end_time"] - trial["start_time"]) / 1000
        parts = {
            name: sum(m.value for m in tracker.client.get_metric_history(trial["run_id"], name))
            for name in ("epoch_time_s", "eval_time_s", "checkpoint_s", "trial_setup_s")
        }
    figures = {
        "task": args.task, "method": args.method, "epochs": epochs, "hp": HP,
        "plain_s": round(plain, 2), "plain_in_epochs_s": round(in_epochs, 2),
        "trial_s": round(trial_wall, 2), "study_s": round(study.wall_s, 2),
        "sweep_s": round(sweep_wall, 2),
        # the trial's wall time, taken apart (seconds): Trainer construction in the actor,
        # training epochs, val passes, checkpoints, and the rest (actor start, reporting, the
        # wait between the last report and the run's end)
        "trial_breakdown": {
            "setup_s": round(parts["trial_setup_s"], 2),
            "epochs_s": round(parts["epoch_time_s"], 2),
            "val_s": round(parts["eval_time_s"], 2),
            "checkpoint_s": round(parts["checkpoint_s"], 2),
            "rest_s": round(trial_wall - sum(parts.values()), 2),
        },
        "study_setup_s": round(study.setup_s, 2),
        "trial_over_plain": round(trial_wall / plain, 3),
        "study_over_plain": round(study.wall_s / plain, 3),
        "machine": f"{platform.node()} ({os.cpu_count()} CPUs)",
        "date": time.strftime("%Y-%m-%d"),
        "command": "python bench/overhead.py " + " ".join(sys.argv[1:]),
    }  # fmt: skip
    args.out.write_text(json.dumps(figures, indent=2) + "\n")
    print(
        f"{args.method} on {args.task}, {epochs} epochs: plain {plain:.1f} s "
        f"({in_epochs:.1f} s in epochs); under the sweep the trial takes {trial_wall:.1f} s "
        f"({figures['trial_over_plain']}x), its study {study.wall_s:.1f} s "
        f"({figures['study_over_plain']}x); goal for the trial <= 1.05x\n"
        f"trial breakdown: {figures['trial_breakdown']}; plain: construction "
        f"{plain - in_epochs:.1f} s + epochs {in_epochs:.1f} s; opening the study "
        f"{study.setup_s:.1f} s; the sweep end to end {sweep_wall:.1f} s"
    )


if __name__ == "__main__":
    main()
