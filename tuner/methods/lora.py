"""LoRA: a low-rank update B·A beside a frozen linear layer (Hu et al., ICLR 2022).

Applied to the fused ``qkv`` projection of every block, as in the seed study: with width d,
rank r and L blocks it trains L·r·(d + 3d) parameters (0.29 M for ViT-B/16 at r = 8).
B starts at zero, so the tuned model equals the pretrained one at initialisation, and the
update folds into the weight (``merge``) for zero inference overhead. The update's input goes
through dropout (0.1, the study's ``model/lora.py``); eval mode and ``merge`` are unaffected.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch import nn

from tuner.methods import register
from tuner.methods.base import HParam, MergeScaled, Method, head_parameters


class LoRALinear(MergeScaled):
    """``base(x) + α · B(A(x))`` with a frozen ``base`` and trainable rank-r ``A``, ``B``."""

    def __init__(self, base: nn.Linear, rank: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.base = base
        self.dropout = nn.Dropout(float(dropout))
        self.lora_a = nn.Parameter(torch.empty(rank, base.in_features))
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank))
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


def wrap_linear(model: nn.Module, path: str, wrapper: type[nn.Module], **kw: object) -> None:
    """Replace the ``nn.Linear`` at dotted ``path`` in ``model`` by ``wrapper(linear, **kw)``."""
    layer = model.get_submodule(path)
    if not isinstance(layer, nn.Linear):
        raise TypeError(f"{path} is {type(layer).__name__}, expected nn.Linear")
    model.set_submodule(path, wrapper(layer, **kw))


def modules_of_type(model: nn.Module, kind: type[nn.Module]) -> Iterator[tuple[str, nn.Module]]:
    """(name, module) for every submodule of ``kind`` in ``model``."""
    for name, module in model.named_modules():
        if isinstance(module, kind):
            yield name, module


@register
class LoRA(Method):
    name = "lora"
    description = "LoRA: trainable low-rank update beside each block's fused qkv projection."
    paper = "Hu et al., LoRA, ICLR 2022"
    hparams = {
        "rank": HParam(8, "rank r of the update B·A"),
        "dropout": HParam(0.1, "dropout on the update's input (the study's 0.1)"),
    }
    reparameterisable = True

    def validate(self) -> None:
        if int(self.hp["rank"]) < 1:
            raise ValueError(f"lora: rank must be >= 1, got {self.hp['rank']}")
        if not 0 <= float(self.hp["dropout"]) < 1:
            raise ValueError(f"lora: dropout must be in [0, 1), got {self.hp['dropout']}")

    def inject(self, model: nn.Module) -> None:
        rank, dropout = int(self.hp["rank"]), float(self.hp["dropout"])
        for i, _ in enumerate(model.blocks):  # type: ignore[arg-type]
            wrap_linear(model, f"blocks.{i}.attn.qkv", LoRALinear, rank=rank, dropout=dropout)

    def trainable_parameters(self, model: nn.Module) -> Iterator[tuple[str, nn.Parameter]]:
        for name, module in modules_of_type(model, LoRALinear):
            yield f"{name}.lora_a", module.lora_a
            yield f"{name}.lora_b", module.lora_b
        yield from head_parameters(model)

    def merge(self, model: nn.Module) -> nn.Module:
        for name, module in list(modules_of_type(model, LoRALinear)):
            model.set_submodule(name, module.merged())
        return model
