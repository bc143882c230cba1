"""LayerNorm tuning: only the affine parameters of every LayerNorm (and the head) train.

LayerNorms are found by module type, so the CLIP backbone's ``norm_pre`` is included and a
method's own tensors can never be swept in by a name match.
"""

from __future__ import annotations

from collections.abc import Iterator

from torch import nn

from tuner.methods.base import Method, head_parameters
from tuner.methods.registry import register


def layernorm_parameters(model: nn.Module) -> Iterator[tuple[str, nn.Parameter]]:
    """weight and bias of every ``nn.LayerNorm`` in the model."""
    for mod_name, module in model.named_modules():
        if isinstance(module, nn.LayerNorm):
            for pname, param in module.named_parameters(recurse=False):
                yield f"{mod_name}.{pname}", param


@register
class LayerNormTuning(Method):
    name = "layernorm"
    description = "LayerNorm tuning: train the scale and shift of every LayerNorm, and the head."
    paper = "Basu et al., Strong Baselines for PETL (LN-TUNE), AAAI 2024; Mai et al. 2024"

    def inject(self, model: nn.Module) -> None:
        """Nothing to add: LayerNorms are already there."""

    def trainable_parameters(self, model: nn.Module) -> Iterator[tuple[str, nn.Parameter]]:
        yield from layernorm_parameters(model)
        yield from head_parameters(model)
