"""The study's grid against TPE + ASHA: trial-epochs spent, accuracy reached, ties.

Side by side in one run, on the synth suite and the tiny pretrained ViT, with the same
protocol (epochs, schedule, batch) for every arm:

* **grid**: the published grid of each method (``search.space: published_grid``), every
  point run to ``max_epochs``, no early stopping: what the seed study did;
* **tpe**: Optuna TPE + ASHA with ``--fraction`` of the grid's trials per study, for each
  search seed in ``--seeds`` (the sweep's seed: sampler, trial and final training seeds);
* **warm**: the same TPE + ASHA with ``search.warm_start: true``, in the experiment of the
  first ``tpe`` seed, so each study starts from the same method's choices on the *other*
  tasks there;
* **tpe_grid**: the same TPE + ASHA budget over the published grid's *values*
  (``search.sampler: tpe`` with ``space: published_grid``), first seed: the study's curated
  values with a fraction of the grid's trials.

Per study: trial-epochs used, best validation accuracy (final epoch, as the sweep chooses)
and the trial-epochs spent until the chosen trial finished, the final test accuracy of the
retrained choice, and whether the arm ties or beats the grid under the leaderboard's
paired bootstrap on the same test set. Printed: the ratio of the grid's trial-epochs to each
arm's, and the share of studies tied or better (the issue's goal: >= 5x fewer with >= 90 %).

Usage: ``python bench/tuning_efficiency.py [--quick]``; writes JSON beside it.
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
from typing import Any

import numpy as np
import ray

from tuner.config import SweepConfig, parse_config
from tuner.leaderboard.stats import bootstrap_ties
from tuner.sweep.orchestrate import SweepResult, run_sweep
from tuner.sweep.spaces import grid_points, load_space

TASKS = ["synth/objects", "synth/textures", "synth/count", "synth/dsprites_loc"]
METHODS = ["lora", "adaptformer", "vpt_deep"]
#: --quick: one value of each key but the learning rate, so each grid is the 2 lr values
QUICK_FIXED = {"lora": {"rank": 8, "weight_decay": 1e-4},
               "adaptformer": {"bottleneck": 16, "scale": 0.1, "weight_decay": 1e-4},
               "vpt_deep": {"prompt_length": 10, "weight_decay": 1e-4}}  # fmt: skip


def sweep_config(root: Path, arm: str, seed: int, args: argparse.Namespace, **over: Any) -> Any:
    tune = {"max_epochs": args.epochs, "grace_period": args.grace, "reduction_factor": 2,
            "max_concurrent_trials": 2, "num_samples": 1}  # fmt: skip
    doc = {
        "name": f"{arm}_s{seed}", "seed": seed, "tasks": args.tasks,
        "methods": over.pop("methods", METHODS),
        "data_root": str(root / "data"), "out_dir": str(root / "out"),
        "tracking": {"uri": f"sqlite:///{root / 'mlflow.db'}", "experiment": over.pop("exp")},
        "tune": {**tune, **over.pop("tune", {})}, "search": over.pop("search", {}),
        "final": {"seeds": 1}, "resources": {"cpus_per_trial": 1}, "ray": {"num_cpus": 2},
    }  # fmt: skip
    if args.quick:
        doc["search"]["fixed"] = {m: QUICK_FIXED[m] for m in doc["methods"]}
    elif args.weight_decay is not None:  # a smaller grid: every arm at one weight decay
        doc["search"]["fixed"] = {m: {"weight_decay": args.weight_decay} for m in doc["methods"]}
    return parse_config(doc)


def grid_sizes(cfg: SweepConfig) -> dict[str, int]:
    sizes = {}
    for method in METHODS:
        space = load_space(method, "published_grid")
        fixed = cfg.search.fixed.get(method, {})
        sizes[method] = len(grid_points({k: d for k, d in space.items() if k not in fixed}))
    return sizes


def study_rows(result: SweepResult) -> dict[str, dict[str, Any]]:
    """Per study key: trial-epochs, best val, epochs until the chosen trial, test, correct."""
    finals = {f.study: f for f in result.finals}
    rows = {}
    for key, study in result.studies.items():
        ordered = sorted(study.trials, key=lambda t: t.index)
        best = study.best
        until = sum(t.epochs for t in ordered if best and t.index <= best.index)
        final = finals.get(key)
        logits, labels = final.predictions if final else (None, None)
        rows[key] = {
            "trials": len(ordered),
            "trial_epochs": sum(t.epochs for t in ordered),
            "best_val": best.val_acc if best else float("nan"),
            "epochs_to_best": until,
            "test_acc": final.test_acc if final else float("nan"),
            "correct": (logits.argmax(1) == labels).numpy() if final else None,
        }
    return rows


def compare(grid: dict[str, Any], arm: dict[str, Any]) -> dict[str, Any]:
    """Per study: the arm's ratio of trial-epochs and whether it ties or beats the grid."""
    out = {}
    for key, g in grid.items():
        a = arm[key]
        ties = bootstrap_ties({"grid": g["correct"], "arm": a["correct"]})["arm"]
        out[key] = {
            "epochs_ratio": g["trial_epochs"] / max(1, a["trial_epochs"]),
            "test_delta": a["test_acc"] - g["test_acc"],
            "tied_or_better": bool(ties["tied"]),
        }
    return out


def run_arm(cfg: SweepConfig) -> tuple[dict[str, Any], float]:
    start = time.perf_counter()
    result = run_sweep(cfg)
    return study_rows(result), time.perf_counter() - start


def tpe_arm(
    root: Path,
    args: argparse.Namespace,
    per_method: dict[str, int],
    seed: int,
    exp: str,
    search: dict[str, Any],
    name: str | None = None,
) -> tuple[dict[str, Any], float]:
    """TPE + ASHA with ``per_method`` trials per study, logged to experiment ``exp``: one
    sweep per distinct trial count (``num_samples`` is a sweep setting), so methods with the
    same budget share a sweep and its start-up."""
    groups: dict[int, list[str]] = {}
    for method, samples in per_method.items():
        groups.setdefault(samples, []).append(method)
    rows, wall = {}, 0.0
    for samples, methods in groups.items():
        cfg = sweep_config(root, f"{name or exp}_n{samples}", seed, args, exp=exp,
                           search=dict(search), tune={"num_samples": samples},
                           methods=methods)  # fmt: skip
        part, seconds = run_arm(cfg)
        rows.update(part)
        wall += seconds
    return rows, wall


def summary(name: str, grid: dict, arm: dict, cmp: dict) -> dict[str, Any]:
    grid_epochs = sum(r["trial_epochs"] for r in grid.values())
    arm_epochs = sum(r["trial_epochs"] for r in arm.values())
    tied = [c["tied_or_better"] for c in cmp.values()]
    out = {
        "arm": name,
        "trial_epochs": arm_epochs,
        "grid_trial_epochs": grid_epochs,
        "fewer_x": grid_epochs / max(1, arm_epochs),
        "tied_or_better_share": float(np.mean(tied)),
        "mean_test_delta": float(np.mean([c["test_delta"] for c in cmp.values()])),
        "epochs_to_best": sum(r["epochs_to_best"] for r in arm.values()),
    }
    print(
        f"{name:8s} {arm_epochs:6d} trial-epochs ({out['fewer_x']:.1f}x fewer than the grid), "
        f"tied or better on {out['tied_or_better_share']:.0%} of {len(tied)} studies, "
        f"test delta {out['mean_test_delta']:+.3f}, epochs until the chosen trial "
        f"{out['epochs_to_best']}"
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", nargs="+", default=TASKS)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--grace", type=int, default=1)
    parser.add_argument("--fraction", type=float, default=0.25)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: 2 tasks, lr grids, 2 epochs, 1 seed"
    )
    parser.add_argument(
        "--weight-decay", type=float, help="fix weight decay in every arm (halves the grid)"
    )
    parser.add_argument("--keep", type=Path, help="keep the MLflow store and results here")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_suffix(".json"))
    args = parser.parse_args()
    if args.quick:  # a smoke run of every arm: its ratios are not the bench's figures
        args.tasks, args.epochs, args.seeds, args.fraction = args.tasks[:2], 2, [0], 0.5
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        grid_cfg = sweep_config(root, "grid", 0, args, exp="grid",
                                search={"space": "published_grid"},
                                tune={"early_stopping": False})  # fmt: skip
        sizes = grid_sizes(grid_cfg)
        grid, grid_s = run_arm(grid_cfg)
        per_method = {m: max(1, round(n * args.fraction)) for m, n in sizes.items()}
        arms: dict[str, tuple[dict, float]] = {}
        for seed in args.seeds:
            arms[f"tpe_s{seed}"] = tpe_arm(root, args, per_method, seed, f"tpe_s{seed}", {})
        first = args.seeds[0]  # warm start reads the first TPE arm's studies
        arms["warm"] = tpe_arm(root, args, per_method, first, f"tpe_s{first}",
                               {"warm_start": True}, name="warm")  # fmt: skip
        arms["tpe_grid"] = tpe_arm(root, args, per_method, first, "tpe_grid",
                                   {"space": "published_grid", "sampler": "tpe"})  # fmt: skip
        ray.shutdown()
    print(f"grid sizes {sizes}; {len(grid)} studies; grid arm {grid_s:.0f} s")
    results = {name: summary(name, grid, rows, compare(grid, rows)) for name, (rows, _) in
               arms.items()}  # fmt: skip
    per_study = {
        key: {"grid": {k: v for k, v in g.items() if k != "correct"},
              **{name: {k: v for k, v in rows[key].items() if k != "correct"}
                 for name, (rows, _) in arms.items()}}
        for key, g in grid.items()
    }  # fmt: skip
    report = {
        "grid_sizes": sizes, "epochs": args.epochs, "grace": args.grace,
        "fraction": args.fraction, "seeds": args.seeds, "tasks": args.tasks,
        "weight_decay": args.weight_decay,
        "methods": METHODS, "quick": args.quick, "arms": results, "per_study": per_study,
        "wall_s": {"grid": grid_s, **{n: w for n, (_, w) in arms.items()}},
        "machine": f"{platform.node()} ({os.cpu_count()} CPUs)",
        "date": time.strftime("%Y-%m-%d"),
        "command": "python bench/tuning_efficiency.py " + " ".join(sys.argv[1:]),
    }  # fmt: skip
    args.out.write_text(json.dumps(report, indent=2, default=float) + "\n")


if __name__ == "__main__":
    main()
