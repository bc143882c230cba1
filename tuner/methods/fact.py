"""FacT: factor-tuning, the weight updates of all layers as one low-rank tensor.

Jie & Deng (AAAI 2023) stack the d×d slices of every block's weights — q, k, v, proj and
the four d×d chunks of fc1 and of fc2, 12 slices per block — and update them as
``ΔW_s = scale · V · Σ_s · U`` with U (r×d) and V (d×r) shared by all slices:

* FacT-TT: each slice has its own r×r core Σ_s;  2·d·r + 12·L·r² parameters.
* FacT-TK: Σ_s = Σ_k C[:, :, k] · P[s, k], a shared r×r×r core C and a row of P per slice;
  2·d·r + r³ + 12·L·r parameters.

V starts at zero, so the model starts as the pretrained one; ``merge`` adds ΔW to the
weights. Wrapped linears apply the update low-rank (x → U → Σ → dropout → V) instead of
forming ΔW; the dropout (0.1) is the seed study's (PETL_Vision ``model/fact.py``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import ClassVar

import torch
from torch import nn

from tuner.methods import register
from tuner.methods.base import HParam, MergeScaled, Method, head_parameters
from tuner.methods.lora import modules_of_type

#: (layer path inside a block, output chunks, input chunks): 3 + 1 + 4 + 4 = 12 slices
TARGETS = (("attn.qkv", 3, 1), ("attn.proj", 1, 1), ("mlp.fc1", 4, 1), ("mlp.fc2", 1, 4))
SLICES_PER_BLOCK = sum(o * i for _, o, i in TARGETS)


class Factors(MergeScaled):
    """The shared factors and the per-slice cores (TT) or Tucker core and loadings (TK)."""

    def __init__(
        self, form: str, dim: int, rank: int, slices: int, scale: float, dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.form, self.scale = form, float(scale)
        self.dropout = nn.Dropout(float(dropout))
        self.u = nn.Parameter(nn.init.xavier_uniform_(torch.empty(rank, dim)))
        self.v = nn.Parameter(torch.zeros(dim, rank))
        if form == "tt":
            self.cores = nn.Parameter(nn.init.xavier_uniform_(torch.empty(slices, rank, rank)))
        else:
            self.core = nn.Parameter(nn.init.xavier_uniform_(torch.empty(rank, rank, rank)))
            self.loadings = nn.Parameter(nn.init.xavier_uniform_(torch.empty(slices, rank)))
        self.init_merge_factor()

    def sigma(self, index: int) -> torch.Tensor:
        if self.form == "tt":
            return self.cores[index]
        return torch.einsum("ijk,k->ij", self.core, self.loadings[index])

    def delta(self, index: int) -> torch.Tensor:
        """ΔW of one d×d slice."""
        return self.merge_factor * self.scale * (self.v @ self.sigma(index) @ self.u)


class FactLinear(nn.Module):
    """A frozen linear plus the FacT update of its slices (factors held by reference)."""

    def __init__(
        self, base: nn.Linear, factors: Factors, first: int, out_chunks: int, in_chunks: int
    ) -> None:
        super().__init__()
        self.base = base
        object.__setattr__(self, "factors", factors)  # shared: not a submodule of each layer
        self.first, self.out_chunks, self.in_chunks = first, out_chunks, in_chunks
        self.in_features, self.out_features = base.in_features, base.out_features

    def _index(self, o: int, i: int) -> int:
        return self.first + o * self.in_chunks + i

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.factors
        dim = f.u.shape[1]
        xs = x.split(dim, dim=-1)
        hs = [xi @ f.u.t() for xi in xs]
        outs = []
        for o in range(self.out_chunks):
            h = sum(hs[i] @ f.sigma(self._index(o, i)).t() for i in range(self.in_chunks))
            outs.append(f.dropout(h) @ f.v.t())
        update = torch.cat(outs, dim=-1)
        return self.base(x) + f.merge_factor * f.scale * update

    def delta_weight(self) -> torch.Tensor:
        rows = [
            torch.cat([self.factors.delta(self._index(o, i)) for i in range(self.in_chunks)], dim=1)
            for o in range(self.out_chunks)
        ]
        return torch.cat(rows, dim=0)


class FacT(Method):
    form: ClassVar[str]

    def validate(self) -> None:
        if int(self.hp["dim"]) < 1:
            raise ValueError(f"{self.name}: dim must be >= 1, got {self.hp['dim']}")

    def inject(self, model: nn.Module) -> None:
        blocks = list(model.blocks)  # type: ignore[arg-type]
        factors = Factors(
            self.form,
            model.embed_dim,
            int(self.hp["dim"]),  # type: ignore[arg-type]
            SLICES_PER_BLOCK * len(blocks),
            float(self.hp["scale"]),
            float(self.hp["dropout"]),
        )
        model.add_module("petl_fact", factors)
        for b, block in enumerate(blocks):
            first = b * SLICES_PER_BLOCK
            for path, out_chunks, in_chunks in TARGETS:
                layer = block.get_submodule(path)
                block.set_submodule(path, FactLinear(layer, factors, first, out_chunks, in_chunks))
                first += out_chunks * in_chunks

    def trainable_parameters(self, model: nn.Module) -> Iterator[tuple[str, nn.Parameter]]:
        for name, param in model.petl_fact.named_parameters():  # type: ignore[union-attr]
            yield f"petl_fact.{name}", param
        yield from head_parameters(model)

    def merge(self, model: nn.Module) -> nn.Module:
        for name, module in list(modules_of_type(model, FactLinear)):
            with torch.no_grad():
                module.base.weight += module.delta_weight().to(module.base.weight.dtype)
            model.set_submodule(name, module.base)
        del model.petl_fact
        return model


@register
class FacTTT(FacT):
    name = "fact_tt"
    description = "FacT-TT: shared low-rank factors with a core per weight slice (tensor-train)."
    paper = "Jie & Deng, FacT: Factor-Tuning for Lightweight Adaptation on ViT, AAAI 2023"
    hparams = {
        "dim": HParam(8, "rank r of the factors"),
        "scale": HParam(1.0, "update scale s"),
        "dropout": HParam(0.1, "dropout inside the update (the study's 0.1)"),
    }
    reparameterisable = True
    form = "tt"


@register
class FacTTK(FacT):
    name = "fact_tk"
    description = "FacT-TK: shared low-rank factors with a Tucker core across all slices."
    paper = "Jie & Deng, FacT: Factor-Tuning for Lightweight Adaptation on ViT, AAAI 2023"
    hparams = {
        "dim": HParam(32, "rank r of the factors"),
        "scale": HParam(1.0, "update scale s"),
        "dropout": HParam(0.1, "dropout inside the update (the study's 0.1)"),
    }
    reparameterisable = True
    form = "tk"
