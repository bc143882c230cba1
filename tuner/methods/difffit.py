"""DiffFit: biases, LayerNorms and a learnable scale γ on each residual branch.

Xie et al. (ICCV 2023) fine-tune bias terms, norms and per-block scale factors γ that
multiply the attention and MLP branch outputs (γ starts at 1, so the model starts as the
pretrained one). γ is per channel here; α interpolates it as 1 + α(γ − 1).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from tuner.methods.base import MergeScaled, Method, head_parameters
from tuner.methods.bitfit import bias_parameters
from tuner.methods.hooks import attach, branch_parameters
from tuner.methods.layernorm import layernorm_parameters
from tuner.methods.registry import register


class BranchScale(MergeScaled):
    """Per-channel γ applied to a module's output: ``out · (1 + α(γ − 1))``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(dim))
        self.init_merge_factor()

    def forward(self, out: torch.Tensor) -> torch.Tensor:
        return out * (1 + self.merge_factor * (self.gamma - 1))


@register
class DiffFit(Method):
    name = "difffit"
    description = "DiffFit: biases, LayerNorms and a per-block scale on attention/MLP branches."
    paper = "Xie et al., DiffFit, ICCV 2023"

    def inject(self, model: nn.Module) -> None:
        for i, _ in enumerate(model.blocks):  # type: ignore[arg-type]
            for site in ("attn", "mlp"):
                scale = BranchScale(model.embed_dim)  # type: ignore[arg-type]
                attach(model, f"blocks.{i}.{site}", scale, "output", key=f"blocks_{i}_{site}_gamma")

    def trainable_parameters(self, model: nn.Module) -> Iterator[tuple[str, nn.Parameter]]:
        seen: set[int] = set()
        for name, param in [
            *bias_parameters(model),
            *layernorm_parameters(model),
            *branch_parameters(model),
            *head_parameters(model),
        ]:
            if id(param) not in seen:
                seen.add(id(param))
                yield name, param
