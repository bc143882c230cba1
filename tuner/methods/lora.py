"""LoRA: a low-rank update B·A beside a frozen linear layer (Hu et al., ICLR 2022).

Applied to the fused ``qkv`` projection of every block, as in the seed study: with width d,
rank r and L blocks it trains L·r·(d + 3d) parameters (0.29 M for ViT-B/16 at r = 8).
The update folds into the weight (``merge``) for zero inference overhead. The update's input
goes through dropout (0.1, the study's ``model/lora.py``); eval mode and ``merge`` are
unaffected.

``init``: ``lora_kaiming`` (the paper and the study's ``model/lora.py``: A kaiming-uniform,
B zero, so the tuned model starts as the pretrained one) or ``trunc_normal`` (A and B
trunc_normal std 0.02: the study's model as built, whose ``init_weights`` re-initialises
every ``nn.Linear``, LoRA's too; see ``hooks.trunc_normal``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Literal

import torch
from pydantic import Field
from torch import nn

from tuner.methods.base import MergeScaled, Method, head_parameters
from tuner.methods.configs import MethodConfig
from tuner.methods.hooks import modules_of_type, trunc_normal, wrap_linear
from tuner.methods.registry import register

LoRAInit = Literal["lora_kaiming", "trunc_normal"]


class LoRALinear(MergeScaled):
    """``base(x) + α · B(A(x))`` with a frozen ``base`` and trainable rank-r ``A``, ``B``."""

    def __init__(
        self, base: nn.Linear, rank: int, dropout: float = 0.0, init: LoRAInit = "lora_kaiming"
    ) -> None:
        super().__init__()
        self.base = base
        self.dropout = nn.Dropout(float(dropout))
        self.lora_a = nn.Parameter(torch.empty(rank, base.in_features))
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank))
        if init == "trunc_normal":
            trunc_normal([self.lora_a, self.lora_b])
        else:
            nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))
        self.init_merge_factor()

    def delta_weight(self) -> torch.Tensor:
        return self.merge_factor * (self.lora_b @ self.lora_a)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        update = (self.dropout(x) @ self.lora_a.t()) @ self.lora_b.t()
        return self.base(x) + self.merge_factor * update

    def merged(self) -> nn.Linear:
        """The base layer with the update folded into its weight."""
        with torch.no_grad():
            self.base.weight += self.delta_weight().to(self.base.weight.dtype)
        return self.base


class LoRAConfig(MethodConfig):
    rank: int = Field(8, ge=1, description="rank r of the update B·A")
    dropout: float = Field(
        0.1, ge=0, lt=1, description="dropout on the update's input (the study's 0.1)"
    )
    init: LoRAInit = Field(
        "lora_kaiming",
        description="lora_kaiming: A kaiming, B zero (paper); trunc_normal: A, B std 0.02 "
        "(the first study's model as built)",
    )


@register
class LoRA(Method):
    name = "lora"
    description = "LoRA: trainable low-rank update beside each block's fused qkv projection."
    paper = "Hu et al., LoRA, ICLR 2022"
    config_class = LoRAConfig
    config: LoRAConfig
    reparameterisable = True

    @property
    def preserves_init(self) -> bool:  # type: ignore[override]
        return self.config.init == "lora_kaiming"

    def inject(self, model: nn.Module) -> None:
        c = self.config
        for i, _ in enumerate(model.blocks):  # type: ignore[arg-type]
            wrap_linear(model, f"blocks.{i}.attn.qkv", LoRALinear, rank=c.rank,
                        dropout=c.dropout, init=c.init)  # fmt: skip

    def trainable_parameters(self, model: nn.Module) -> Iterator[tuple[str, nn.Parameter]]:
        for name, module in modules_of_type(model, LoRALinear):
            yield f"{name}.lora_a", module.lora_a
            yield f"{name}.lora_b", module.lora_b
        yield from head_parameters(model)

    def merge(self, model: nn.Module) -> nn.Module:
        for name, module in list(modules_of_type(model, LoRALinear)):
            model.set_submodule(name, module.merged())
        return model
