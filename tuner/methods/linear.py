"""Linear probing: only the classifier head trains (the lower bound every study reports)."""

from __future__ import annotations

from collections.abc import Iterator

from torch import nn

from tuner.methods.base import Method, head_parameters
from tuner.methods.registry import register


@register
class Linear(Method):
    name = "linear"
    description = "Linear probe: frozen backbone, train the classifier head only."
    paper = "baseline (e.g. Jia et al., Visual Prompt Tuning, ECCV 2022)"

    def inject(self, model: nn.Module) -> None:
        """Nothing to add: the head is already there."""

    def trainable_parameters(self, model: nn.Module) -> Iterator[tuple[str, nn.Parameter]]:
        yield from head_parameters(model)
