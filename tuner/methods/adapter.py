"""Bottleneck adapters: Houlsby, Pfeiffer and AdaptFormer as declarations on one mechanism.

* Houlsby et al. (ICML 2019): sequential adapters after the attention and after the MLP
  of every block; per adapter 2·d·r + r + d parameters.
* Pfeiffer et al. (EACL 2021): one sequential adapter after the MLP.
* AdaptFormer (Chen et al., NeurIPS 2022): a parallel bottleneck beside the MLP, fed the
  block's residual stream ``x`` (not ``norm2(x)``: AdaptFormer's code and PETL_Vision's
  ``ft_mlp_ln: before``) and scaled by ``scale``.

As in the seed study (PETL_Vision ``model/adapter.py``) every adapter is
down → ReLU → dropout (0.1) → up → ×scale. Inits are the study's: AdaptFormer
``lora_kaiming`` (silent at start), Houlsby ``xavier`` (its ``rand_h_adapter``, which starts
random), Pfeiffer ``lora_xavier`` (its ``lora_p_adapter``, the Pfeiffer variant with VTAB-1k
results); ``init`` switches any of them. ``init: trunc_normal`` is the study's model as
built: its ViT's ``init_weights`` re-draws every adapter Linear (std 0.02, zero bias) after
the adapter's own init ran (``hooks.trunc_normal``), so there even AdaptFormer's up starts
non-zero.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field
from torch import nn

from tuner.methods.configs import MethodConfig
from tuner.methods.hooks import Bottleneck, BranchMethod, Placement, ProjectionInit, attach
from tuner.methods.registry import register

INIT_HELP = (
    "projection init: lora_kaiming / lora_xavier (up zero), xavier (random up), "
    "trunc_normal (std 0.02, zero bias: the first study's model as built)"
)


class AdapterConfig(MethodConfig):
    bottleneck: int = Field(8, ge=1, description="adapter hidden width r")
    scale: float = Field(1.0, allow_inf_nan=False, description="output scale of each adapter")
    init: ProjectionInit = Field("xavier", description=INIT_HELP)
    dropout: float = Field(
        0.1, ge=0, lt=1, description="dropout inside the bottleneck (the study's 0.1)"
    )


class PfeifferConfig(AdapterConfig):
    init: ProjectionInit = Field("lora_xavier", description=INIT_HELP)


class AdaptFormerConfig(AdapterConfig):
    scale: float = Field(0.1, allow_inf_nan=False, description="output scale of each adapter")
    init: ProjectionInit = Field("lora_kaiming", description=INIT_HELP)


class BottleneckAdapterMethod(BranchMethod):
    """Shared body: subclasses only say where adapters go and with which activation."""

    #: (submodule of each block, placement, submodule whose input feeds the branch or None)
    sites: ClassVar[tuple[tuple[str, Placement, str | None], ...]] = ()
    config: AdapterConfig

    @property
    def preserves_init(self) -> bool:  # type: ignore[override]
        return self.config.init.startswith("lora_")

    def inject(self, model: nn.Module) -> None:
        dim = model.embed_dim  # type: ignore[attr-defined]
        c = self.config
        for i, _ in enumerate(model.blocks):  # type: ignore[arg-type]
            for site, placement, source in self.sites:
                branch = Bottleneck(dim, c.bottleneck, c.scale, nn.ReLU, c.init, c.dropout)
                where = None if source is None else f"blocks.{i}.{source}"
                attach(model, f"blocks.{i}.{site}", branch, placement, where)


@register
class AdapterHoulsby(BottleneckAdapterMethod):
    name = "adapter_houlsby"
    description = "Houlsby adapters: sequential bottlenecks after attention and after the MLP."
    paper = "Houlsby et al., Parameter-Efficient Transfer Learning for NLP, ICML 2019"
    config_class = AdapterConfig
    sites = (("attn", "sequential", None), ("mlp", "sequential", None))


@register
class AdapterPfeiffer(BottleneckAdapterMethod):
    name = "adapter_pfeiffer"
    description = "Pfeiffer adapter: one sequential bottleneck after the MLP of each block."
    paper = "Pfeiffer et al., AdapterFusion, EACL 2021"
    config_class = PfeifferConfig
    sites = (("mlp", "sequential", None),)


@register
class AdaptFormer(BottleneckAdapterMethod):
    name = "adaptformer"
    description = "AdaptFormer: a scaled parallel bottleneck beside the MLP of each block."
    paper = "Chen et al., AdaptFormer, NeurIPS 2022"
    config_class = AdaptFormerConfig
    sites = (("mlp", "parallel", "norm2"),)
