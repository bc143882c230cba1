"""Bottleneck adapters: Houlsby, Pfeiffer and AdaptFormer as declarations on one mechanism.

* Houlsby et al. (ICML 2019): sequential adapters after the attention and after the MLP
  of every block; per adapter 2·d·r + r + d parameters.
* Pfeiffer et al. (EACL 2021): one sequential adapter after the MLP.
* AdaptFormer (Chen et al., NeurIPS 2022): a parallel bottleneck beside the MLP, fed the
  MLP's input and scaled by ``scale`` (0.1 in the paper); ReLU inside.

All start with a zero up-projection, so ``apply`` leaves the pretrained function intact.
"""

from __future__ import annotations

from typing import ClassVar

from torch import nn

from tuner.methods import register
from tuner.methods.base import HParam
from tuner.methods.hooks import Bottleneck, BranchMethod, Placement, attach


class BottleneckAdapterMethod(BranchMethod):
    """Shared body: subclasses only say where adapters go and with which activation."""

    #: (submodule of each block, placement)
    sites: ClassVar[tuple[tuple[str, Placement], ...]] = ()
    activation: ClassVar[type[nn.Module]] = nn.GELU
    positive = ("bottleneck",)

    def inject(self, model: nn.Module) -> None:
        dim = model.embed_dim  # type: ignore[attr-defined]
        for i, _ in enumerate(model.blocks):  # type: ignore[arg-type]
            for site, placement in self.sites:
                branch = Bottleneck(
                    dim, int(self.hp["bottleneck"]), float(self.hp["scale"]), self.activation
                )
                attach(model, f"blocks.{i}.{site}", branch, placement)


@register
class AdapterHoulsby(BottleneckAdapterMethod):
    name = "adapter_houlsby"
    description = "Houlsby adapters: sequential bottlenecks after attention and after the MLP."
    paper = "Houlsby et al., Parameter-Efficient Transfer Learning for NLP, ICML 2019"
    hparams = {
        "bottleneck": HParam(8, "adapter hidden width r"),
        "scale": HParam(1.0, "output scale of each adapter"),
    }
    sites = (("attn", "sequential"), ("mlp", "sequential"))


@register
class AdapterPfeiffer(BottleneckAdapterMethod):
    name = "adapter_pfeiffer"
    description = "Pfeiffer adapter: one sequential bottleneck after the MLP of each block."
    paper = "Pfeiffer et al., AdapterFusion, EACL 2021"
    hparams = {
        "bottleneck": HParam(8, "adapter hidden width r"),
        "scale": HParam(1.0, "output scale of each adapter"),
    }
    sites = (("mlp", "sequential"),)


@register
class AdaptFormer(BottleneckAdapterMethod):
    name = "adaptformer"
    description = "AdaptFormer: a scaled parallel bottleneck beside the MLP of each block."
    paper = "Chen et al., AdaptFormer, NeurIPS 2022"
    hparams = {
        "bottleneck": HParam(8, "adapter hidden width r"),
        "scale": HParam(0.1, "scale s of the parallel branch"),
    }
    sites = (("mlp", "parallel"),)
    activation = nn.ReLU
