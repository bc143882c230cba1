"""ViT-B/16 training throughput and MFU per method on one GPU, alone and shared.

For each method: a ``Trainer`` on ViT-B/16 (random init: the hub is not needed to time it)
with a VTAB-1k-sized training split (1,000 images at 224 px, uint8, on the device) trains
``--epochs`` epochs at batch 64 in bf16; images/s is measured over the epochs after the
first (warm-up, cuDNN autotuning). FLOPs per training step are counted by
``torch.utils.flop_counter`` on one real step, so MFU = counted FLOPs × steps/s / peak.

Then 1, 2 and 4 trials share the GPU (``gpus_per_trial`` 1, 0.5, 0.25: separate processes
on the same device, as Ray runs them) and the summed images/s is reported.

From the measured per-epoch seconds it projects the GPU-hours of the whole
``petl_vision_vtab1k`` preset, published grid versus its TPE + ASHA variant.

Without a GPU it says so, writes that to the JSON and exits 0 (``--device cpu`` times the
same code on the CPU, e.g. with ``--backbone vit_petl_tiny_patch8_32``, to check it).
Usage: ``python bench/gpu_throughput.py [--quick] [--methods lora,full] [--peak-tflops X]``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from unittest import mock

import torch
from torch.utils.flop_counter import FlopCounterMode

from tuner.data import TaskData
from tuner.data.tasks import get_task
from tuner.training.settings import TrainSettings
from tuner.training.spec import TrialSpec
from tuner.training.trainer import Trainer

#: Dense bf16 peak FLOP/s by device name (vendor datasheets); others need --peak-tflops.
PEAKS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10": 125e12}
METHODS = ("linear", "bitfit", "lora", "adapter_houlsby", "vpt_deep", "ssf", "fact_tt", "full")
TASK = "synth/count"  # only its class count is used: the images are random


def fake_task(n_train: int, size: int, device: torch.device) -> TaskData:
    """A VTAB-1k-shaped task of random uint8 images (throughput does not read content)."""
    info = get_task(TASK)
    gen = torch.Generator().manual_seed(0)

    def split(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=gen)
        return x.to(device), torch.randint(0, info.num_classes, (n,), generator=gen).to(device)

    train = split(n_train)
    return TaskData(info, train, split(64), train, split(64))


def step_flops(trainer: Trainer) -> float:
    """FLOPs of one real training step (forward, backward, optimiser), counted by torch."""
    batch = trainer.spec.train.batch_size
    x, y = trainer.x_train[:batch], trainer.y_train[:batch]
    counter = FlopCounterMode(display=False)
    with counter, trainer._autocast():
        loss = torch.nn.functional.cross_entropy(trainer.model(trainer._prepare(x)).float(), y)
        loss.backward()
    trainer.optimizer.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def measure(
    method: str, backbone: str, device: str, epochs: int, n_train: int, batch: int
) -> dict[str, Any]:
    """images/s over epochs 2..n, the step's FLOPs, peak memory, trainable parameters."""
    dev = torch.device(device)
    spec = TrialSpec(
        task=TASK, method=method, hp={"lr": 1e-3}, backbone=backbone,
        train=TrainSettings(pretrained=False, batch_size=batch), epochs=epochs,
        data_root="/nonexistent",
    )  # fmt: skip
    with mock.patch("tuner.training.trainer.pick_device", return_value=dev):
        size = 224 if "patch16_224" in backbone or backbone.startswith("vit_b16") else 32
        trainer = Trainer(spec, data=fake_task(n_train, size, dev))
    flops = step_flops(trainer)
    times = []
    for _ in range(epochs):
        if dev.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        trainer.train_epoch()  # reads loss once per epoch: that is the synchronisation
        times.append(time.perf_counter() - start)
    timed = times[1:] or times
    per_epoch = sum(timed) / len(timed)
    return {
        "method": method,
        "images_per_s": n_train / per_epoch,
        "epoch_s": per_epoch,
        "step_tflops": flops / 1e12,
        "achieved_tflops": flops * trainer.steps_per_epoch / per_epoch / 1e12,
        "trainable_params": trainer.trainable,
        "peak_memory_mb": torch.cuda.max_memory_allocated(dev) / 2**20
        if dev.type == "cuda"
        else None,
    }


def shared(k: int, method: str, args: argparse.Namespace) -> dict[str, Any]:
    """``k`` trials of ``method`` at once on one GPU, as separate processes."""
    cmd = [sys.executable, __file__, "--worker", method, "--epochs", str(args.epochs),
           "--backbone", args.backbone, "--device", args.device]  # fmt: skip
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) for _ in range(k)]
    results = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
    return {
        "trials": k,
        "gpus_per_trial": 1 / k,
        "images_per_s_total": sum(r["images_per_s"] for r in results),
        "images_per_s_each": [round(r["images_per_s"], 1) for r in results],
    }


def projection(epoch_s: dict[str, float]) -> dict[str, Any]:
    """GPU-hours of the petl_vision_vtab1k preset, grid vs TPE + ASHA, from measured epoch
    seconds per method (methods not measured use the median of those that were)."""
    from tuner.config import load_config
    from tuner.sweep.estimate import describe_plan

    median = sorted(epoch_s.values())[len(epoch_s) // 2]
    out = {}
    for preset in ("petl_vision_vtab1k", "petl_vision_vtab1k_tpe_asha"):
        cfg = load_config(None, {}, preset)
        info = describe_plan(cfg)
        hours = 0.0
        for row in info["per_study"]:
            method = row["study"].rsplit(":", 1)[-1]
            finals = cfg.final.seeds * cfg.final_epochs
            hours += (row["trial_epochs_expected"] + finals) * epoch_s.get(method, median) / 3600
        out[preset] = {"studies": info["studies"], "gpu_hours": round(hours, 1)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--backbone", default="vit_base_patch16_224")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--peak-tflops", type=float, default=None)
    parser.add_argument("--quick", action="store_true", help="lora and full, 2 epochs")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_suffix(".json"))
    args = parser.parse_args()
    if args.worker:
        result = measure(args.worker, args.backbone, args.device, args.epochs, 1000, 64)
        print(json.dumps(result))
        return
    if args.device == "cuda" and not torch.cuda.is_available():
        message = "no CUDA device on this machine: nothing to measure (run it where a GPU is)"
        print(message)
        args.out.write_text(json.dumps({"gpu": None, "skipped": message}, indent=2))
        return
    methods = ["lora", "full"] if args.quick else args.methods.split(",")
    args.epochs = 2 if args.quick else args.epochs
    name = torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu"
    peak = args.peak_tflops * 1e12 if args.peak_tflops else next(
        (v for k, v in PEAKS.items() if k in name), None
    )  # fmt: skip
    rows = []
    for method in methods:
        row = measure(method, args.backbone, args.device, args.epochs, 1000, 64)
        row["mfu"] = row["achieved_tflops"] * 1e12 / peak if peak else None
        rows.append(row)
        print(json.dumps(row))
    sharing = [shared(k, "lora", args) for k in (1, 2, 4)]
    for row in sharing:
        print(json.dumps(row))
    report = {
        "device": name, "torch": torch.__version__, "backbone": args.backbone,
        "peak_flops": peak, "methods": rows, "sharing": sharing,
        "projection": projection({r["method"]: r["epoch_s"] for r in rows}),
    }  # fmt: skip
    print(json.dumps(report["projection"]))
    args.out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
