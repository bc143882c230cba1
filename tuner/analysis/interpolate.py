"""Weight-space interpolation between a pretrained backbone and a tuned model (WiSE-FT).

θ(α) moves the *backbone's change* from nothing (α = 0, the pretrained backbone) to all of
it (α = 1, the tuned model); the classifier head is always the tuned one, since a fresh
head has no pretrained value to return to (the seed study's CLIP runs interpolated a
zero-shot head too; ours have none). Every trained tensor is one of three kinds:

* the head: kept as tuned;
* a tensor of an added branch (a ``MergeScaled`` module: LoRA, adapters, prompts, SSF's
  and DiffFit's scales): kept as tuned, and the branch's ``merge_factor`` is set to α, so
  its contribution is scaled (this is how the study's ``merge_petl.py`` does it);
* a backbone tensor trained in place (full, BitFit, LayerNorm, DiffFit's biases):
  θ(α) = (1 − α)·θ₀ + α·θ with θ₀ its pretrained value.

Prompts are the exception that scaling cannot interpolate: a block sees its prompt tokens
only through its LayerNorm, which removes their scale, so for VPT every α > 0 gives the tuned
model and only α = 0 (prompts skipped) the pretrained one (measured on the quickstart: val and
test identical at α = 0.5 and 1). Their curve is a step, reported as such.

A trained tensor that is none of these (an added module outside ``MergeScaled``, or one
whose pretrained value is missing) cannot be interpolated: ``AnalysisError``.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from tuner.analysis.run import AnalysisError
from tuner.methods.base import MergeScaled, Method, head_parameters, set_merge_factor


class WeightPath:
    """A model whose trained state can be set anywhere on the α path.

    ``model`` has ``method`` applied; ``tuned`` is its trainable state
    (``trainable.safetensors``) and ``pretrained`` the backbone's named parameters as
    pretrained (a fresh ``create_backbone``): in-place tensors are looked up there by name.
    """

    def __init__(
        self,
        model: nn.Module,
        method: Method,
        tuned: Mapping[str, torch.Tensor],
        pretrained: Mapping[str, torch.Tensor],
    ) -> None:
        try:
            method.load_trainable_state_dict(model, dict(tuned), f"{method.name} weights")
        except ValueError as err:
            raise AnalysisError(str(err)) from err
        self.model = model
        head = {name for name, _ in head_parameters(model)}
        scaled = [m for m in model.modules() if isinstance(m, MergeScaled)]
        branch = {id(p) for m in scaled for p in m.parameters()}
        #: name → (parameter, pretrained value, tuned value) of in-place tensors
        self.in_place: dict[str, tuple[nn.Parameter, torch.Tensor, torch.Tensor]] = {}
        for name, param in method.trainable_parameters(model):
            if name in head or id(param) in branch:
                continue
            start = pretrained.get(name)
            if start is None or start.shape != param.shape:
                raise AnalysisError(
                    f"method {method.name!r} cannot interpolate: trained tensor {name} is "
                    "neither in a merge-scaled branch nor a pretrained backbone tensor"
                )
            self.in_place[name] = (param, start.detach().to(param), param.detach().clone())
        self.branches = len(scaled)

    @property
    def moves(self) -> bool:
        """Whether α changes anything (a linear probe's backbone never moved)."""
        return bool(self.in_place) or self.branches > 0

    @torch.no_grad()
    def set_alpha(self, alpha: float) -> None:
        """Put the model at θ(α): branches scaled by α, in-place tensors interpolated."""
        if not 0.0 <= alpha <= 1.0:
            raise AnalysisError(f"alpha must be in [0, 1], got {alpha}")
        set_merge_factor(self.model, alpha)
        for param, start, end in self.in_place.values():
            if alpha == 0.0:
                param.copy_(start)
            elif alpha == 1.0:
                param.copy_(end)
            else:
                param.copy_((1.0 - alpha) * start + alpha * end)
