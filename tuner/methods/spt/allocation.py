"""SPT: decide *where* to tune from gradient sensitivity, under a parameter budget.

He et al. (ICCV 2023) score every backbone weight by its accumulated squared gradient on a
few task batches (:mod:`tuner.methods.spt.sensitivity`), take the top-τ entries and then, per weight
matrix (q, k and v separately, although timm fuses them into ``qkv``; proj; fc1; fc2):

* enough sensitive entries (≥ cost of one module / α) → a *structured* module: LoRA beside
  the matrix (``spt_lora``) or a bottleneck adapter after it (``spt_adapter``);
* otherwise only its sensitive entries train (*unstructured*).

Vectors (norm affines, biases) train whole when ≥ dim / β of their entries are sensitive,
else stay frozen. Head and class token always train; patch and position embeddings never.

The modules and the ``Method`` live in :mod:`tuner.methods.spt.method`. Two choices of ours,
both stated in the allocation report:

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

Ablations (method options ``allocation_mode`` and, in the method, ``allocation``):
``structured`` buys only modules and whole vectors (ziplab/SPT's ``--structured_only``);
``unstructured`` spends the whole budget on the top matrix entries; ``allocation: random``
runs the same rules on seeded random scores (:func:`~tuner.methods.spt.sensitivity.random_scores`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

Structure = Literal["lora", "adapter"]
Mode = Literal["both", "structured", "unstructured"]
#: The kinds of tuning that may receive budget: SPT's mix (``both``) and its two ablations.
MODES: tuple[Mode, ...] = ("both", "structured", "unstructured")


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
    mode: Mode = "both",
) -> Allocation:
    """SPT's allocation of ``budget`` parameters (see the module docstring).

    The realised count equals ``budget`` unless the budget exceeds what SPT can place
    (every matrix entry plus every vector), where it is all of that. ``mode`` is the
    ablation (see ``MODES``): ``unstructured`` spends the budget on the top matrix entries
    alone; ``structured`` is :func:`allocate_structured`.
    """
    if mode not in MODES:
        raise ValueError(f"allocation mode must be one of {MODES}, got {mode!r}")
    if mode == "structured":
        return allocate_structured(units, scores, budget, module_cost, alpha, beta)
    flat = torch.cat([unit_scores(u, scores).cpu() for u in units])
    sizes = torch.tensor([u.numel for u in units])
    owner = torch.repeat_interleave(torch.arange(len(units)), sizes)
    starts = torch.cumsum(sizes, 0) - sizes
    matrix = torch.tensor([u.kind == "matrix" for u in units])
    placeable = flat.numel() if mode == "both" else int(sizes[matrix].sum())
    budget = int(min(max(budget, 0), placeable))
    order = _top_order(flat, min(flat.numel(), max(2 * budget, 4096)))
    cost_struct = torch.tensor([module_cost.get(u.name, 0) for u in units])
    dims = sizes.clone()
    mixed = mode == "both"  # unstructured-only: no module, no whole vector

    def decide(k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
        counts = torch.bincount(owner[order[:k]], minlength=len(units))
        structured = mixed & matrix & (counts * alpha >= cost_struct) & (counts > 0)
        whole = mixed & ~matrix & (counts * beta >= dims) & (counts > 0)
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


def allocate_structured(
    units: list[Unit],
    scores: dict[str, torch.Tensor],
    budget: int,
    module_cost: dict[str, int],
    alpha: float,
    beta: float,
) -> Allocation:
    """Structured-only (ziplab/SPT's ``structured_only``): modules and whole vectors, no
    entries.

    A unit *qualifies* once the top-ranked entries hold enough of it (≥ module cost / α
    for a matrix, ≥ dim / β for a vector: SPT's rules), that is when the ranking reaches
    its ``need``-th largest score. Walking down the ranking, each unit is taken when it
    qualifies if it still fits the budget. A module is not divisible, so the realised
    count is at most ``budget``, usually within one module. Only per-unit top-k and one
    count are needed, no global sort: entries of units that never qualify cost nothing,
    so the walk may go far below the top τ (all of ViT-B's 85 M scores).
    """
    budget = max(int(budget), 0)
    per_unit = [unit_scores(u, scores).cpu() for u in units]
    taken: list[int] = []
    rank = []  # (score at which the unit qualifies, model position) per unit
    for i, (unit, values) in enumerate(zip(units, per_unit, strict=True)):
        matrix = unit.kind == "matrix"
        price = module_cost.get(unit.name, 0) if matrix else unit.numel
        need = max(1, math.ceil((price / alpha if matrix else unit.numel / beta) - 1e-9))
        if price > 0 and need <= values.numel():
            rank.append((float(torch.topk(values, need).values[-1]), i, price))
    left, floor = budget, math.inf
    for value, i, price in sorted(rank, key=lambda r: (-r[0], r[1])):
        if price <= left:
            taken.append(i)
            left -= price
            floor = value
    counts = [int((v >= floor).sum()) for v in per_unit] if taken else [0] * len(units)
    return Allocation(
        budget=budget,
        structured={units[i].name: module_cost[units[i].name] for i in taken
                    if units[i].kind == "matrix"},
        whole={units[i].name: units[i].numel for i in taken if units[i].kind == "vector"},
        sparse={},
        sensitive={u.name: c for u, c in zip(units, counts, strict=True) if c},
        top_k=sum(counts),
    )  # fmt: skip


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
