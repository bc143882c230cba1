"""The one injection mechanism: every method changes a timm ViT through this module only.

Methods differ in *what* they compute and *where* it goes, not in how it gets there:

* ``attach`` a branch module at module M (``model.petl_branches``):
  ``sequential`` after M: ``y = M(x); y ← y + branch(y)`` (Houlsby, Pfeiffer);
  ``parallel`` beside M: ``y = M(x) + branch(x)`` (AdaptFormer, Convpass);
  ``before`` M: ``x ← x + branch(x); y = M(x)`` (RepAdapter);
  ``output``: ``y ← branch(M(x))`` (SSF's scale and shift, DiffFit's γ);
* ``wrap_linear``: replace an ``nn.Linear`` by a wrapper holding it (LoRA, FacT, SPT);
* ``pre_hook`` / ``post_hook``: rewrite a module's input or output tensor (VPT's prompts).

Added modules live on the model, so ``state_dict``, ``.to()`` and the optimiser see them;
hooks are registered on the timm modules, whose code is never touched. Each branch is
``MergeScaled``: its effect is scaled by α (0 = the pretrained backbone). The inits of
projections (``init_projections``) live here too, one copy for every method with Linear
branches, ``trunc_normal`` included: what the first study's model ends up with.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Literal

import torch
from torch import nn

from tuner.methods.base import MergeScaled, Method, head_parameters

Placement = Literal["sequential", "parallel", "before", "output"]
CONTAINER = "petl_branches"
Handle = torch.utils.hooks.RemovableHandle


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
    key: str | None = None,
) -> Handle:
    """Register ``branch`` at the module ``path`` (e.g. ``blocks.3.mlp``) of ``model``.

    ``source`` (parallel only): feed the branch the input of that module instead of the
    target's, e.g. ``blocks.3.norm2`` so AdaptFormer reads the block's residual stream ``x``
    rather than the MLP's input ``norm2(x)``. ``key``: the branch's name in
    ``petl_branches`` (default: ``path`` with dots as underscores). The hook's handle is
    returned and kept on the branch (``branch.hook_handle``) so a ``merge`` can remove
    exactly this hook.
    """
    target = model.get_submodule(path)
    branch_container(model)[key or path.replace(".", "_")] = branch
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
        if placement == "output":
            return branch(out)
        source = out if placement == "sequential" else args[0]
        return out + branch(source)

    branch.hook_handle = target.register_forward_hook(hook)
    return branch.hook_handle


def pre_hook(model: nn.Module, path: str, fn: Callable[[torch.Tensor], torch.Tensor]) -> Handle:
    """Replace the first input ``x`` of module ``path`` by ``fn(x)``."""

    def hook(_m: nn.Module, args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        return (fn(args[0]), *args[1:])

    return model.get_submodule(path).register_forward_pre_hook(hook)


def post_hook(model: nn.Module, path: str, fn: Callable[[torch.Tensor], torch.Tensor]) -> Handle:
    """Replace the output ``y`` of module ``path`` by ``fn(y)``."""

    def hook(_m: nn.Module, _args: object, out: torch.Tensor) -> torch.Tensor:
        return fn(out)

    return model.get_submodule(path).register_forward_hook(hook)


def wrap_linear(model: nn.Module, path: str, wrapper: Callable[..., nn.Module], **kw: Any) -> None:
    """Replace the ``nn.Linear`` at dotted ``path`` in ``model`` by ``wrapper(linear, **kw)``."""
    layer = model.get_submodule(path)
    if not isinstance(layer, nn.Linear):
        raise TypeError(f"{path} is {type(layer).__name__}, expected nn.Linear")
    model.set_submodule(path, wrapper(layer, **kw))


def modules_of_type(model: nn.Module, kind: type[nn.Module]) -> Iterator[tuple[str, nn.Module]]:
    """(name, module) for every submodule of ``kind`` in ``model``."""
    for name, module in model.named_modules():
        if isinstance(module, kind):
            yield name, module


#: The std of ``trunc_normal``: timm's ``init_weights_vit_timm`` for every ``nn.Linear``.
TRUNC_STD = 0.02


def trunc_normal(weights: Iterable[torch.Tensor], biases: Iterable[torch.Tensor] = ()) -> None:
    """The first study's model as built: weights trunc_normal(std 0.02, cut at ±2), biases 0.

    PETL_Vision's ViT constructor ends with timm's ``init_weights`` (245d262,
    ``model/vision_transformer.py``, the last line of ``VisionTransformerPETL.__init__``),
    which re-initialises *every* ``nn.Linear`` of the model, its PETL modules' too, after
    their own inits ran; pretrained loading then touches only backbone keys.
    """
    with torch.no_grad():
        for w in weights:
            nn.init.trunc_normal_(w, std=TRUNC_STD, a=-2.0, b=2.0)
        for b in biases:
            nn.init.zeros_(b)


#: Initialisations of a down/up projection pair, as the seed study names them
#: (PETL_Vision ``adapter_init``/``convpass_init``). The ``lora_*`` ones zero ``up`` (the
#: branch starts silent); ``xavier`` starts it random (the study's Houlsby/Pfeiffer);
#: ``trunc_normal`` is what the study's model ends up with (see ``trunc_normal``).
INITS = ("lora_kaiming", "lora_xavier", "xavier", "trunc_normal")
ProjectionInit = Literal["lora_kaiming", "lora_xavier", "xavier", "trunc_normal"]


def init_projections(down: nn.Linear, up: nn.Linear, scheme: str | None) -> None:
    """Initialise a bottleneck's projections by one of ``INITS``; None keeps torch's default
    ``down`` and zeroes ``up`` (SPT's adapter, ziplab/SPT ``StructuredTuningModule``)."""
    if scheme is None:
        nn.init.zeros_(up.weight)
        nn.init.zeros_(up.bias)
        return
    if scheme not in INITS:
        raise ValueError(f"unknown init {scheme!r}; valid: {', '.join(INITS)}")
    if scheme == "trunc_normal":
        trunc_normal([down.weight, up.weight], [down.bias, up.bias])
        return
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
    """A method whose trainable tensors are exactly its added branches (plus the head)."""

    def trainable_parameters(self, model: nn.Module) -> Iterator[tuple[str, nn.Parameter]]:
        yield from branch_parameters(model)
        yield from head_parameters(model)
