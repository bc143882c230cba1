"""What a final run leaves behind, serialised to bytes so it can cross Ray to the tracker.

Trainable-only weights (safetensors), per-example test predictions (parquet: logits and
labels, so ensembles and bootstrap ties can be computed later without retraining) and the
environment the number was measured in (package versions, git sha, device).
"""

from __future__ import annotations

import io
import json
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import torch
from safetensors.torch import load, save

PACKAGES = ("torch", "torchvision", "timm", "ray", "optuna", "mlflow", "pyarrow", "petl-sweep")


def trainable_bytes(state: dict[str, torch.Tensor], meta: dict[str, Any]) -> bytes:
    tensors = {k: v.detach().contiguous().cpu() for k, v in state.items()}
    return save(
        tensors,
        metadata={k: json.dumps(v) if not isinstance(v, str) else v for k, v in meta.items()},
    )


def read_trainable(data: bytes) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The tensors and metadata of a ``trainable.safetensors`` written by ``trainable_bytes``
    (JSON-encoded metadata values decoded again); raises if it is not such a file."""
    tensors = load(data)
    # safetensors: an 8-byte little-endian header length, then a JSON header
    header = json.loads(data[8 : 8 + int.from_bytes(data[:8], "little")])
    raw = dict(header.get("__metadata__") or {})
    if "method" not in raw:
        raise ValueError("not a petl-sweep trainable-state file (no 'method' metadata)")
    meta = {}
    for key, value in raw.items():
        try:
            meta[key] = json.loads(value)
        except json.JSONDecodeError:
            meta[key] = value
    return tensors, meta


def predictions_table(logits: torch.Tensor, labels: torch.Tensor) -> pa.Table:
    """One row per example: index, label, prediction, logits (list<float32>)."""
    logits = logits.float().cpu()
    return pa.table(
        {
            "index": pa.array(range(len(labels)), pa.int32()),
            "label": pa.array(labels.cpu().numpy().astype("int32")),
            "pred": pa.array(logits.argmax(1).numpy().astype("int32")),
            "logits": pa.array(list(logits.numpy()), pa.list_(pa.float32())),
        }
    )


def predictions_bytes(logits: torch.Tensor, labels: torch.Tensor) -> bytes:
    sink = io.BytesIO()
    pq.write_table(predictions_table(logits, labels), sink)
    return sink.getvalue()


def read_predictions(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    table = pq.read_table(path)
    logits = torch.tensor(table.column("logits").to_pylist(), dtype=torch.float32)
    return logits, torch.tensor(table.column("label").to_numpy(), dtype=torch.int64)


def git_sha() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            cwd=Path(__file__).parent,
            timeout=5,
            check=False,
        )
        return out.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def environment_info() -> dict[str, Any]:
    """Versions, git sha, Python and the accelerator: what a reported number depends on."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "absent"
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    return {
        "versions": versions,
        "git_sha": git_sha(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": device,
        "torch_threads": torch.get_num_threads(),
    }
