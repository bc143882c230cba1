"""SSF: scale and shift the features after each operation (Lian et al., NeurIPS 2022).

A per-channel ``y ← γ ⊙ y + β`` after qkv, proj, fc1, fc2, both norms of every block, the
patch embedding and the final norm. Following the paper's code, γ ~ N(1, 0.02) and
β ~ N(0, 0.02), so the model is *not* exactly the pretrained one at initialisation. Every
site follows a linear map (or LayerNorm / the patch conv), so ``merge`` folds γ, β into
its weight and bias: zero inference overhead.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from tuner.methods.base import MergeScaled, Method, head_parameters
from tuner.methods.hooks import CONTAINER, attach, branch_parameters
from tuner.methods.registry import register

BLOCK_SITES = ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2", "norm1", "norm2")


class ScaleShift(MergeScaled):
    """γ, β over the last dimension, interpolated by α as 1 + α(γ − 1) and αβ."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.empty(dim).normal_(1.0, 0.02))
        self.beta = nn.Parameter(torch.empty(dim).normal_(0.0, 0.02))
        self.init_merge_factor()

    def effective(self) -> tuple[torch.Tensor, torch.Tensor]:
        a = self.merge_factor
        return 1 + a * (self.gamma - 1), a * self.beta

    def forward(self, out: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.effective()
        return out * gamma + beta


def _sites(model: nn.Module) -> list[str]:
    """Patch embedding, the model's final LayerNorms (``norm``/``fc_norm`` where real) and
    the six per-block sites."""
    sites = ["patch_embed"]
    sites += [n for n in ("norm", "fc_norm") if isinstance(getattr(model, n, None), nn.LayerNorm)]
    for i, _ in enumerate(model.blocks):  # type: ignore[arg-type]
        sites += [f"blocks.{i}.{s}" for s in BLOCK_SITES]
    return sites


def _out_features(module: nn.Module) -> int:
    if isinstance(module, nn.Linear):
        return module.out_features
    if isinstance(module, nn.LayerNorm):
        return int(module.normalized_shape[0])
    return int(module.proj.out_channels)  # timm PatchEmbed


def _fold(module: nn.Module, gamma: torch.Tensor, beta: torch.Tensor) -> None:
    """Make ``module`` compute γ ⊙ module(x) + β by itself."""
    target = (
        module.proj if hasattr(module, "proj") and not isinstance(module, nn.Linear) else module
    )
    with torch.no_grad():
        shape = (-1,) + (1,) * (target.weight.ndim - 1)
        target.weight.mul_(gamma.view(shape))
        if target.bias is None:
            target.bias = nn.Parameter(torch.zeros_like(gamma))
        target.bias.mul_(gamma).add_(beta)


def _fold_into_positions(model: nn.Module, gamma: torch.Tensor, beta: torch.Tensor) -> bool:
    """Fold the patch embedding's γ, β where its conv has no bias (CLIP: pre-norm ViTs drop
    it): γ scales the kernel and β joins the patch rows of ``pos_embed``, which every patch
    token gets next, so the merged model keeps the plain backbone's tensors."""
    proj, pos = model.patch_embed.proj, getattr(model, "pos_embed", None)  # type: ignore[union-attr]
    if proj.bias is not None or not isinstance(pos, nn.Parameter):
        return False
    start = 0 if getattr(model, "no_embed_class", False) else int(model.num_prefix_tokens)
    with torch.no_grad():
        proj.weight.mul_(gamma.view(-1, 1, 1, 1))
        pos[:, start:] += beta
    return True


@register
class SSF(Method):
    name = "ssf"
    description = "SSF: learnable per-channel scale and shift after every operation."
    paper = "Lian et al., Scaling & Shifting Your Features, NeurIPS 2022"
    reparameterisable = True
    preserves_init = False  # γ ~ N(1, 0.02), β ~ N(0, 0.02) as in the paper's code

    def inject(self, model: nn.Module) -> None:
        for path in _sites(model):
            site = ScaleShift(_out_features(model.get_submodule(path)))
            attach(model, path, site, "output")

    def trainable_parameters(self, model: nn.Module) -> Iterator[tuple[str, nn.Parameter]]:
        yield from branch_parameters(model)
        yield from head_parameters(model)

    def merge(self, model: nn.Module) -> nn.Module:
        container = getattr(model, CONTAINER)
        for path in _sites(model):
            site = container[path.replace(".", "_")]
            gamma, beta = site.effective()
            if path == "patch_embed" and _fold_into_positions(model, gamma.detach(), beta.detach()):
                site.hook_handle.remove()
                continue
            _fold(model.get_submodule(path), gamma.detach(), beta.detach())
            site.hook_handle.remove()
        delattr(model, CONTAINER)
        return model
