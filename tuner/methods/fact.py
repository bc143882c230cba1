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

Two options reproduce the first study's model as it was built (PETL_Vision 245d262):

* ``init: trunc_normal``: U, V (and FacT-TT's cores, ``nn.Linear`` there) trunc_normal std
  0.02, as the study's ViT ``init_weights`` leaves them; FacT-TK's core and loadings are
  plain parameters there and keep their xavier init (``hooks.trunc_normal``).
* ``mlp_layout: petl_vision`` (FacT-TK): ``model/fact.py`` (lines 100-116, ``mlp_1`` and
  ``mlp_2``) reshapes the four fc1 (fc2) slices' cores ``(r, r, 4)`` to ``(r, 4r)`` and
  cuts contiguous r-column blocks, so d×d chunk c of fc1/fc2 gets rows ``c·r … c·r+r−1`` of
  the slices' cores interleaved (row j of slice k at position ``4j + k``): each chunk
  mixes all four slices. ``per_slice`` (default) gives each chunk its own slice, the clean
  Tucker layout of the paper. The attention slices are the same in both.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import ClassVar, Literal

import torch
from pydantic import Field
from torch import nn

from tuner.methods.base import MergeScaled, Method, head_parameters
from tuner.methods.configs import MethodConfig
from tuner.methods.hooks import modules_of_type, trunc_normal, wrap_linear
from tuner.methods.registry import register

FactInit = Literal["xavier_zero", "trunc_normal"]
MlpLayout = Literal["per_slice", "petl_vision"]

#: (layer path inside a block, output chunks, input chunks): 3 + 1 + 4 + 4 = 12 slices
TARGETS = (("attn.qkv", 3, 1), ("attn.proj", 1, 1), ("mlp.fc1", 4, 1), ("mlp.fc2", 1, 4))
SLICES_PER_BLOCK = sum(o * i for _, o, i in TARGETS)


class Factors(MergeScaled):
    """The shared factors and the per-slice cores (TT) or Tucker core and loadings (TK)."""

    def __init__(
        self,
        form: str,
        dim: int,
        rank: int,
        slices: int,
        scale: float,
        dropout: float = 0.0,
        init: FactInit = "xavier_zero",
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
        if init == "trunc_normal":
            trunc_normal([self.u, self.v] + ([self.cores] if form == "tt" else []))
        self.init_merge_factor()

    def sigma(self, index: int) -> torch.Tensor:
        if self.form == "tt":
            return self.cores[index]
        return torch.einsum("ijk,k->ij", self.core, self.loadings[index])

    def mixed_sigma(self, first: int, chunk: int) -> torch.Tensor:
        """The core of d×d chunk ``chunk`` of an fc1/fc2 whose four slices start at ``first``,
        in PETL_Vision's layout: the slices' rows interleaved (row j of slice k at 4j + k),
        chunk c taking rows c·r … c·r + r − 1 (``model/fact.py``, ``mlp_1``)."""
        rank = self.u.shape[0]
        stacked = torch.stack([self.sigma(first + k) for k in range(4)])  # (4, r, r)
        rows = stacked.transpose(0, 1).reshape(4 * rank, rank)
        return rows[chunk * rank : (chunk + 1) * rank]


class FactLinear(nn.Module):
    """A frozen linear plus the FacT update of its slices (factors held by reference).

    ``mixed``: the four fc1/fc2 chunks take their cores in PETL_Vision's layout
    (``Factors.mixed_sigma``); fc2's (input chunks) is the transpose, as ``mlp_2`` multiplies
    by the reshaped core's transpose.
    """

    def __init__(
        self,
        base: nn.Linear,
        factors: Factors,
        first: int,
        out_chunks: int,
        in_chunks: int,
        mixed: bool = False,
    ) -> None:
        super().__init__()
        self.base = base
        object.__setattr__(self, "factors", factors)  # shared: not a submodule of each layer
        self.first, self.out_chunks, self.in_chunks = first, out_chunks, in_chunks
        self.mixed = mixed and out_chunks * in_chunks == 4
        self.in_features, self.out_features = base.in_features, base.out_features

    def sigma(self, o: int, i: int) -> torch.Tensor:
        """The r×r core of the chunk in output block ``o`` and input block ``i``."""
        if not self.mixed:
            return self.factors.sigma(self.first + o * self.in_chunks + i)
        if self.out_chunks > 1:
            return self.factors.mixed_sigma(self.first, o)
        return self.factors.mixed_sigma(self.first, i).t()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.factors
        dim = f.u.shape[1]
        xs = x.split(dim, dim=-1)
        hs = [xi @ f.u.t() for xi in xs]
        outs = []
        for o in range(self.out_chunks):
            h = sum(hs[i] @ self.sigma(o, i).t() for i in range(self.in_chunks))
            outs.append(f.dropout(h) @ f.v.t())
        update = torch.cat(outs, dim=-1)
        return self.base(x) + f.merge_factor * f.scale * update

    def delta_weight(self) -> torch.Tensor:
        f = self.factors
        rows = [
            torch.cat([f.v @ self.sigma(o, i) @ f.u for i in range(self.in_chunks)], dim=1)
            for o in range(self.out_chunks)
        ]
        return f.merge_factor * f.scale * torch.cat(rows, dim=0)


class FacTConfig(MethodConfig):
    dim: int = Field(8, ge=1, description="rank r of the factors")
    scale: float = Field(1.0, allow_inf_nan=False, description="update scale s")
    dropout: float = Field(
        0.1, ge=0, lt=1, description="dropout inside the update (the study's 0.1)"
    )
    init: FactInit = Field(
        "xavier_zero",
        description="xavier_zero: U (TT cores) xavier, V zero (FacT's code); trunc_normal: "
        "U, V (TT cores) std 0.02 (the first study's model as built)",
    )


class FacTTKConfig(FacTConfig):
    dim: int = Field(32, ge=1, description="rank r of the factors")
    mlp_layout: MlpLayout = Field(
        "per_slice",
        description="fc1/fc2 chunk cores: per_slice (one slice each, the paper) or "
        "petl_vision (the first study's reshape mixes the four slices)",
    )


class FacT(Method):
    form: ClassVar[str]
    config: FacTConfig

    @property
    def preserves_init(self) -> bool:  # type: ignore[override]
        return self.config.init == "xavier_zero"

    def inject(self, model: nn.Module) -> None:
        blocks = list(model.blocks)  # type: ignore[arg-type]
        c = self.config
        factors = Factors(self.form, model.embed_dim, c.dim, SLICES_PER_BLOCK * len(blocks),  # type: ignore[arg-type]
                          c.scale, c.dropout, c.init)  # fmt: skip
        mixed = getattr(c, "mlp_layout", "per_slice") == "petl_vision"
        model.add_module("petl_fact", factors)
        for b, _ in enumerate(blocks):
            first = b * SLICES_PER_BLOCK
            for path, out_chunks, in_chunks in TARGETS:
                wrap_linear(model, f"blocks.{b}.{path}", FactLinear, factors=factors,
                            first=first, out_chunks=out_chunks, in_chunks=in_chunks,
                            mixed=mixed)  # fmt: skip
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
    config_class = FacTConfig
    reparameterisable = True
    form = "tt"


@register
class FacTTK(FacT):
    name = "fact_tk"
    description = "FacT-TK: shared low-rank factors with a Tucker core across all slices."
    paper = "Jie & Deng, FacT: Factor-Tuning for Lightweight Adaptation on ViT, AAAI 2023"
    config_class = FacTTKConfig
    reparameterisable = True
    form = "tk"
