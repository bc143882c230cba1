"""Visual Prompt Tuning, deep and shallow (Jia et al., ECCV 2022).

P learnable prompt tokens are placed after the prefix (class/register) tokens at the input
of every block (deep) or of the first (shallow); in deep VPT each block gets its own
prompts, replacing the previous block's outputs at those positions. They are stripped after
the last block, so pooling, norm and head see the sequence they were built for. The hooks
(``hooks.pre_hook``/``post_hook``) splice into the timm blocks from outside, and the prompts
live on a module added to the model, so ``state_dict``/``.to()`` carry them.

Shallow VPT's ``prompt_scope``: ``all_blocks`` (default) is the VPT paper, whose shallow
prompts are inserted once and then travel through every block (study 001, ``vpt_vs_ft``,
follows it). ``first_block`` is the first study's code (PETL_Vision 245d262):
``model/vpt.py`` gives shallow VPT one prompt layer, and ``forward_features`` in
``model/vision_transformer.py`` strips ``x[:, vpt_num:]`` right after the block that
prepended them, so its prompts exist inside block 0 only. (Where prompts sit, before or
after the class token, does not matter: attention is permutation-equivariant and the
position embedding is added before.)

``merge_factor`` α scales the prompts; α = 0 skips them entirely (the pretrained model).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Literal

import torch
from pydantic import Field
from torch import nn

from tuner.methods.base import MergeScaled, Method, head_parameters
from tuner.methods.configs import MethodConfig
from tuner.methods.hooks import post_hook, pre_hook
from tuner.methods.registry import register

PromptScope = Literal["all_blocks", "first_block"]


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


def inject_prompts(
    model: nn.Module, length: int, dropout: float, deep: bool, strip_after: int = -1
) -> DeepPrompts:
    """Add prompts to every block (deep) or to the first block only (shallow), and strip
    them after block ``strip_after`` (the last by default)."""
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
    for i in range(prompts.prompts.shape[0]):
        pre_hook(model, f"blocks.{i}", lambda x, i=i: prompts.splice(i, x))
    post_hook(model, f"blocks.{strip_after % len(blocks)}", prompts.strip)
    return prompts


class VPTConfig(MethodConfig):
    prompt_length: int = Field(10, ge=1, description="prompt tokens per block")
    prompt_dropout: float = Field(0.1, ge=0, lt=1, description="dropout on the prompt tokens")


class VPTShallowConfig(MethodConfig):
    prompt_length: int = Field(10, ge=1, description="prompt tokens at the input")
    prompt_dropout: float = Field(0.1, ge=0, lt=1, description="dropout on the prompt tokens")
    prompt_scope: PromptScope = Field(
        "all_blocks",
        description="all_blocks: prompts travel through every block (VPT paper); "
        "first_block: stripped after block 0 (the first study's code)",
    )


@register
class VPTDeep(Method):
    name = "vpt_deep"
    description = "VPT-deep: learnable prompt tokens prepended at the input of every block."
    paper = "Jia et al., Visual Prompt Tuning, ECCV 2022"
    preserves_init = False  # prompts attend from the first step
    config_class = VPTConfig
    config: VPTConfig

    def inject(self, model: nn.Module) -> None:
        inject_prompts(model, self.config.prompt_length, self.config.prompt_dropout, deep=True)

    def trainable_parameters(self, model: nn.Module) -> Iterator[tuple[str, nn.Parameter]]:
        yield "petl_prompts.prompts", model.petl_prompts.prompts  # type: ignore[union-attr]
        yield from head_parameters(model)


@register
class VPTShallow(VPTDeep):
    name = "vpt_shallow"
    description = "VPT-shallow: learnable prompt tokens at the input of the first block only."
    config_class = VPTShallowConfig
    config: VPTShallowConfig  # type: ignore[assignment]

    def inject(self, model: nn.Module) -> None:
        c = self.config
        strip_after = 0 if c.prompt_scope == "first_block" else -1
        inject_prompts(model, c.prompt_length, c.prompt_dropout, deep=False,
                       strip_after=strip_after)  # fmt: skip
