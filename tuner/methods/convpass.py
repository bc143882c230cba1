"""Convpass: a convolutional bypass beside attention and MLP (Jie & Deng, 2022).

Each bypass takes the same input as the module it sits beside (the LayerNorm output),
projects tokens to r channels, runs a 3×3 convolution over the patch grid (prefix tokens
are convolved as 1×1 maps, which sees only the kernel centre), applies QuickGELU and
projects back up; the up-projection starts at zero and the sum is scaled by ``scale``.
Per bypass: 2·d·r + 9·r² + 2·r + d parameters.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tuner.methods import register
from tuner.methods.base import HParam, MergeScaled
from tuner.methods.hooks import BranchMethod, attach


class ConvBypass(MergeScaled):
    def __init__(
        self, dim: int, bottleneck: int, scale: float, grid: tuple[int, int], num_prefix: int
    ) -> None:
        super().__init__()
        self.down = nn.Linear(dim, bottleneck)
        self.conv = nn.Conv2d(bottleneck, bottleneck, 3, padding=1)
        self.up = nn.Linear(bottleneck, dim)
        nn.init.xavier_uniform_(self.down.weight)
        nn.init.zeros_(self.down.bias)
        nn.init.xavier_uniform_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)
        self.scale, self.grid, self.num_prefix = float(scale), grid, num_prefix
        self.init_merge_factor()

    @staticmethod
    def _act(x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)  # QuickGELU, as in the paper's code

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        h = self._act(self.down(x))
        prefix, patches = h[:, : self.num_prefix], h[:, self.num_prefix :]
        gh, gw = self.grid
        if patches.shape[1] != gh * gw:
            raise ValueError(
                f"convpass: expected {gh}x{gw} patch tokens after {self.num_prefix} prefix "
                f"tokens, got {patches.shape[1]} (is another method adding tokens?)"
            )
        grid = patches.transpose(1, 2).reshape(b, -1, gh, gw)
        patches = self.conv(grid).flatten(2).transpose(1, 2)
        centre = self.conv.weight[:, :, 1, 1]
        prefix = F.linear(prefix, centre, self.conv.bias)
        h = self._act(torch.cat([prefix, patches], dim=1))
        return self.merge_factor * self.scale * self.up(h)


@register
class Convpass(BranchMethod):
    name = "convpass"
    description = "Convpass: a 3x3 convolutional bottleneck beside attention and MLP."
    paper = "Jie & Deng, Convolutional Bypasses Are Better Vision Transformer Adapters, 2022"
    hparams = {
        "bottleneck": HParam(8, "bypass hidden channels r"),
        "scale": HParam(1.0, "scale s of the bypass output"),
    }

    positive = ("bottleneck",)

    def inject(self, model: nn.Module) -> None:
        grid = tuple(model.patch_embed.grid_size)  # type: ignore[union-attr]
        for i, _ in enumerate(model.blocks):  # type: ignore[arg-type]
            for site in ("attn", "mlp"):
                branch = ConvBypass(
                    model.embed_dim,
                    int(self.hp["bottleneck"]),
                    float(self.hp["scale"]),  # type: ignore[arg-type]
                    grid,
                    model.num_prefix_tokens,  # type: ignore[arg-type]
                )
                attach(model, f"blocks.{i}.{site}", branch, "parallel")
