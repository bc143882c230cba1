"""Visual Prompt Tuning, deep variant (Jia et al., ECCV 2022).

P learnable prompt tokens are placed after the prefix (class/register) tokens at the input
of every block; each block gets its own prompts, replacing the previous block's outputs at
those positions. They are stripped after the last block, so pooling, norm and head see the
sequence they were built for. Hooks live on a module that is added to the model, so the
ViT's code is untouched and ``state_dict``/``.to()`` carry the prompts.

``merge_factor`` α scales the prompts; α = 0 skips them entirely (the pretrained model).
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch import nn

from tuner.methods import register
from tuner.methods.base import HParam, MergeScaled, Method, head_parameters


class DeepPrompts(MergeScaled):
    """Per-block prompt tokens and the hooks that splice them into the token sequence."""

    def __init__(
        self, depth: int, length: int, dim: int, patch_area: int, num_prefix: int, dropout: float
    ) -> None:
        super().__init__()
        # VPT's initialisation: uniform with the Xavier bound of a patch-embedding projection.
        bound = math.sqrt(6.0 / float(3 * patch_area + dim))
        self.prompts = nn.Parameter(torch.empty(depth, length, dim).uniform_(-bound, bound))
        self.num_prefix = num_prefix
        self.dropout = nn.Dropout(dropout)
        self.init_merge_factor()

    @property
    def length(self) -> int:
        return self.prompts.shape[1]

    def active(self) -> bool:
        return bool(self.merge_factor != 0)

    def splice(self, block_idx: int, x: torch.Tensor) -> torch.Tensor:
        """Insert (block 0) or overwrite (later blocks) this block's prompts in ``x``."""
        if not self.active():
            return x
        p = self.dropout(self.merge_factor * self.prompts[block_idx]).to(x.dtype)
        p = p.unsqueeze(0).expand(x.shape[0], -1, -1)
        prefix = x[:, : self.num_prefix]
        rest = x[:, self.num_prefix + (self.length if block_idx > 0 else 0) :]
        return torch.cat([prefix, p, rest], dim=1)

    def strip(self, x: torch.Tensor) -> torch.Tensor:
        if not self.active():
            return x
        return torch.cat([x[:, : self.num_prefix], x[:, self.num_prefix + self.length :]], dim=1)


def _make_pre_hook(prompts: DeepPrompts, block_idx: int):
    def hook(_module: nn.Module, args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        return (prompts.splice(block_idx, args[0]), *args[1:])

    return hook


def _make_strip_hook(prompts: DeepPrompts):
    def hook(_module: nn.Module, _args: object, output: torch.Tensor) -> torch.Tensor:
        return prompts.strip(output)

    return hook


def inject_prompts(model: nn.Module, length: int, dropout: float, deep: bool) -> DeepPrompts:
    """Add prompts to every block (deep) or to the first block only (shallow)."""
    blocks = list(model.blocks)  # type: ignore[arg-type]
    patch = model.patch_embed.patch_size  # type: ignore[union-attr]
    prompts = DeepPrompts(
        depth=len(blocks) if deep else 1,
        length=length,
        dim=model.embed_dim,  # type: ignore[arg-type]
        patch_area=int(patch[0] * patch[1]),
        num_prefix=model.num_prefix_tokens,  # type: ignore[arg-type]
        dropout=dropout,
    )
    model.add_module("petl_prompts", prompts)
    for i, block in enumerate(blocks[: prompts.prompts.shape[0]]):
        block.register_forward_pre_hook(_make_pre_hook(prompts, i))
    blocks[-1].register_forward_hook(_make_strip_hook(prompts))
    return prompts


@register
class VPTDeep(Method):
    name = "vpt_deep"
    description = "VPT-deep: learnable prompt tokens prepended at the input of every block."
    paper = "Jia et al., Visual Prompt Tuning, ECCV 2022"
    preserves_init = False  # prompts attend from the first step
    hparams = {
        "prompt_length": HParam(10, "prompt tokens per block"),
        "prompt_dropout": HParam(0.1, "dropout on the prompt tokens"),
    }

    def validate(self) -> None:
        if int(self.hp["prompt_length"]) < 1:
            raise ValueError(f"vpt: prompt_length must be >= 1, got {self.hp['prompt_length']}")

    def inject(self, model: nn.Module) -> None:
        inject_prompts(
            model, int(self.hp["prompt_length"]), float(self.hp["prompt_dropout"]), deep=True
        )

    def trainable_parameters(self, model: nn.Module) -> Iterator[tuple[str, nn.Parameter]]:
        yield "petl_prompts.prompts", model.petl_prompts.prompts  # type: ignore[union-attr]
        yield from head_parameters(model)


@register
class VPTShallow(VPTDeep):
    name = "vpt_shallow"
    description = "VPT-shallow: learnable prompt tokens at the input of the first block only."
    hparams = {
        "prompt_length": HParam(10, "prompt tokens at the input"),
        "prompt_dropout": HParam(0.1, "dropout on the prompt tokens"),
    }

    def inject(self, model: nn.Module) -> None:
        inject_prompts(
            model, int(self.hp["prompt_length"]), float(self.hp["prompt_dropout"]), deep=False
        )
