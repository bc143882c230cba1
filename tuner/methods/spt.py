"""SPT: decide *where* to tune from gradient sensitivity, under a parameter budget.

He et al. (ICCV 2023) score every backbone weight by its accumulated squared gradient on a
few task batches (:mod:`tuner.sensitivity`), take the top-τ entries and then, per weight
matrix (q, k and v separately, although timm fuses them into ``qkv``; proj; fc1; fc2):

* enough sensitive entries (≥ cost of one module / α) → a *structured* module: LoRA beside
  the matrix (``spt_lora``) or a bottleneck adapter after it (``spt_adapter``);
* otherwise only its sensitive entries train (*unstructured*).

Vectors (norm affines, biases) train whole when ≥ dim / β of their entries are sensitive,
else stay frozen. Head and class token always train; patch and position embeddings never.

Two choices of ours, both stated in the allocation report:

* **The budget is exact.** A structured module costs more (or less) than the entries it
  replaces, so the realised count drifts from τ. We binary-search the number of top entries
  whose allocation fits τ, then fill what is left with the next most sensitive entries of
  unstructured matrices: the realised count (excluding head and class token) equals τ.
* **Unstructured entries are a sparse delta**, ``W = W₀ + scatter(δ)``, with ``W₀`` frozen.
  Masking gradients of ``W`` instead would let AdamW's decoupled weight decay shrink every
  *frozen* entry too. Here frozen entries are bit-identical by construction, and weight
  decay on δ pulls the tuned entries back toward their pretrained values.

``budget`` is a fraction of the eligible backbone parameters, so one search space serves
every ViT size (the paper's 0.2–1.0 M on ViT-B/16 is 0.24–1.18 %).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

from tuner.methods.base import HParam, MergeScaled, Method, head_parameters
from tuner.methods.hooks import Bottleneck

Structure = Literal["lora", "adapter"]
#: Attribute on the model listing the vectors SPT trains whole (names after wrapping).
WHOLE_VECTORS = "spt_whole_vectors"


@dataclass(frozen=True)
class Unit:
    """One allocation unit: a weight matrix (or q/k/v rows of a fused qkv) or a vector."""

    name: str  # e.g. "blocks.3.attn.qkv[q]", "blocks.3.norm1.weight"
    param: str  # the backbone parameter it lives in
    kind: Literal["matrix", "vector"]
    rows: tuple[int, int]  # row range within ``param`` (matrices); (0, dim) for vectors
    cols: int  # in_features (matrices); 1 for vectors

    @property
    def numel(self) -> int:
        return (self.rows[1] - self.rows[0]) * self.cols

    @property
    def module(self) -> str:
        return self.param.rpartition(".")[0]


def allocation_units(model: nn.Module) -> list[Unit]:
    """Every unit SPT may tune, in model order: block linears and vectors, final norm."""
    units: list[Unit] = []
    params = dict(model.named_parameters())
    for name, module in model.named_modules():
        if not name.startswith("blocks.") or not isinstance(module, nn.Linear):
            continue
        out, cols = module.weight.shape
        if name.endswith(".qkv") and out % 3 == 0:
            d = out // 3
            for i, part in enumerate("qkv"):
                units.append(
                    Unit(f"{name}[{part}]", f"{name}.weight", "matrix", (i * d, i * d + d), cols)
                )
        else:
            units.append(Unit(name, f"{name}.weight", "matrix", (0, out), cols))
    for name, param in params.items():
        in_blocks = name.startswith("blocks.")
        if param.ndim == 1 and (in_blocks or name.startswith(("norm.", "fc_norm."))):
            units.append(Unit(name, name, "vector", (0, param.numel()), 1))
    return units


def eligible_params(model: nn.Module) -> int:
    """How many entries SPT allocates among (the denominator of ``budget``)."""
    return sum(u.numel for u in allocation_units(model))


def unit_scores(unit: Unit, scores: dict[str, torch.Tensor]) -> torch.Tensor:
    """The flattened sensitivity of one unit."""
    try:
        full = scores[unit.param]
    except KeyError:
        raise ValueError(
            f"sensitivity scores lack {unit.param!r} (scores for another backbone?)"
        ) from None
    if full.ndim == 1:
        return full.float().flatten()
    return full[unit.rows[0] : unit.rows[1]].float().flatten()


@dataclass
class Allocation:
    """The outcome of an allocation: what each unit gets, and what it costs."""

    budget: int
    structured: dict[str, int]  # matrix unit → cost of its structured module
    whole: dict[str, int]  # vector unit trained whole → its size
    sparse: dict[str, torch.Tensor]  # matrix unit → flat indices (within the unit) of entries
    sensitive: dict[str, int]  # unit → its entries among the top-k that decided the kinds
    top_k: int

    @property
    def realised(self) -> int:
        sparse = sum(int(i.numel()) for i in self.sparse.values())
        return sum(self.structured.values()) + sum(self.whole.values()) + sparse


def allocate(
    units: list[Unit],
    scores: dict[str, torch.Tensor],
    budget: int,
    module_cost: dict[str, int],
    alpha: float,
    beta: float,
) -> Allocation:
    """SPT's allocation of ``budget`` parameters (see the module docstring).

    The realised count equals ``budget`` unless the budget exceeds what SPT can place
    (every matrix entry plus every vector), where it is all of that.
    """
    flat = torch.cat([unit_scores(u, scores).cpu() for u in units])
    sizes = torch.tensor([u.numel for u in units])
    owner = torch.repeat_interleave(torch.arange(len(units)), sizes)
    starts = torch.cumsum(sizes, 0) - sizes
    budget = int(min(max(budget, 0), flat.numel()))
    order = _top_order(flat, min(flat.numel(), max(2 * budget, 4096)))
    matrix = torch.tensor([u.kind == "matrix" for u in units])
    cost_struct = torch.tensor([module_cost.get(u.name, 0) for u in units])
    dims = sizes.clone()

    def decide(k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
        counts = torch.bincount(owner[order[:k]], minlength=len(units))
        structured = matrix & (counts * alpha >= cost_struct) & (counts > 0)
        whole = ~matrix & (counts * beta >= dims) & (counts > 0)
        cost = torch.where(structured, cost_struct, torch.where(matrix, counts, 0))
        cost = torch.where(whole, dims, cost)
        return counts, structured, whole, int(cost.sum())

    lo, hi = 0, budget
    while lo < hi:  # largest k whose allocation fits the budget
        mid = (lo + hi + 1) // 2
        if decide(mid)[3] <= budget:
            lo = mid
        else:
            hi = mid - 1
    counts, structured, whole, realised = decide(lo)
    chosen = order[:lo]
    chosen = chosen[matrix[owner[chosen]] & ~structured[owner[chosen]]]
    gap = budget - realised
    if gap > 0:
        # Fill with the next most sensitive entries of unstructured matrices, then (only
        # if the budget is that large) with entries of structured ones, beside the module.
        while True:
            rest = order[lo:]
            plain = rest[matrix[owner[rest]] & ~structured[owner[rest]]][:gap]
            extra = order[matrix[owner[order]] & structured[owner[order]]][: gap - len(plain)]
            if len(plain) + len(extra) >= gap or len(order) == flat.numel():
                break
            order = _top_order(flat, flat.numel())  # the top slice was too short
        chosen = torch.cat([chosen, plain, extra])
    sparse: dict[str, torch.Tensor] = {}
    in_unit = owner[chosen]
    for i in torch.unique(in_unit).tolist():
        sparse[units[i].name] = torch.sort(chosen[in_unit == i] - starts[i]).values
    pairs = list(zip(units, structured.tolist(), whole.tolist(), strict=True))
    return Allocation(
        budget=budget,
        structured={u.name: int(module_cost[u.name]) for u, s, _ in pairs if s},
        whole={u.name: u.numel for u, _, w in pairs if w},
        sparse=sparse,
        sensitive={u.name: int(c) for u, c in zip(units, counts.tolist(), strict=True) if c},
        top_k=lo,
    )


def _top_order(flat: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of at least the ``k`` largest entries, most sensitive first.

    Everything tied with the k-th value is included and ties keep model order (stable
    sort), so the allocation is deterministic; sorting only the top saves time and memory
    on ViT-B (85 M scores, budgets under 1 %).
    """
    if k <= 0:
        return torch.zeros(0, dtype=torch.long)
    if k < flat.numel():
        threshold = torch.topk(flat, k, sorted=False).values.min()
        candidates = torch.nonzero(flat >= threshold).flatten()
    else:
        candidates = torch.arange(flat.numel())
    keep = torch.sort(flat[candidates], descending=True, stable=True).indices
    return candidates[keep]


def placeholder_allocation(units: list[Unit], budget: int) -> Allocation:
    """Budget spread over matrices in model order: for counting on the meta device.

    The realised count of a real allocation equals the budget whatever the scores, so
    ``petl-sweep params`` can report SPT's size without data or a sensitivity pass.
    """
    sparse, left = {}, budget
    for unit in units:
        if unit.kind == "matrix" and left > 0:
            take = min(left, unit.numel)
            sparse[unit.name] = torch.arange(take)
            left -= take
    return Allocation(budget, {}, {}, sparse, {n: len(i) for n, i in sparse.items()}, budget)


class LowRank(MergeScaled):
    """α · B·A for a row block of a linear layer's output; B starts at zero."""

    def __init__(self, in_features: int, out_features: int, rank: int) -> None:
        super().__init__()
        self.lora_a = nn.Parameter(torch.empty(rank, in_features))
        self.lora_b = nn.Parameter(torch.zeros(out_features, rank))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))
        self.init_merge_factor()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.merge_factor * ((x @ self.lora_a.t()) @ self.lora_b.t())

    def delta_weight(self) -> torch.Tensor:
        return self.merge_factor * (self.lora_b @ self.lora_a)


class SPTLinear(MergeScaled):
    """A frozen linear layer with SPT's structured modules and sparse delta attached.

    ``parts`` maps a row-block name (``q``/``k``/``v`` or ``all``) to its row range; the
    structured module of a part sees the layer input (LoRA, parallel) or that part of the
    output (adapter, sequential). ``sparse_index`` holds flat indices into the weight.
    """

    def __init__(
        self,
        base: nn.Linear,
        parts: dict[str, tuple[int, int]],
        structures: dict[str, nn.Module],
        sparse_index: torch.Tensor,
        kinds: dict[str, Structure],
    ) -> None:
        super().__init__()
        self.base = base
        self.parts = dict(parts)
        self.kinds = dict(kinds)
        self.structures = nn.ModuleDict(structures)
        self.register_buffer("sparse_index", sparse_index.long())
        self.sparse_delta = nn.Parameter(
            torch.zeros(sparse_index.numel(), device=base.weight.device)
        )
        self.init_merge_factor()

    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def out_features(self) -> int:
        return self.base.out_features

    def effective_weight(self) -> torch.Tensor:
        """The effective weight: pretrained plus the scattered sparse delta."""
        w = self.base.weight
        if self.sparse_index.numel() == 0:
            return w
        delta = (self.merge_factor * self.sparse_delta).to(w.dtype)
        return w.flatten().index_add(0, self.sparse_index, delta).view_as(w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.linear(x, self.effective_weight(), self.base.bias)
        if not self.structures:
            return out
        bounds = sorted({0, out.shape[-1], *(b for r in self.parts.values() for b in r)})
        pieces = []
        for start, end in itertools.pairwise(bounds):
            piece = out[..., start:end]
            for part, (s, e) in self.parts.items():
                if (s, e) != (start, end) or part not in self.structures:
                    continue
                branch = self.structures[part]
                source = x if self.kinds[part] == "lora" else piece
                piece = piece + branch(source)
            pieces.append(piece)
        return torch.cat(pieces, dim=-1)

    def merged(self) -> nn.Linear:
        """The base layer with sparse delta and LoRA blocks folded in (LoRA only)."""
        if any(k != "lora" for p, k in self.kinds.items() if p in self.structures):
            raise TypeError("an adapter is not linear in the input; it cannot be merged")
        with torch.no_grad():
            weight = self.effective_weight().clone()
            for part, branch in self.structures.items():
                s, e = self.parts[part]
                weight[s:e] += branch.delta_weight().to(weight.dtype)
            self.base.weight.copy_(weight)
        return self.base


class SPTMethod(Method):
    """Shared SPT machinery; subclasses pick the structured module."""

    structure: ClassVar[Structure]
    needs_sensitivity: ClassVar[bool] = True
    hparams = {
        "budget": HParam(0.01, "trainable fraction of the eligible backbone parameters (τ)"),
        "rank": HParam(8, "rank (LoRA) or bottleneck width (adapter) of structured modules"),
        "alpha": HParam(10.0, "α: structured if sensitive entries ≥ module cost / α"),
        "beta": HParam(5.0, "β: a vector trains whole if sensitive entries ≥ dim / β"),
        "scale": HParam(1.0, "output scale of structured adapters"),
    }

    def __init__(self, **hp: Any) -> None:
        super().__init__(**hp)
        self.scores: dict[str, torch.Tensor] | None = None
        self.allocation: Allocation | None = None

    def validate(self) -> None:
        if not 0 < float(self.hp["budget"]) <= 1:
            raise ValueError(f"{self.name}: budget must be in (0, 1], got {self.hp['budget']}")
        if int(self.hp["rank"]) < 1:
            raise ValueError(f"{self.name}: rank must be >= 1, got {self.hp['rank']}")
        for key in ("alpha", "beta"):
            if float(self.hp[key]) <= 0:
                raise ValueError(f"{self.name}: {key} must be > 0, got {self.hp[key]}")

    def set_sensitivity(self, scores: dict[str, torch.Tensor]) -> None:
        """Give the method its task's sensitivity scores (before ``apply``)."""
        self.scores = scores

    # -- what one structured module costs --------------------------------------------------
    def module_cost(self, unit: Unit) -> int:
        r, out = int(self.hp["rank"]), unit.rows[1] - unit.rows[0]
        if self.structure == "lora":
            return r * (unit.cols + out)
        return 2 * out * r + r + out

    def _make_structure(self, unit: Unit, device: torch.device) -> nn.Module:
        r, out = int(self.hp["rank"]), unit.rows[1] - unit.rows[0]
        with torch.device(device):
            if self.structure == "lora":
                return LowRank(unit.cols, out, r)
            return Bottleneck(out, r, float(self.hp["scale"]))

    # -- Method contract -------------------------------------------------------------------
    def inject(self, model: nn.Module) -> None:
        units = allocation_units(model)
        budget = round(float(self.hp["budget"]) * sum(u.numel for u in units))
        costs = {u.name: self.module_cost(u) for u in units if u.kind == "matrix"}
        with torch.device("cpu"):  # bookkeeping on the CPU, even under a meta-device context
            if self.scores is not None:
                alloc = allocate(
                    units,
                    self.scores,
                    budget,
                    costs,
                    float(self.hp["alpha"]),
                    float(self.hp["beta"]),
                )
            elif next(model.parameters()).device.type == "meta":
                alloc = placeholder_allocation(units, budget)
            else:
                raise ValueError(
                    f"{self.name} needs sensitivity scores: call set_sensitivity() with "
                    "tuner.sensitivity.compute_sensitivity(...) before apply()"
                )
        self.allocation = alloc
        by_module: dict[str, list[Unit]] = {}
        for unit in units:
            if unit.kind == "matrix" and (
                unit.name in alloc.structured or unit.name in alloc.sparse
            ):
                by_module.setdefault(unit.module, []).append(unit)
        wrapped = set()
        for path, mod_units in by_module.items():
            base = model.get_submodule(path)
            device = base.weight.device
            parts, structures, kinds, index = {}, {}, {}, []
            for unit in mod_units:
                part = unit.name.rpartition("[")[2].rstrip("]") if "[" in unit.name else "all"
                parts[part] = unit.rows
                kinds[part] = self.structure
                if unit.name in alloc.structured:
                    structures[part] = self._make_structure(unit, device)
                if unit.name in alloc.sparse:
                    index.append(alloc.sparse[unit.name].to(device) + unit.rows[0] * unit.cols)
            flat = torch.cat(index) if index else torch.zeros(0, dtype=torch.long, device=device)
            parent_path, _, attr = path.rpartition(".")
            setattr(
                model.get_submodule(parent_path),
                attr,
                SPTLinear(base, parts, structures, flat, kinds),
            )
            wrapped.add(path)
        names = []
        for name in alloc.whole:
            module, _, leaf = name.rpartition(".")
            names.append(f"{module}.base.{leaf}" if module in wrapped else name)
        setattr(model, WHOLE_VECTORS, names)

    def trainable_parameters(self, model: nn.Module) -> Iterator[tuple[str, nn.Parameter]]:
        params = dict(model.named_parameters())
        for name, module in model.named_modules():
            if isinstance(module, SPTLinear):
                if module.sparse_index.numel():
                    yield f"{name}.sparse_delta", module.sparse_delta
                for sub, param in module.structures.named_parameters():
                    yield f"{name}.structures.{sub}", param
        for name in getattr(model, WHOLE_VECTORS, []):
            yield name, params[name]
        if "cls_token" in params:
            yield "cls_token", params["cls_token"]
        yield from head_parameters(model)

    def decays(self, name: str, param: nn.Parameter) -> bool:
        """Sparse deltas are matrix entries: they decay (toward the pretrained values)."""
        return name.endswith("sparse_delta") or super().decays(name, param)

    def report(self) -> list[dict[str, Any]]:
        """One row per (unit, kind) that received parameters: the allocation table."""
        if self.allocation is None:
            return []
        alloc = self.allocation
        entries = [(n, self.structure, c) for n, c in alloc.structured.items()]
        entries += [(n, "whole", c) for n, c in alloc.whole.items()]
        entries += [(n, "unstructured", int(i.numel())) for n, i in alloc.sparse.items()]
        return [
            {
                "unit": name,
                "block": name.split(".")[1] if name.startswith("blocks.") else "final",
                "allocation": kind,
                "trainable": count,
                "sensitive_entries": alloc.sensitive.get(name, 0),
            }
            for name, kind, count in entries
        ]
