"""Offline pretraining of the tiny ViT on the synthetic glyph task (``petl-sweep pretrain``).

PETL methods adapt a *pretrained* backbone; on random features they measure nothing. With no
model hub available, this module plays the role of ImageNet pretraining for
``vit_petl_tiny_patch8_32``: it trains the whole network on :mod:`tuner.data.upstream`'s 64
glyph classes on the CPU in a few minutes and writes the safetensors file that
``timm.create_model(..., pretrained=True)`` loads through the model's ``pretrained_cfg``.

The defaults of :func:`pretrain` *are* the shipped recipe (see ``tuner/weights/README.md``), so
``petl-sweep pretrain`` reproduces the shipped tensors bit for bit on the same torch build and
thread count (only the timing metadata differs).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import timm
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from tuner.backbones.timm_models import TINY_NAME, TINY_UPSTREAM_CLASSES
from tuner.data.upstream import UPSTREAM_CLASS_SEED, generate_upstream
from tuner.optim import adamw_groups, warmup_cosine
from tuner.util import atomic_write

log = logging.getLogger(__name__)

#: Class-composition seed of the *novel* glyph task used by the transfer check: its 64 classes
#: are different glyphs from the pretraining ones, so a probe there measures features, not
#: memorised classes.
PROBE_CLASS_SEED = 1_000_003


def _derived_seed(seed: int, purpose: int) -> int:
    """An independent, stable integer seed for one use (train/val/probe) of the base seed."""
    return int(np.random.SeedSequence([seed, purpose]).generate_state(1)[0])


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 NHWC -> float NCHW normalised like the backbone's ``pretrained_cfg`` (mean=std=0.5).

    Matching the cfg matters: downstream code normalises with ``data_config(model)``, and the
    features are only meaningful under the statistics they were trained with.
    """
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float()
    return x.div_(127.5).sub_(1.0)


def _random_shift(x: torch.Tensor, max_shift: int, gen: torch.Generator) -> torch.Tensor:
    """Per-sample random translation by up to ``max_shift`` pixels (edge-replicated padding).

    The rendered glyphs already vary in pose; this cheap extra jitter stops the fixed training
    set from being memorised at the pixel level over several epochs.
    """
    if max_shift <= 0:
        return x
    n, _, h, w = x.shape
    padded = F.pad(x, (max_shift,) * 4, mode="replicate")
    dy = torch.randint(0, 2 * max_shift + 1, (n,), generator=gen)
    dx = torch.randint(0, 2 * max_shift + 1, (n,), generator=gen)
    rows = (dy[:, None] + torch.arange(h)[None, :])[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w)[None, :])[:, None, None, :]
    batch = torch.arange(n)[:, None, None, None]
    chan = torch.arange(x.shape[1])[None, :, None, None]
    return padded[batch, chan, rows, cols]


@torch.no_grad()
def _evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 512) -> tuple:
    model.eval()
    loss, correct = 0.0, 0
    for i in range(0, len(x), batch):
        logits = model(x[i : i + batch])
        loss += F.cross_entropy(logits, y[i : i + batch], reduction="sum").item()
        correct += (logits.argmax(1) == y[i : i + batch]).sum().item()
    return loss / max(len(x), 1), correct / max(len(x), 1)


@torch.no_grad()
def extract_features(model: nn.Module, x: torch.Tensor, batch: int = 512) -> torch.Tensor:
    """Pre-logits features (normed CLS token) of a timm ViT: what a linear head would see."""
    model.eval()
    feats = [
        model.forward_head(model.forward_features(x[i : i + batch]), pre_logits=True)
        for i in range(0, len(x), batch)
    ]
    return torch.cat(feats)


def linear_probe_accuracy(
    model: nn.Module,
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    *,
    steps: int = 100,
    l2: float = 1e-3,
) -> float:
    """Test accuracy of a logistic-regression probe on the frozen model's features.

    This is the honest check that pretraining produced *transferable* features: run it on a
    task whose classes the model never saw and compare with a random-init backbone. Features
    are standardised with train statistics and the probe is fit full-batch with L-BFGS, so the
    number depends on the features, not on probe optimisation luck.
    """
    f_train = extract_features(model, to_tensor(train[0]))
    f_test = extract_features(model, to_tensor(test[0]))
    mean, std = f_train.mean(0), f_train.std(0) + 1e-6
    f_train, f_test = (f_train - mean) / std, (f_test - mean) / std
    y_train = torch.from_numpy(train[1])
    num_classes = int(max(train[1].max(), test[1].max())) + 1
    probe = nn.Linear(f_train.shape[1], num_classes)
    nn.init.zeros_(probe.weight)
    nn.init.zeros_(probe.bias)
    opt = torch.optim.LBFGS(
        probe.parameters(), lr=1.0, max_iter=steps, history_size=20, line_search_fn="strong_wolfe"
    )

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(probe(f_train), y_train) + l2 * probe.weight.square().sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    with torch.no_grad():
        pred = probe(f_test).argmax(1).numpy()
    return float((pred == test[1]).mean())


def novel_task(
    n_train: int, n_test: int, seed: int = 0, num_classes: int = 64
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Train/test splits of a glyph task with *unseen* classes (``PROBE_CLASS_SEED``)."""
    kw = dict(class_seed=PROBE_CLASS_SEED, num_classes=num_classes)
    train = generate_upstream(n_train, _derived_seed(seed, 10), **kw)
    test = generate_upstream(n_test, _derived_seed(seed, 11), **kw)
    return train, test


@dataclass(frozen=True)
class Recipe:
    """The pretraining hyper-parameters (``pretrain``'s defaults are the shipped recipe)."""

    num_images: int
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    warmup_epochs: float
    label_smoothing: float
    max_shift: int
    num_val: int


@contextmanager
def _torch_settings(threads: int | None) -> Iterator[None]:
    """Deterministic algorithms and ``threads`` for the run, restored afterwards."""
    prev_threads = torch.get_num_threads()
    prev_det = torch.are_deterministic_algorithms_enabled()
    prev_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    if threads is not None:
        torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.set_num_threads(prev_threads)
        torch.use_deterministic_algorithms(prev_det, warn_only=prev_warn)


def _fit(
    model: nn.Module,
    train: tuple[torch.Tensor, torch.Tensor],
    val: tuple[torch.Tensor, torch.Tensor],
    recipe: Recipe,
    seed: int,
    t0: float,
) -> list[float]:
    """Train ``model`` on the glyphs; returns the validation accuracy after each epoch."""
    (x_train, y_train), (x_val, y_val) = train, val
    r = recipe
    opt = torch.optim.AdamW(
        adamw_groups(model.named_parameters(), r.weight_decay), lr=r.lr, betas=(0.9, 0.999)
    )
    steps_per_epoch = math.ceil(r.num_images / r.batch_size)
    total = max(1, r.epochs * steps_per_epoch)
    warmup = max(1, round(r.warmup_epochs * steps_per_epoch))
    # Linear warm-up (ViTs diverge with a cold AdamW start), then cosine to zero.
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(total, warmup))
    gen = torch.Generator().manual_seed(seed)
    history = []
    for epoch in range(r.epochs):
        model.train()
        perm = torch.randperm(r.num_images, generator=gen)
        run_loss, run_correct = 0.0, 0
        for i in range(0, r.num_images, r.batch_size):
            idx = perm[i : i + r.batch_size]
            xb = _random_shift(x_train[idx], r.max_shift, gen)
            logits = model(xb)
            loss = F.cross_entropy(logits, y_train[idx], label_smoothing=r.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            run_loss += loss.item() * len(idx)
            run_correct += (logits.argmax(1) == y_train[idx]).sum().item()
        val_loss, val_acc = _evaluate(model, x_val, y_val)
        history.append(val_acc)
        log.info(
            "epoch %d/%d train_loss %.3f train_acc %.3f val_loss %.3f val_acc %.3f (%.0fs)",
            epoch + 1, r.epochs, run_loss / r.num_images, run_correct / r.num_images,
            val_loss, val_acc, time.perf_counter() - t0,
        )  # fmt: skip
    return history


def _metadata(recipe: Recipe, seed: int, metrics: dict[str, Any]) -> dict[str, str]:
    """What the weights file records about how it was made (safetensors metadata)."""
    metadata = {
        "format": "pt",
        "model": TINY_NAME,
        "task": f"synthetic glyphs, {TINY_UPSTREAM_CLASSES} classes",
        "class_seed": str(UPSTREAM_CLASS_SEED),
        "seed": str(seed),
        "images": str(recipe.num_images),
        "epochs": str(recipe.epochs),
        "batch_size": str(recipe.batch_size),
        "lr": str(recipe.lr),
        "weight_decay": str(recipe.weight_decay),
        "upstream_val_acc": f"{metrics['upstream_val_acc']:.4f}",
        "upstream_val_images": str(recipe.num_val),
        "train_seconds": f"{metrics['train_seconds']:.1f}",
        "torch": torch.__version__,
        "timm": timm.__version__,
    }
    for key in ("probe_novel_pretrained", "probe_novel_random"):
        if key in metrics:
            metadata[key] = f"{metrics[key]:.4f}"
    return metadata


def pretrain(
    out: Path,
    *,
    seed: int = 0,
    num_images: int = 40_000,
    epochs: int = 20,
    batch_size: int = 64,
    lr: float = 1.5e-3,
    threads: int | None = None,
    weight_decay: float = 0.05,
    warmup_epochs: float = 0.5,
    label_smoothing: float = 0.1,
    max_shift: int = 2,
    num_val: int = 2_048,
    probe: bool = True,
) -> dict[str, Any]:
    """Pretrain the tiny ViT on the glyph task and save its full state dict to ``out``.

    Returns the metrics (also stored as safetensors metadata): upstream validation accuracy
    and loss, wall-clock time, and, when ``probe`` is set, linear-probe accuracy on a novel
    glyph task for the trained and a random-init backbone (the transfer check).

    ``threads`` sets ``torch.set_num_threads`` for the run (restored afterwards); ``None``
    keeps the current setting. Training is deterministic given ``seed`` and the torch build.
    """
    import tuner.backbones.timm_models  # noqa: F401  (registers the tiny ViT with timm)

    recipe = Recipe(
        num_images, epochs, batch_size, lr, weight_decay, warmup_epochs, label_smoothing,
        max_shift, num_val,
    )  # fmt: skip
    out = Path(out)
    with _torch_settings(threads):
        t0 = time.perf_counter()
        x_np, y_np = generate_upstream(num_images, _derived_seed(seed, 0))
        xv_np, yv_np = generate_upstream(num_val, _derived_seed(seed, 1))
        train = (to_tensor(x_np), torch.from_numpy(y_np))
        val = (to_tensor(xv_np), torch.from_numpy(yv_np))
        del x_np, xv_np
        t_data = time.perf_counter() - t0
        log.info("generated %d train + %d val glyphs in %.1fs", num_images, num_val, t_data)

        torch.manual_seed(seed)
        model = timm.create_model(TINY_NAME, pretrained=False, num_classes=TINY_UPSTREAM_CLASSES)
        history = _fit(model, train, val, recipe, seed, t0)
        val_loss, val_acc = _evaluate(model, *val)
        metrics: dict[str, Any] = {
            "upstream_val_acc": val_acc,
            "upstream_val_loss": val_loss,
            "val_acc_per_epoch": history,
            "train_seconds": round(time.perf_counter() - t0, 1),
            "data_seconds": round(t_data, 1),
        }
        if probe:
            novel_train, novel_test = novel_task(2_048, 2_048, seed)
            metrics["probe_novel_pretrained"] = linear_probe_accuracy(
                model, novel_train, novel_test
            )
            torch.manual_seed(seed)
            rand = timm.create_model(TINY_NAME, pretrained=False, num_classes=0)
            metrics["probe_novel_random"] = linear_probe_accuracy(rand, novel_train, novel_test)
            log.info(
                "novel-task linear probe: pretrained %.3f vs random init %.3f",
                metrics["probe_novel_pretrained"], metrics["probe_novel_random"],
            )  # fmt: skip
        state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
        # Write then rename, so a concurrent reader (a running sweep) never sees half a file.
        with atomic_write(out) as tmp:
            save_file(state, str(tmp), metadata=_metadata(recipe, seed, metrics))
        metrics["path"] = str(out)
        metrics["bytes"] = out.stat().st_size
        metrics["total_seconds"] = round(time.perf_counter() - t0, 1)
        log.info("wrote %s (%d bytes) in %.0fs", out, metrics["bytes"], metrics["total_seconds"])
        return metrics
