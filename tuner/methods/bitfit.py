"""BitFit: train only the bias terms (Ben Zaken et al., ACL 2022).

Biases are found by module attribute (``module.bias`` is an ``nn.Parameter``), not by
matching "bias" in parameter names, so a method's own tensors can never be swept in.
"""

from __future__ import annotations

from collections.abc import Iterator

from torch import nn

from tuner.methods.base import Method, head_parameters
from tuner.methods.registry import register


def bias_parameters(model: nn.Module) -> Iterator[tuple[str, nn.Parameter]]:
    """Every ``bias`` parameter held by a module of the model (norm biases included)."""
    for mod_name, module in model.named_modules():
        bias = getattr(module, "bias", None)
        if isinstance(bias, nn.Parameter):
            yield f"{mod_name}.bias" if mod_name else "bias", bias


@register
class BitFit(Method):
    name = "bitfit"
    description = "BitFit: train every bias term (attention, MLP, norms) and the head."
    paper = "Ben Zaken et al., BitFit, ACL 2022"

    def inject(self, model: nn.Module) -> None:
        """Nothing to add: biases already exist."""

    def trainable_parameters(self, model: nn.Module) -> Iterator[tuple[str, nn.Parameter]]:
        seen: set[int] = set()
        for name, param in [*bias_parameters(model), *head_parameters(model)]:
            if id(param) not in seen:
                seen.add(id(param))
                yield name, param
