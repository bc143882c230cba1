"""Why full fine-tuning wins the quickstart although PETL wins VTAB-1k: one cheap probe.

The quickstart's leaderboard puts full fine-tuning on top (64.1 vs LoRA 57.5 flat), while the
first study on ViT-B/16 finds the opposite. Two things differ most between the testbeds: how
many images a task trains on relative to the model's capacity (overfitting is what PETL's
small updates protect against), and how good the frozen features are (PETL can only re-use
them). This trains full and LoRA on two synthetic tasks with a small lr grid, picking each
lr on validation and reporting test, under three conditions: the quickstart's 800 training
images, 50 of them (``task@50``: far fewer images per parameter), and 800 on a randomly
initialised backbone (no pretrained features to re-use). A few minutes on two CPU cores::

    .venv/bin/python bench/testbed_gap.py --data-root /tmp/gap_data [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

from tuner.training.settings import TrainSettings
from tuner.training.spec import TrialSpec
from tuner.training.trainer import Trainer

TASKS = ("synth/objects", "synth/count")
METHODS = ("full", "lora")
#: The usual lr of each (full fine-tuning moves every weight: 10x lower); --lrs searches a grid
LRS = {"full": (1e-3,), "lora": (1e-2,)}
CONDITIONS = {"800 images": ("", True), "50 images": ("@50", True),
              "800, random init": ("", False)}  # fmt: skip


def run_one(task: str, method: str, lr: float, pretrained: bool, args: Any) -> dict[str, float]:
    spec = TrialSpec(task=task, method=method, hp={"lr": lr, "weight_decay": 1e-4},
                     epochs=args.epochs, train=TrainSettings(pretrained=pretrained),
                     data_root=str(args.data_root), threads=args.threads, seed=0)  # fmt: skip
    trainer = Trainer(spec)
    history = list(trainer.epochs())
    return {"val": history[-1]["val/acc"], "test": trainer.evaluate("test")}


def measure(args: Any) -> dict[str, Any]:
    """Test accuracy (lr picked on val) per condition × task × method, and the means."""
    table: dict[str, dict[str, dict[str, float]]] = {}
    for condition in args.conditions:
        suffix, pretrained = CONDITIONS[condition]
        for task in args.tasks:
            for method in METHODS:
                runs = []
                for lr in args.lrs or LRS[method]:
                    runs.append(run_one(task + suffix, method, lr, pretrained, args))
                    print(f"{condition}, {task}, {method}, lr {lr}: {runs[-1]}", flush=True)
                best = max(runs, key=lambda r: r["val"])
                table.setdefault(condition, {}).setdefault(method, {})[task] = best["test"]
    means = {c: {m: sum(t.values()) / len(t) for m, t in ms.items()} for c, ms in table.items()}
    return {"test_acc": table, "mean_test_acc": means}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", type=Path, default=Path("data"))
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--tasks", nargs="+", default=list(TASKS))
    parser.add_argument("--lrs", nargs="+", type=float, default=None)
    parser.add_argument("--conditions", nargs="+", default=list(CONDITIONS),
                        choices=list(CONDITIONS))  # fmt: skip
    args = parser.parse_args()
    started = time.perf_counter()
    result = measure(args)
    result.update(seconds=round(time.perf_counter() - started, 1), machine=platform.node(),
                  epochs=args.epochs, lrs=args.lrs or LRS, tasks=args.tasks)  # fmt: skip
    for condition, means in result["mean_test_acc"].items():
        shown = ", ".join(f"{m} {100 * a:.1f}" for m, a in means.items())
        gap = 100 * (means["full"] - means["lora"])
        print(f"{condition:18s} {shown}   (gap full - lora {gap:+.1f})")
    print(f"{result['seconds']} s")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
