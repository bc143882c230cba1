"""What a trial checkpoint costs: bytes and seconds for ``full`` and ``lora`` on ViT-B/16.

Each method's ``Trainer`` on ViT-B/16 (random init; 16 random 224-px images, so the AdamW
moments exist) writes the checkpoint a trial writes (``Trainer.save``: trainable tensors,
optimiser, schedule, RNG; never a frozen backbone) into a temporary folder, ``--repeats``
times. Printed side by side: bytes, median seconds, and the share of trial time spent
checkpointing under the old rule (every epoch) and the new default (every 120 s of
training), for an epoch time given by ``--epoch-s`` (default 5 s; pass what
``bench/gpu_throughput.py`` measured on your GPU).

Usage: ``python bench/checkpoint_cost.py [--quick] [--epoch-s 5]``; writes JSON beside it.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

# bench/ scripts run as files, so their folder is on sys.path: share the fake task
from gpu_throughput import TASK, fake_task

from tuner.sweep.checkpoints import CheckpointPolicy
from tuner.training.settings import TrainSettings
from tuner.training.spec import TrialSpec
from tuner.training.trainer import Trainer


def checkpoint_cost(method: str, backbone: str, repeats: int) -> dict[str, Any]:
    spec = TrialSpec(
        task=TASK, method=method, hp={"lr": 1e-3}, backbone=backbone,
        train=TrainSettings(pretrained=False, batch_size=16), epochs=2,
        data_root="/nonexistent", threads=2,
    )  # fmt: skip
    size = 224 if "224" in backbone else 32
    trainer = Trainer(spec, data=fake_task(16, size, torch.device("cpu")))
    trainer.train_epoch()  # one step: the optimiser's state exists, as in a real trial
    seconds, size_bytes = [], 0
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(repeats):
            start = time.perf_counter()
            path = trainer.save(Path(tmp))
            seconds.append(time.perf_counter() - start)
            size_bytes = path.stat().st_size
    return {
        "method": method,
        "trainable_params": trainer.trainable,
        "bytes": size_bytes,
        "save_s": statistics.median(seconds),
    }


def shares(save_s: float, epoch_s: float, policy: CheckpointPolicy, epochs: int) -> float:
    """Share of a trial's time spent checkpointing under ``policy`` (epochs of ``epoch_s``)."""
    writes, since = 0, 0.0
    for epoch in range(1, epochs + 1):
        since += epoch_s
        if policy.due(epoch, since, epoch == epochs):
            writes, since = writes + 1, 0.0
    return writes * save_s / (epochs * epoch_s + writes * save_s)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="vit_base_patch16_224")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--epoch-s", type=float, default=5.0)
    parser.add_argument("--epochs", type=int, default=100, help="epochs of the trial modelled")
    parser.add_argument("--quick", action="store_true", help="2 repeats")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_suffix(".json"))
    args = parser.parse_args()
    repeats = 2 if args.quick else args.repeats
    old, new = CheckpointPolicy(every_epochs=1, every_s=0), CheckpointPolicy()
    rows = []
    for method in ("lora", "full"):
        row = checkpoint_cost(method, args.backbone, repeats)
        row["share_every_epoch"] = shares(row["save_s"], args.epoch_s, old, args.epochs)
        row["share_default"] = shares(row["save_s"], args.epoch_s, new, args.epochs)
        rows.append(row)
        print(
            f"{method:5s} {row['bytes'] / 2**20:8.1f} MiB  {row['save_s']:6.3f} s/checkpoint  "
            f"share of trial time: every epoch {row['share_every_epoch']:.1%}, "
            f"every 120 s {row['share_default']:.1%}"
        )
    ratio = rows[1]["bytes"] / rows[0]["bytes"]
    print(f"full/lora bytes: {ratio:.0f}x")
    report = {
        "machine": platform.processor() or platform.machine(), "torch": torch.__version__,
        "backbone": args.backbone, "epoch_s": args.epoch_s, "epochs": args.epochs,
        "rows": rows,
    }  # fmt: skip
    args.out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
