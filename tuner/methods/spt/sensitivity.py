"""SPT's sensitivity pass: accumulated squared gradients, computed once per study and cached.

Every trial of an SPT study needs the same scores (they depend on the backbone, its weights,
the task's training images and the seed, not on the trial's hyper-parameters), and on ViT-B
the pass costs as much as a training epoch. So it is a separate step: the sweep computes it
once per study before any trial starts, stores it as ``<cache>/sensitivity/<key>.safetensors``
and as an MLflow artifact of the study run, and every trial loads it by the same content key.
A trial on a node that lacks the file fetches the artifact (through a ``fetch`` the sweep
gives it: this module imports no tracking library); only if that is impossible too does it
recompute (deterministically, from the seed), and it says so in its metrics.

Scores follow the paper: Σ over batches of (∂L/∂w)² for the cross-entropy loss, with the
pretrained backbone and a freshly initialised (seeded) head, up to 16 batches of 32 from the
task's train split. The model runs in eval mode so drop-path does not make scores random.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from tuner.methods.spt.allocation import Unit, allocation_units
from tuner.util import atomic_write, content_hash

#: The paper's default: 16 batches of 32 training images.
DEFAULT_BATCHES = 16
DEFAULT_BATCH_SIZE = 32
#: Spread of the per-unit levels of the random ablation's scores (log-normal σ).
RANDOM_LEVEL_SIGMA = 2.0


def tensor_digest(tensors: dict[str, torch.Tensor] | list[torch.Tensor]) -> str:
    """SHA-256 over tensors' bytes (names included for dicts): a content key for weights/data."""
    h = hashlib.sha256()
    items = sorted(tensors.items()) if isinstance(tensors, dict) else enumerate(tensors)
    for name, tensor in items:
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def sensitivity_key(
    backbone: str,
    weights_digest: str,
    task: str,
    data_digest: str,
    seed: int,
    batches: int,
    batch_size: int,
) -> str:
    """The cache key: everything the scores depend on, and nothing else."""
    content = [backbone, weights_digest, task, data_digest, seed, batches, batch_size]
    return content_hash(content, 24)


def compute_sensitivity(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    prepare: Callable[[torch.Tensor], torch.Tensor],
    *,
    seed: int,
    batches: int = DEFAULT_BATCHES,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> dict[str, torch.Tensor]:
    """Squared gradients of every SPT-eligible parameter, summed over ``batches`` batches.

    ``prepare`` turns a uint8 batch into the model's input (device, scaling, normalisation).
    The model's parameters and ``requires_grad`` flags are left as they were.
    """
    wanted = {u.param for u in allocation_units(model)}
    named = {n: p for n, p in model.named_parameters() if n in wanted}
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    for name, param in model.named_parameters():
        param.requires_grad_(name in named)
    scores = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in named.items()}
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    was_training = model.training
    model.eval()
    try:
        for b in range(batches):
            idx = order[b * batch_size : (b + 1) * batch_size]
            if len(idx) == 0:
                break
            x = prepare(images[idx])
            y = labels[idx].to(x.device)
            model.zero_grad(set_to_none=True)
            F.cross_entropy(model(x).float(), y).backward()
            for name, param in named.items():
                if param.grad is not None:
                    scores[name] += param.grad.detach().float() ** 2
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)
        for name, param in model.named_parameters():
            param.requires_grad_(flags[name])
    return {n: s.cpu() for n, s in scores.items()}


def random_scores(units: list[Unit], seed: int) -> dict[str, torch.Tensor]:
    """Seeded random scores in place of sensitivity: the ``allocation: random`` ablation.

    Each unit draws a level (log-normal, σ = ``RANDOM_LEVEL_SIGMA``) and each of its entries
    a uniform number scaled by that level. Which entries *and* which matrices rank high is
    then random, yet the scores stay as uneven across units as real sensitivities are, so
    SPT's α/β rules still produce a mix of structured modules and sparse entries (i.i.d.
    scores would spread the top entries evenly and buy no module below a threshold budget).
    No gradient, no data: the same seed gives the same scores on any machine.
    """
    g = torch.Generator().manual_seed(int(seed))
    shapes: dict[str, tuple[int, ...]] = {}
    for unit in units:
        rows = max(unit.rows[1], shapes.get(unit.param, (0,))[0])
        shapes[unit.param] = (rows,) if unit.kind == "vector" else (rows, unit.cols)
    out = {name: torch.zeros(shape) for name, shape in shapes.items()}
    for unit in units:
        level = float(torch.exp(RANDOM_LEVEL_SIGMA * torch.randn((), generator=g)))
        draw = torch.rand(unit.numel, generator=g) * level
        if unit.kind == "vector":
            out[unit.param] = draw
        else:
            out[unit.param][unit.rows[0] : unit.rows[1]] = draw.view(-1, unit.cols)
    return out


def random_key(backbone: str, shapes_digest: str, seed: int) -> str:
    """The random ablation's key: its scores depend on the units' shapes and the seed only."""
    return content_hash(["random-scores", backbone, shapes_digest, seed, RANDOM_LEVEL_SIGMA], 24)


def cache_path(cache_dir: Path, key: str) -> Path:
    return Path(cache_dir) / "sensitivity" / f"{key}.safetensors"


def save_scores(path: Path, scores: dict[str, torch.Tensor], meta: dict[str, Any]) -> Path:
    """Atomic write (temp file, rename): concurrent readers never see half a file."""
    with atomic_write(path) as tmp:
        save_file(
            {n: s.contiguous() for n, s in scores.items()},
            str(tmp),
            metadata={k: json.dumps(v) for k, v in meta.items()},
        )
    return path


def load_scores(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


def obtain_scores(
    key: str,
    cache_dir: Path,
    compute: Callable[[], dict[str, torch.Tensor]],
    meta: dict[str, Any],
    artifact_uri: str | None = None,
    fetch: Callable[[str, Path], Path | None] | None = None,
) -> tuple[dict[str, torch.Tensor], str]:
    """Scores for ``key``: from the cache, else the study's artifact (``fetch``, given by
    the sweep's tracking layer), else ``compute()``.

    Returns the scores and where they came from (``cache``, ``artifact`` or ``computed``).
    """
    path = cache_path(cache_dir, key)
    if path.exists():
        return load_scores(path), "cache"
    if artifact_uri and fetch is not None and fetch(artifact_uri, path):
        return load_scores(path), "artifact"
    scores = compute()
    save_scores(path, scores, {**meta, "key": key})
    return scores, "computed"
