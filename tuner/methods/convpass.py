"""Convpass: a convolutional bypass beside attention and MLP (Jie & Deng, 2022).

Each bypass takes the same input as the module it sits beside (the LayerNorm output),
projects tokens to r channels, runs a 3×3 convolution over the patch grid (prefix tokens
are convolved as 1×1 maps, which sees only the kernel centre), applies QuickGELU, dropout
(0.1) and projects back up; the up-projection starts at zero and the sum is scaled by
``scale``. As in the seed study (PETL_Vision ``model/convpass.py``) the projections start
``lora_xavier`` and the 3×3 kernel either xavier-random (``xavier_init: true``) or as the
identity at its centre (false, the default): a grid dimension of the study.
``init: trunc_normal`` is the study's model as built: its ViT's ``init_weights`` re-draws the
two projections (std 0.02, zero bias) after ``convpass_init`` ran; the kernel, a Conv2d, keeps
its init (``hooks.trunc_normal``). Per bypass: 2·d·r + 9·r² + 2·r + d parameters.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from tuner.methods.base import MergeScaled
from tuner.methods.configs import MethodConfig
from tuner.methods.hooks import BranchMethod, ProjectionInit, attach, init_projections
from tuner.methods.registry import register


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
        init: ProjectionInit = "lora_xavier",
    ) -> None:
        super().__init__()
        self.down = nn.Linear(dim, bottleneck)
        self.conv = nn.Conv2d(bottleneck, bottleneck, 3, padding=1)
        self.up = nn.Linear(bottleneck, dim)
        init_projections(self.down, self.up, init)
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


class ConvpassConfig(MethodConfig):
    bottleneck: int = Field(8, ge=1, description="bypass hidden channels r")
    scale: float = Field(1.0, allow_inf_nan=False, description="scale s of the bypass output")
    xavier_init: bool = Field(
        False, description="3x3 kernel: xavier-random (true) or centred identity"
    )
    dropout: float = Field(
        0.1, ge=0, lt=1, description="dropout before the up-projection (the study's 0.1)"
    )
    init: ProjectionInit = Field(
        "lora_xavier",
        description="projections: lora_xavier (the study's convpass_init), lora_kaiming, "
        "xavier, trunc_normal (std 0.02: the study's model as built)",
    )


@register
class Convpass(BranchMethod):
    name = "convpass"
    description = "Convpass: a 3x3 convolutional bottleneck beside attention and MLP."
    paper = "Jie & Deng, Convolutional Bypasses Are Better Vision Transformer Adapters, 2022"
    config_class = ConvpassConfig
    config: ConvpassConfig

    @property
    def preserves_init(self) -> bool:  # type: ignore[override]
        return self.config.init.startswith("lora_")

    def inject(self, model: nn.Module) -> None:
        grid = tuple(model.patch_embed.grid_size)  # type: ignore[union-attr]
        c = self.config
        for i, _ in enumerate(model.blocks):  # type: ignore[arg-type]
            for site in ("attn", "mlp"):
                branch = ConvBypass(
                    model.embed_dim,  # type: ignore[arg-type]
                    c.bottleneck,
                    c.scale,
                    grid,  # type: ignore[arg-type]
                    model.num_prefix_tokens,  # type: ignore[arg-type]
                    c.xavier_init,
                    c.dropout,
                    c.init,
                )
                attach(model, f"blocks.{i}.{site}", branch, "parallel")
