"""Convpass: a convolutional bypass beside attention and MLP (Jie & Deng, 2022).

Each bypass takes the same input as the module it sits beside (the LayerNorm output),
projects tokens to r channels, runs a 3×3 convolution over the patch grid (prefix tokens
are convolved as 1×1 maps, which sees only the kernel centre), applies QuickGELU, dropout
(0.1) and projects back up; the up-projection starts at zero and the sum is scaled by
``scale``. As in the seed study (PETL_Vision ``model/convpass.py``) the projections start
``lora_xavier`` and the 3×3 kernel either xavier-random (``xavier_init: true``) or as the
identity at its centre (false, the default): a grid dimension of the study.
Per bypass: 2·d·r + 9·r² + 2·r + d parameters.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tuner.methods import register
from tuner.methods.base import HParam, MergeScaled
from tuner.methods.hooks import BranchMethod, attach, init_projections


class ConvBypass(MergeScaled):
    def __init__(
        self,
        dim: int,
        bottleneck: int,
        scale: float,
        grid: tuple[int, int],
        num_prefix: int,
        xavier_init: bool = False,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.down = nn.Linear(dim, bottleneck)
        self.conv = nn.Conv2d(bottleneck, bottleneck, 3, padding=1)
        self.up = nn.Linear(bottleneck, dim)
        init_projections(self.down, self.up, "lora_xavier")
        with torch.no_grad():
            if xavier_init:
                nn.init.xavier_uniform_(self.conv.weight)
            else:  # the identity at the kernel centre: the bypass starts as a 1×1 pass-through
                nn.init.zeros_(self.conv.weight)
                self.conv.weight[:, :, 1, 1] += torch.eye(bottleneck)
            nn.init.zeros_(self.conv.bias)
        self.dropout = nn.Dropout(float(dropout))
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
        h = self.dropout(self._act(torch.cat([prefix, patches], dim=1)))
        return self.merge_factor * self.scale * self.up(h)


@register
class Convpass(BranchMethod):
    name = "convpass"
    description = "Convpass: a 3x3 convolutional bottleneck beside attention and MLP."
    paper = "Jie & Deng, Convolutional Bypasses Are Better Vision Transformer Adapters, 2022"
    hparams = {
        "bottleneck": HParam(8, "bypass hidden channels r"),
        "scale": HParam(1.0, "scale s of the bypass output"),
        "xavier_init": HParam(False, "3x3 kernel: xavier-random (true) or centred identity"),
        "dropout": HParam(0.1, "dropout before the up-projection (the study's 0.1)"),
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
                    bool(self.hp["xavier_init"]),
                    float(self.hp["dropout"]),
                )
                attach(model, f"blocks.{i}.{site}", branch, "parallel")
