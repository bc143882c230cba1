"""RepAdapter: linear adapters before attention and MLP, folded away after training.

Luo et al. (2023) place ``x ← x + s · up(down(x))`` (no nonlinearity; ``up`` group-wise
with 2 groups and zero-initialised) before the attention and before the MLP, with dropout
(0.1, the seed study's ``model/repadapter.py``) between the projections while training. The
adapter is affine in eval mode, so it merges into the next linear layer (``qkv`` / ``fc1``):
``W(Mx + c) + b = (WM)x + (Wc + b)`` with ``M = I + sUD`` and ``c = s(U b_d + b_u)``.
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from tuner.methods.base import MergeScaled
from tuner.methods.configs import MethodConfig
from tuner.methods.hooks import CONTAINER, BranchMethod, attach
from tuner.methods.registry import register

GROUPS = 2


class LinearAdapter(MergeScaled):
    def __init__(self, dim: int, bottleneck: int, scale: float, dropout: float = 0.0) -> None:
        super().__init__()
        self.down = nn.Linear(dim, bottleneck)
        self.dropout = nn.Dropout(float(dropout))
        self.up = nn.Conv1d(bottleneck, dim, 1, groups=GROUPS)
        nn.init.xavier_uniform_(self.down.weight)
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)
        self.scale = float(scale)
        self.init_merge_factor()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.up(self.dropout(self.down(x)).transpose(-1, -2)).transpose(-1, -2)
        return self.merge_factor * self.scale * h

    def affine(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(M, c) with adapter(x) + x = M x + c, as dense matrices."""
        dim, r = self.up.out_channels, self.down.out_features
        up = torch.zeros(dim, r, device=self.down.weight.device)
        per_out, per_in = dim // GROUPS, r // GROUPS
        for g in range(GROUPS):
            rows, cols = slice(g * per_out, (g + 1) * per_out), slice(g * per_in, (g + 1) * per_in)
            up[rows, cols] = self.up.weight[rows, :, 0]
        s = self.merge_factor * self.scale
        m = torch.eye(dim, device=up.device) + s * up @ self.down.weight
        c = s * (up @ self.down.bias + self.up.bias)
        return m, c


class RepAdapterConfig(MethodConfig):
    bottleneck: int = Field(
        8, ge=GROUPS, multiple_of=GROUPS, description="adapter hidden width r (even: 2 groups)"
    )
    scale: float = Field(1.0, allow_inf_nan=False, description="scale s of the adapter")
    dropout: float = Field(
        0.1, ge=0, lt=1, description="dropout between the projections (the study's 0.1)"
    )


@register
class RepAdapter(BranchMethod):
    name = "repadapter"
    description = "RepAdapter: linear group-wise adapters before attention and MLP, mergeable."
    paper = "Luo et al., Towards Efficient Visual Adaption via Structural Re-parameterization, 2023"
    config_class = RepAdapterConfig
    config: RepAdapterConfig
    reparameterisable = True

    def inject(self, model: nn.Module) -> None:
        c = self.config
        for i, _ in enumerate(model.blocks):  # type: ignore[arg-type]
            for site in ("attn", "mlp"):
                branch = LinearAdapter(model.embed_dim, c.bottleneck, c.scale, c.dropout)  # type: ignore[arg-type]
                attach(model, f"blocks.{i}.{site}", branch, "before")

    def merge(self, model: nn.Module) -> nn.Module:
        container = getattr(model, CONTAINER)
        for i, block in enumerate(model.blocks):  # type: ignore[arg-type]
            for site, layer in (("attn", block.attn.qkv), ("mlp", block.mlp.fc1)):
                branch = container[f"blocks_{i}_{site}"]
                m, c = branch.affine()
                with torch.no_grad():
                    bias = layer.bias if layer.bias is not None else torch.zeros(layer.out_features)
                    new_bias = layer.weight @ c + bias
                    layer.weight.copy_(layer.weight @ m)
                    if layer.bias is None:
                        layer.bias = nn.Parameter(new_bias)
                    else:
                        layer.bias.copy_(new_bias)
                branch.hook_handle.remove()
        delattr(model, CONTAINER)
        return model
