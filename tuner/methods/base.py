"""The contract every PETL method fulfils.

A method is injected into an *unmodified* timm ``VisionTransformer`` from outside, through
``tuner.methods.hooks`` (it wraps or hooks modules, it never edits the model's source), and
reads its settings only from its typed config (``config_class``, see ``configs``). Each
method answers three questions explicitly:

* which tensors train (``trainable_parameters``), everything else is frozen. Methods name
  them by module type, attribute or the module they added (``LoRALinear``, ``.bias``,
  ``nn.LayerNorm``), not by a substring of parameter names as the first study's
  ``TUNE_MODULES`` did, so one method's tensors can never be swept into another's;
* which of those get weight decay (``decays``: by shape; the one name rule is timm's token
  attributes ``cls_token``/``pos_embed``/``reg_token``, exempt as in the ViT recipe);
* how to undo itself into plain backbone weights where the paper allows (``merge``).

Every branch a method adds is scaled by a ``merge_factor`` buffer (α): α = 0 gives the
pretrained backbone, α = 1 the tuned model; weight-space interpolation needs nothing else.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from tuner.methods.configs import (
    COMMON_HPARAMS,
    MethodConfig,
    build_config,
    validate_value,
)
from tuner.optim import adamw_groups, default_decays
from tuner.records import Prepared

__all__ = ["COMMON_HPARAMS", "Method", "MethodConfig", "validate_hparam"]


@dataclass
class PrepareContext:
    """What a method's pass over the training data may use (see ``Method.prepare``).

    The trainer builds it; ``seed`` is the *study's* seed so tune and final runs of a study
    share one result; ``fetch`` downloads a shared artifact (given by the sweep layer, None
    outside a sweep) so a node without the cache need not recompute.
    """

    task: str
    backbone: str
    num_classes: int
    seed: int
    cache_dir: Path
    device: torch.device
    #: uint8 batch → model input (device, scaling, normalisation)
    to_input: Callable[[torch.Tensor], torch.Tensor]
    #: the normalisation tensors, part of "the data as the model sees it"
    mean: torch.Tensor
    std: torch.Tensor
    shared_uri: str | None = None
    fetch: Callable[[str, Path], Path | None] | None = None


@dataclass
class MethodReport:
    """What a method wants a final run to keep beyond the usual: files and metrics."""

    files: dict[str, bytes] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)


class MergeScaled(nn.Module):
    """Mixin for added modules whose output is scaled by the weight-space factor α.

    A buffer rather than a Python float, so it travels with ``state_dict`` and ``.to()``,
    and is never a trainable parameter.
    """

    merge_factor: torch.Tensor

    def init_merge_factor(self) -> None:
        self.register_buffer("merge_factor", torch.ones(()), persistent=False)


def set_merge_factor(model: nn.Module, alpha: float) -> None:
    """Scale every added branch in ``model`` by ``alpha`` (0 = pretrained, 1 = tuned)."""
    for module in model.modules():
        if isinstance(module, MergeScaled):
            module.merge_factor.fill_(float(alpha))


def head_parameters(model: nn.Module) -> Iterator[tuple[str, nn.Parameter]]:
    """The classifier head of a timm model: always trained by every PETL method."""
    head = model.get_classifier()  # type: ignore[operator]
    prefix = next(n for n, m in model.named_modules() if m is head)
    for name, param in head.named_parameters():
        yield f"{prefix}.{name}", param


class Method(ABC):
    """Base class of all PETL methods. Subclasses register with ``@register``."""

    name: ClassVar[str]
    description: ClassVar[str]
    paper: ClassVar[str]
    #: The method's typed settings; a method with none keeps the empty base.
    config_class: ClassVar[type[MethodConfig]] = MethodConfig
    reparameterisable: ClassVar[bool] = False
    #: True where the paper zero-initialises the added branch: apply() keeps the function.
    preserves_init: ClassVar[bool] = True

    def __init__(self, **hp: Any) -> None:
        """``hp``: the config's fields (validated; a bad one is a ``ValueError`` naming
        method, field, value and bound) and, accepted and checked but not kept, the
        optimiser's ``lr``/``weight_decay``/``drop_path``."""
        self.config: Any = build_config(self.name, self.config_class, hp)

    @property
    def hp(self) -> dict[str, Any]:
        """The config as plain data (what runs record and ``get(name, **hp)`` rebuilds)."""
        return self.config.model_dump(mode="json")

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """Every field's default, by name."""
        return {k: f.default for k, f in cls.config_class.model_fields.items()}

    # -- the three questions -------------------------------------------------------------
    @abstractmethod
    def inject(self, model: nn.Module) -> None:
        """Add this method's modules/hooks to ``model`` in place (may be a no-op)."""

    @abstractmethod
    def trainable_parameters(self, model: nn.Module) -> Iterator[tuple[str, nn.Parameter]]:
        """Yield (name, parameter) for every tensor this method trains, head included."""

    def decays(self, name: str, param: nn.Parameter) -> bool:
        """Whether AdamW's weight decay applies to a trainable tensor.

        Default: matrices and convolution kernels decay; biases, norm affines, tokens,
        position embeddings and other vectors do not (the usual ViT fine-tuning recipe).
        """
        return default_decays(name, param)

    def merge(self, model: nn.Module) -> nn.Module:
        """Fold the learned change into the backbone weights (re-parameterisable methods)."""
        raise TypeError(f"method {self.name!r} is not re-parameterisable; it has no merge()")

    # -- optional hooks ---------------------------------------------------------------------
    def prepare(
        self,
        model: nn.Module,
        train: tuple[torch.Tensor, torch.Tensor],
        ctx: PrepareContext,
    ) -> Prepared | None:
        """A pass over the training data before ``apply`` (SPT: sensitivity); none by default.

        The sweep runs it once per study before any trial (``needs_prepare``), stores what it
        leaves as an artifact and hands its URI to every trial and final run.
        """
        return None

    @classmethod
    def needs_prepare(cls) -> bool:
        return cls.prepare is not Method.prepare

    def report(self) -> MethodReport | None:
        """Extra files and metrics a final run logs after training (SPT: its allocation)."""
        return None

    # -- driven by the base class ----------------------------------------------------------
    def apply(self, model: nn.Module) -> nn.Module:
        """Inject the method and freeze everything it does not declare trainable."""
        self.inject(model)
        for param in model.parameters():
            param.requires_grad_(False)
        for _, param in self.trainable_parameters(model):
            param.requires_grad_(True)
        return model

    def param_groups(self, model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
        """AdamW parameter groups honouring ``decays``; frozen tensors are left out."""
        return adamw_groups(self.trainable_parameters(model), weight_decay, self.decays)

    def trainable_state_dict(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """Just the trained tensors, for checkpoints and safetensors exports."""
        return {n: p.detach().clone() for n, p in self.trainable_parameters(model)}

    def load_trainable_state_dict(
        self, model: nn.Module, saved: dict[str, torch.Tensor], source: str = "state"
    ) -> nn.Module:
        """Copy saved trained tensors into an ``apply``-ed model; names and shapes must fit."""
        params = dict(self.trainable_parameters(model))
        missing, unexpected = sorted(set(params) - set(saved)), sorted(set(saved) - set(params))
        if missing or unexpected:
            raise ValueError(
                f"{source}: trainable state does not fit method {self.name!r}: "
                f"missing {missing[:5]}, unexpected {unexpected[:5]}"
            )
        with torch.no_grad():
            for name, param in params.items():
                if saved[name].shape != param.shape:
                    raise ValueError(
                        f"{source}: tensor {name} has shape {tuple(saved[name].shape)}, "
                        f"model expects {tuple(param.shape)}"
                    )
                param.copy_(saved[name])
        return model

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.hp.items())
        return f"{type(self).__name__}({args})"


def validate_hparam(cls: type[Method], key: str, value: Any) -> Any:
    """``value`` for hyper-parameter ``key`` of method class ``cls``, validated and coerced."""
    return validate_value(cls.name, cls.config_class, key, value)


def count_trainable(model: nn.Module, method: Method) -> tuple[int, int]:
    """(trainable parameters in total, excluding the head) after ``method.apply``."""
    head_ids = {id(p) for _, p in head_parameters(model)}
    seen: set[int] = set()
    total = without_head = 0
    for _, param in method.trainable_parameters(model):
        if id(param) in seen:
            continue
        seen.add(id(param))
        total += param.numel()
        if id(param) not in head_ids:
            without_head += param.numel()
    return total, without_head
