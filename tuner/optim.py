"""The optimiser recipe shared by downstream training and the tiny ViT's pretraining.

AdamW parameter groups (by default decay on matrices and kernels only; ``decay_everything``
is the first study's policy, which decays every tuned tensor) and the per-step linear
warm-up + cosine multiplier: one copy of each, so the tiny ViT's pretraining and the sweep's
trainer cannot drift apart. (The per-epoch schedule is timm's ``CosineLRScheduler``.)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

from torch import nn

TOKENS = ("cls_token", "pos_embed", "reg_token")


def default_decays(name: str, param: nn.Parameter) -> bool:
    """Matrices and kernels decay; biases, norm affines, tokens and position embeddings do
    not (the usual ViT recipe: shrinking those toward zero only hurts)."""
    return param.ndim >= 2 and not name.endswith(TOKENS)


def adamw_groups(
    named: Iterable[tuple[str, nn.Parameter]],
    weight_decay: float,
    decays: Callable[[str, nn.Parameter], bool] = default_decays,
) -> list[dict[str, Any]]:
    """AdamW parameter groups: ``weight_decay`` where ``decays`` says so, 0 elsewhere."""
    decay, no_decay = [], []
    for name, param in named:
        (decay if decays(name, param) else no_decay).append(param)
    groups = [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return [g for g in groups if g["params"]]


def warmup_cosine(
    total_steps: int, warmup_steps: int, start: float | None = None, floor: float = 0.0
) -> Callable[[int], float]:
    """Multiplier for ``LambdaLR``: linear warm-up to 1, then cosine down to ``floor``.

    ``start``: the multiplier at step 0 (timm's ``warmup_lr_init / lr``); None ramps from
    1/warmup_steps. ``floor``: where the cosine ends (timm's ``lr_min / lr``). The seed
    study warms up from 1e-6 and ends at 1e-5 (PETL_Vision's default_vtab_processed.yml)."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            if start is None:
                return (step + 1) / warmup_steps
            return start + (1.0 - start) * step / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def decay_everything(name: str, param: nn.Parameter) -> bool:
    """The seed study's policy: one AdamW over every tuned tensor, all with weight decay
    (PETL_Vision's engine/optimizer.py), so bitfit's biases and ssf's scales decay too."""
    return True
