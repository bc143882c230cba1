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
results); ``init`` switches any of them.
"""

from __future__ import annotations

from typing import ClassVar

from torch import nn

from tuner.methods import register
from tuner.methods.base import HParam
from tuner.methods.hooks import INITS, Bottleneck, BranchMethod, Placement, attach


class BottleneckAdapterMethod(BranchMethod):
    """Shared body: subclasses only say where adapters go and with which activation."""

    #: (submodule of each block, placement, submodule whose input feeds the branch or None)
    sites: ClassVar[tuple[tuple[str, Placement, str | None], ...]] = ()
    positive = ("bottleneck",)

    @property
    def preserves_init(self) -> bool:  # type: ignore[override]
        return self.hp["init"] != "xavier"

    def validate(self) -> None:
        super().validate()
        if self.hp["init"] not in INITS:
            raise ValueError(f"{self.name}: init must be one of {INITS}, got {self.hp['init']!r}")
        if not 0 <= float(self.hp["dropout"]) < 1:
            raise ValueError(f"{self.name}: dropout must be in [0, 1), got {self.hp['dropout']}")

    def inject(self, model: nn.Module) -> None:
        dim = model.embed_dim  # type: ignore[attr-defined]
        for i, _ in enumerate(model.blocks):  # type: ignore[arg-type]
            for site, placement, source in self.sites:
                branch = Bottleneck(
                    dim,
                    int(self.hp["bottleneck"]),
                    float(self.hp["scale"]),
                    nn.ReLU,
                    str(self.hp["init"]),
                    float(self.hp["dropout"]),
                )
                where = None if source is None else f"blocks.{i}.{source}"
                attach(model, f"blocks.{i}.{site}", branch, placement, where)


def adapter_hparams(scale: float, init: str) -> dict[str, HParam]:
    return {
        "bottleneck": HParam(8, "adapter hidden width r"),
        "scale": HParam(scale, "output scale of each adapter"),
        "init": HParam(init, f"projection init: {', '.join(INITS)}"),
        "dropout": HParam(0.1, "dropout inside the bottleneck (the study's 0.1)"),
    }


@register
class AdapterHoulsby(BottleneckAdapterMethod):
    name = "adapter_houlsby"
    description = "Houlsby adapters: sequential bottlenecks after attention and after the MLP."
    paper = "Houlsby et al., Parameter-Efficient Transfer Learning for NLP, ICML 2019"
    hparams = adapter_hparams(1.0, "xavier")
    sites = (("attn", "sequential", None), ("mlp", "sequential", None))


@register
class AdapterPfeiffer(BottleneckAdapterMethod):
    name = "adapter_pfeiffer"
    description = "Pfeiffer adapter: one sequential bottleneck after the MLP of each block."
    paper = "Pfeiffer et al., AdapterFusion, EACL 2021"
    hparams = adapter_hparams(1.0, "lora_xavier")
    sites = (("mlp", "sequential", None),)


@register
class AdaptFormer(BottleneckAdapterMethod):
    name = "adaptformer"
    description = "AdaptFormer: a scaled parallel bottleneck beside the MLP of each block."
    paper = "Chen et al., AdaptFormer, NeurIPS 2022"
    hparams = adapter_hparams(0.1, "lora_kaiming")
    sites = (("mlp", "parallel", "norm2"),)
