"""GPU check of the trainer: one final-stage run on CUDA (bf16 autocast) vs the CPU.

Run on a machine with a GPU: ``python bench/gpu_check.py``. Prints device, epoch times,
accuracies and peak memory for the same spec on both devices, and their ratio.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

import torch

from tuner.data import load_task
from tuner.training.spec import TrialSpec
from tuner.training.trainer import train_one


def run(device: str, root: Path, method: str) -> dict:
    spec = TrialSpec(
        task="synth/dsprites_loc",
        method=method,
        hp={"lr": 3e-3},
        epochs=3,
        stage="final",
        data_root=str(root),
        threads=2,
    )
    with mock.patch("tuner.training.trainer.pick_device", return_value=torch.device(device)):
        start = time.perf_counter()
        result = train_one(spec)
    return {
        "device": device,
        "method": method,
        "wall_s": round(time.perf_counter() - start, 2),
        "epoch_time_s": [round(h["epoch_time_s"], 3) for h in result["history"]],
        "test_acc": result["test/acc"],
        "peak_memory_mb": round(result["peak_memory_mb"], 1),
    }


def main() -> None:
    if not torch.cuda.is_available():
        sys.exit("no CUDA device: this check needs a GPU")
    root = Path(tempfile.mkdtemp())
    load_task("synth/dsprites_loc", root, 32)
    print(json.dumps({"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__}))
    for method in ("lora", "vpt_deep", "full"):
        gpu, cpu = run("cuda", root, method), run("cpu", root, method)
        print(json.dumps(gpu))
        print(json.dumps(cpu))
        print(
            f"{method}: cpu/gpu epoch-time ratio "
            f"{sum(cpu['epoch_time_s']) / sum(gpu['epoch_time_s']):.1f}x"
        )


if __name__ == "__main__":
    main()
