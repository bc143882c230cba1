"""One injection mechanism for every branch added beside or after a timm module.

Adapters differ in *what* they compute and *where* they attach, not in how they attach:

* ``sequential`` — after module M: ``y = M(x); y ← y + branch(y)`` (Houlsby, Pfeiffer);
* ``parallel``   — beside module M: ``y = M(x) + branch(x)`` (AdaptFormer, Convpass);
* ``before``     — before module M: ``x ← x + branch(x); y = M(x)`` (RepAdapter).

Branch modules live in one ``ModuleDict`` added to the model (``model.petl_branches``), so
``state_dict``, ``.to()`` and the optimiser see them; hooks are registered on the timm
modules, whose code is never touched. Each branch is ``MergeScaled``: its output is
multiplied by α (0 = the pretrained backbone).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import ClassVar, Literal

import torch
from torch import nn

from tuner.methods.base import MergeScaled, Method, head_parameters

Placement = Literal["sequential", "parallel", "before"]
CONTAINER = "petl_branches"


def branch_container(model: nn.Module) -> nn.ModuleDict:
    """The model's ``ModuleDict`` of added branches (created on first use)."""
    if not hasattr(model, CONTAINER):
        model.add_module(CONTAINER, nn.ModuleDict())
    return getattr(model, CONTAINER)


def attach(
    model: nn.Module,
    path: str,
    branch: MergeScaled,
    placement: Placement,
    source: str | None = None,
) -> torch.utils.hooks.RemovableHandle:
    """Register ``branch`` at the module ``path`` (e.g. ``blocks.3.mlp``) of ``model``.

    ``source`` (parallel only): feed the branch the input of that module instead of the
    target's, e.g. ``blocks.3.norm2`` so AdaptFormer reads the block's residual stream ``x``
    rather than the MLP's input ``norm2(x)``. The hook's handle is returned and kept on the
    branch (``branch.hook_handle``) so a ``merge`` can remove exactly this hook.
    """
    target = model.get_submodule(path)
    branch_container(model)[path.replace(".", "_")] = branch
    if source is not None:
        if placement != "parallel":
            raise ValueError(f"source= only applies to parallel branches, not {placement!r}")
        seen: list[torch.Tensor] = []

        def remember(_m: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            seen[:] = [args[0]]

        def from_source(_m: nn.Module, _args: tuple, out: torch.Tensor) -> torch.Tensor:
            return out + branch(seen.pop())

        model.get_submodule(source).register_forward_pre_hook(remember)
        branch.hook_handle = target.register_forward_hook(from_source)
        return branch.hook_handle

    if placement == "before":

        def pre_hook(_m: nn.Module, args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
            x = args[0]
            return (x + branch(x), *args[1:])

        branch.hook_handle = target.register_forward_pre_hook(pre_hook)
        return branch.hook_handle

    def hook(_m: nn.Module, args: tuple[torch.Tensor, ...], out: torch.Tensor) -> torch.Tensor:
        source = out if placement == "sequential" else args[0]
        return out + branch(source)

    branch.hook_handle = target.register_forward_hook(hook)
    return branch.hook_handle


#: Initialisations of a down/up projection pair, as the seed study names them
#: (PETL_Vision ``adapter_init``/``convpass_init``). The ``lora_*`` ones zero ``up`` (the
#: branch starts silent); ``xavier`` starts it random (the study's Houlsby/Pfeiffer).
INITS = ("lora_kaiming", "lora_xavier", "xavier")


def init_projections(down: nn.Linear, up: nn.Linear, scheme: str | None) -> None:
    """Initialise a bottleneck's projections by one of ``INITS``; None keeps torch's default
    ``down`` and zeroes ``up`` (SPT's adapter, ziplab/SPT ``StructuredTuningModule``)."""
    if scheme is None:
        nn.init.zeros_(up.weight)
        nn.init.zeros_(up.bias)
        return
    if scheme not in INITS:
        raise ValueError(f"unknown init {scheme!r}; valid: {', '.join(INITS)}")
    with torch.no_grad():
        if scheme == "xavier":
            nn.init.xavier_uniform_(down.weight)
            nn.init.xavier_uniform_(up.weight)
            nn.init.normal_(down.bias, std=1e-6)
            nn.init.normal_(up.bias, std=1e-6)
            return
        if scheme == "lora_kaiming":
            nn.init.kaiming_uniform_(down.weight, a=math.sqrt(5))
        else:
            nn.init.xavier_uniform_(down.weight)
        nn.init.zeros_(up.weight)
        nn.init.zeros_(down.bias)
        nn.init.zeros_(up.bias)


class Bottleneck(MergeScaled):
    """``scale · α · up(dropout(act(down(x))))`` (the study's adapter, ``model/adapter.py``)."""

    def __init__(
        self,
        dim: int,
        bottleneck: int,
        scale: float,
        act: type[nn.Module] = nn.ReLU,
        init: str | None = "lora_kaiming",
        dropout: float = 0.0,
    ):
        super().__init__()
        self.down = nn.Linear(dim, bottleneck)
        self.act = act()
        self.dropout = nn.Dropout(float(dropout))
        self.up = nn.Linear(bottleneck, dim)
        init_projections(self.down, self.up, init)
        self.scale = float(scale)
        self.init_merge_factor()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.merge_factor * self.scale * self.up(self.dropout(self.act(self.down(x))))


def branch_parameters(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """Every parameter of the added branches, with its name in the model."""
    if not hasattr(model, CONTAINER):
        return []
    return [(f"{CONTAINER}.{n}", p) for n, p in getattr(model, CONTAINER).named_parameters()]


class BranchMethod(Method):
    """A method whose trainable tensors are exactly its added branches (plus the head).

    ``positive`` names integer hyper-parameters that must be >= 1 (widths, ranks).
    """

    positive: ClassVar[tuple[str, ...]] = ()

    def validate(self) -> None:
        for key in self.positive:
            if int(self.hp[key]) < 1:
                raise ValueError(f"{self.name}: {key} must be >= 1, got {self.hp[key]}")

    def trainable_parameters(self, model: nn.Module) -> Iterator[tuple[str, nn.Parameter]]:
        yield from branch_parameters(model)
        yield from head_parameters(model)
