"""Full fine-tuning: every backbone tensor trains (the reference PETL is compared to)."""

from __future__ import annotations

from collections.abc import Iterator

from torch import nn

from tuner.methods.base import Method
from tuner.methods.registry import register


@register
class Full(Method):
    name = "full"
    description = "Full fine-tuning: every parameter of the backbone and head trains."
    paper = "baseline (e.g. Dosovitskiy et al., ViT, ICLR 2021)"

    def inject(self, model: nn.Module) -> None:
        """Nothing to add."""

    def trainable_parameters(self, model: nn.Module) -> Iterator[tuple[str, nn.Parameter]]:
        yield from model.named_parameters()
