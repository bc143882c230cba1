"""SPT's modules and its ``Method``: structured modules and sparse deltas where sensitivity
put them, the sensitivity pass as the method's ``prepare`` hook, the allocation as its report.

The sweep and the trainer know nothing of SPT: the trainer calls ``prepare`` (every method
has it; SPT's loads or computes the study's scores), the sweep runs it once per study because
``needs_prepare()`` says so, and the final stage logs whatever ``report()`` returns.
"""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Iterator
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from tuner.methods.base import (
    MergeScaled,
    Method,
    MethodReport,
    PrepareContext,
    head_parameters,
)
from tuner.methods.configs import MethodConfig
from tuner.methods.hooks import Bottleneck, trunc_normal, wrap_linear
from tuner.methods.spt import sensitivity as sens
from tuner.methods.spt.allocation import (
    Allocation,
    Mode,
    Structure,
    Unit,
    allocate,
    allocation_units,
    placeholder_allocation,
)
from tuner.records import Prepared
from tuner.util import content_hash

#: Attribute on the model listing the vectors SPT trains whole (names after wrapping).
WHOLE_VECTORS = "spt_whole_vectors"
#: Where the budget goes: the most sensitive positions (SPT) or seeded random ones (ablation).
ALLOCATIONS = ("sensitivity", "random")
SPTInit = Literal["zero_up", "trunc_normal"]


class LowRank(MergeScaled):
    """α · B·A for a row block of a linear layer's output; B starts at zero (``zero_up``)
    or both are trunc_normal std 0.02 (``trunc_normal``, ``hooks.trunc_normal``)."""

    def __init__(
        self, in_features: int, out_features: int, rank: int, init: SPTInit = "zero_up"
    ) -> None:
        super().__init__()
        self.lora_a = nn.Parameter(torch.empty(rank, in_features))
        self.lora_b = nn.Parameter(torch.zeros(out_features, rank))
        if init == "trunc_normal":
            trunc_normal([self.lora_a, self.lora_b])
        else:
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


class SPTConfig(MethodConfig):
    budget: float = Field(
        0.01, gt=0, le=1, description="trainable fraction of the eligible backbone parameters (τ)"
    )
    rank: int = Field(
        8, ge=1, description="rank (LoRA) or bottleneck width (adapter) of structured modules"
    )
    alpha: float = Field(10.0, gt=0, description="α: structured if sensitive entries ≥ cost / α")
    beta: float = Field(5.0, gt=0, description="β: a vector trains whole if sensitive ≥ dim / β")
    scale: float = Field(
        1.0, allow_inf_nan=False, description="output scale of structured adapters"
    )
    # the ablations (He et al., Sec. 4.3; ziplab/SPT's --sensitivity_batch_num and
    # --structured_only): each a search-space value or a ``search.fixed`` entry
    sensitivity_batches: int = Field(
        sens.DEFAULT_BATCHES,
        ge=1,
        description="training batches the sensitivity pass sums gradients over",
    )
    allocation: Literal["sensitivity", "random"] = Field(
        "sensitivity", description="sensitivity | random (same budget, seeded random positions)"
    )
    allocation_mode: Mode = Field(
        "both",
        description="both | structured (modules, whole vectors) | unstructured (entries only)",
    )
    init: SPTInit = Field(
        "zero_up",
        description="structured modules: zero_up (B / up zero, ziplab/SPT) or trunc_normal "
        "(every Linear weight std 0.02, zero bias, as the first study's ViT builds its branches)",
    )


class SPTMethod(Method):
    """Shared SPT machinery; subclasses pick the structured module."""

    structure: ClassVar[Structure]
    config_class = SPTConfig
    config: SPTConfig

    def __init__(self, **hp: Any) -> None:
        super().__init__(**hp)
        self.scores: dict[str, torch.Tensor] | None = None
        self.allocation: Allocation | None = None

    @property
    def preserves_init(self) -> bool:  # type: ignore[override]
        return self.config.init == "zero_up"

    def set_sensitivity(self, scores: dict[str, torch.Tensor]) -> None:
        """Give the method its task's sensitivity scores (before ``apply``)."""
        self.scores = scores

    # -- what one structured module costs --------------------------------------------------
    def module_cost(self, unit: Unit) -> int:
        r, out = self.config.rank, unit.rows[1] - unit.rows[0]
        if self.structure == "lora":
            return r * (unit.cols + out)
        return 2 * out * r + r + out

    def _make_structure(self, unit: Unit, device: torch.device) -> nn.Module:
        r, out = self.config.rank, unit.rows[1] - unit.rows[0]
        init = None if self.config.init == "zero_up" else "trunc_normal"
        with torch.device(device):
            if self.structure == "lora":
                return LowRank(unit.cols, out, r, self.config.init)
            return Bottleneck(out, r, self.config.scale, nn.GELU, init=init)

    # -- Method contract -------------------------------------------------------------------
    def inject(self, model: nn.Module) -> None:
        units = allocation_units(model)
        budget = round(self.config.budget * sum(u.numel for u in units))
        costs = {u.name: self.module_cost(u) for u in units if u.kind == "matrix"}
        with torch.device("cpu"):  # bookkeeping on the CPU, even under a meta-device context
            if self.scores is not None:
                alloc = allocate(
                    units,
                    self.scores,
                    budget,
                    costs,
                    self.config.alpha,
                    self.config.beta,
                    self.config.allocation_mode,
                )
            elif next(model.parameters()).device.type == "meta":
                alloc = placeholder_allocation(units, budget)
            else:
                raise ValueError(
                    f"{self.name} needs sensitivity scores: call set_sensitivity() with "
                    "tuner.methods.spt.sensitivity.compute_sensitivity(...) before apply()"
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
            wrap_linear(model, path, SPTLinear, parts=parts, structures=structures,
                        sparse_index=flat, kinds=kinds)  # fmt: skip
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

    def prepare(
        self,
        model: nn.Module,
        train: tuple[torch.Tensor, torch.Tensor],
        ctx: PrepareContext,
    ) -> Prepared:
        """The study's sensitivity scores: from the cache, the study's artifact, or computed.

        Scores are taken on a copy of the pretrained backbone with a head initialised from the
        study's seed, so tune and final runs (other seeds) share one cache entry. The key
        holds everything the scores depend on, ``sensitivity_batches`` included; the
        allocation mode is not in it (it only changes how the scores are spent). The random
        ablation needs neither gradients nor data (:meth:`_prepare_random`).
        """
        if self.config.allocation == "random":
            return self._prepare_random(model, ctx)
        x, y = train
        head = {id(p) for _, p in head_parameters(model)}
        backbone = {n: p for n, p in model.named_parameters() if id(p) not in head}
        batches = self.config.sensitivity_batches
        key = sens.sensitivity_key(
            ctx.backbone,
            sens.tensor_digest(backbone),
            ctx.task,
            sens.tensor_digest([x, y, ctx.mean, ctx.std]),  # data as the model sees it
            ctx.seed,
            batches,
            sens.DEFAULT_BATCH_SIZE,
        )

        def compute() -> dict[str, torch.Tensor]:
            probe = copy.deepcopy(model)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(ctx.seed)
                probe.reset_classifier(ctx.num_classes)
            return sens.compute_sensitivity(
                probe.to(ctx.device), x, y, ctx.to_input, seed=ctx.seed, batches=batches
            )

        meta = {"backbone": ctx.backbone, "task": ctx.task, "seed": ctx.seed, "batches": batches}
        # The study's artifact holds the scores of the study's own settings: a trial that
        # searched another batch count must not take them for its own.
        shared = ctx.shared_uri if (ctx.shared_uri or "").endswith(f"/{key}.safetensors") else None
        scores, source = sens.obtain_scores(key, ctx.cache_dir, compute, meta, shared, ctx.fetch)
        self.set_sensitivity(scores)
        path = sens.cache_path(ctx.cache_dir, key)
        return Prepared("sensitivity", key, source, str(path))

    def _prepare_random(self, model: nn.Module, ctx: PrepareContext) -> Prepared:
        """Seeded random scores (study seed, so tune and final runs agree); no gradient.

        The cache keeps only a small record of the seed (the scores are cheaper to redraw
        than to store): the sweep logs it as the study's artifact like any prepare result.
        """
        units = allocation_units(model)
        shapes = content_hash([(u.name, u.rows, u.cols) for u in units], 16)
        key = sens.random_key(ctx.backbone, shapes, ctx.seed)
        path = sens.cache_path(ctx.cache_dir, key)
        source = "cache" if path.exists() else "computed"
        if not path.exists():
            record = {"seed": torch.tensor([int(ctx.seed)])}
            meta = {"backbone": ctx.backbone, "seed": ctx.seed, "allocation": "random"}
            sens.save_scores(path, record, {**meta, "key": key})
        self.set_sensitivity(sens.random_scores(units, ctx.seed))
        return Prepared("random_scores", key, source, str(path))

    def report(self) -> MethodReport | None:
        """The allocation table (parquet), its plot and the ``spt/*`` totals."""
        from tuner.methods.spt.allocation_table import (
            allocation_bytes,
            allocation_png,
            allocation_totals,
        )

        rows = self.allocation_rows()
        if not rows:
            return None
        title = f"{self.name} allocation"
        files = {
            "allocation.parquet": allocation_bytes(rows),
            "allocation.png": allocation_png(rows, title),
        }
        return MethodReport(files, {k: float(v) for k, v in allocation_totals(rows).items()})

    def allocation_rows(self) -> list[dict[str, Any]]:
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
