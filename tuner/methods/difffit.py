"""DiffFit: biases, LayerNorms and a learnable scale γ on each residual branch.

Xie et al. (ICCV 2023) fine-tune bias terms, norms and per-block scale factors γ that
multiply the attention and MLP branch outputs (γ starts at 1, so the model starts as the
pretrained one). γ is per channel here; α interpolates it as 1 + α(γ − 1).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from tuner.methods import register
from tuner.methods.base import MergeScaled, Method, head_parameters
from tuner.methods.bitfit import bias_parameters
from tuner.methods.hooks import branch_container
from tuner.methods.layernorm import layernorm_parameters


class BranchScale(MergeScaled):
    """Per-channel γ applied to a module's output: ``out · (1 + α(γ − 1))``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(dim))
        self.init_merge_factor()

    def hook(self, _m: nn.Module, _args: object, out: torch.Tensor) -> torch.Tensor:
        return out * (1 + self.merge_factor * (self.gamma - 1))


@register
class DiffFit(Method):
    name = "difffit"
    description = "DiffFit: biases, LayerNorms and a per-block scale on attention/MLP branches."
    paper = "Xie et al., DiffFit, ICCV 2023"

    def inject(self, model: nn.Module) -> None:
        container = branch_container(model)
        for i, block in enumerate(model.blocks):  # type: ignore[arg-type]
            for site in ("attn", "mlp"):
                scale = BranchScale(model.embed_dim)  # type: ignore[arg-type]
                container[f"blocks_{i}_{site}_gamma"] = scale
                getattr(block, site).register_forward_hook(scale.hook)

    def trainable_parameters(self, model: nn.Module) -> Iterator[tuple[str, nn.Parameter]]:
        seen: set[int] = set()
        gammas = [(f"petl_branches.{n}", p) for n, p in model.petl_branches.named_parameters()]
        for name, param in [
            *bias_parameters(model),
            *layernorm_parameters(model),
            *gammas,
            *head_parameters(model),
        ]:
            if id(param) not in seen:
                seen.add(id(param))
                yield name, param
