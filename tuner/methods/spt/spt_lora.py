"""SPT-LoRA: LoRA on the most sensitive matrices, sparse tuning elsewhere (He et al., 2023).

The allocation is :mod:`tuner.methods.spt.allocation`'s; here the structured module is a rank-r LoRA
beside a matrix (q, k and v of the fused qkv each get their own). Everything it adds is
linear in the input, so it merges back into plain backbone weights.
"""

from __future__ import annotations

from torch import nn

from tuner.methods.hooks import modules_of_type
from tuner.methods.registry import register
from tuner.methods.spt.method import WHOLE_VECTORS, SPTLinear, SPTMethod


@register
class SPTLoRA(SPTMethod):
    name = "spt_lora"
    description = "SPT-LoRA: sensitivity-chosen LoRA modules + sparse entries under a budget."
    paper = "He et al., Sensitivity-Aware Visual Parameter-Efficient Fine-Tuning, ICCV 2023"
    structure = "lora"
    reparameterisable = True

    def merge(self, model: nn.Module) -> nn.Module:
        for name, module in list(modules_of_type(model, SPTLinear)):
            model.set_submodule(name, module.merged())
        if hasattr(model, WHOLE_VECTORS):
            delattr(model, WHOLE_VECTORS)
        return model
