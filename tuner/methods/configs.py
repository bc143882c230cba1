"""Typed method configs: one pydantic model per method, the only way a method reads a setting.

As in huggingface/peft's ``LoraConfig``, every hyper-parameter is a field with a type, a
default, its bounds and a description. So the sweep file check, ``--set``, ``params``, the
search-space loader and ``petl-sweep methods`` all read the same declaration, and a bad value
is refused with one message naming the method, the field, the value and the bound, wherever
it came from. ``lr``, ``weight_decay`` and ``drop_path`` are the trainer's, not a method's,
but they are searched beside the method's fields, so ``TrainingHParams`` bounds them too (a
negative or NaN lr is refused before a trial starts).
"""

from __future__ import annotations

import typing
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from tuner.util import unknown_message


class MethodConfig(BaseModel):
    """Base of every method's config: unknown keys are errors, values are frozen once built.

    NumPy scalars (what Optuna and grid expansions hand back) are turned into Python ones
    first, so ``np.int64(8)`` is a valid rank.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    @model_validator(mode="before")
    @classmethod
    def _plain_scalars(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {k: v.item() if hasattr(v, "item") and hasattr(v, "dtype") else v
                    for k, v in data.items()}  # fmt: skip
        return data


class TrainingHParams(MethodConfig):
    """The optimiser's hyper-parameters, searched beside every method's own."""

    lr: float = Field(1e-3, gt=0, allow_inf_nan=False, description="AdamW learning rate")
    weight_decay: float = Field(
        1e-4, ge=0, allow_inf_nan=False, description="AdamW decoupled weight decay"
    )
    drop_path: float = Field(0.0, ge=0, lt=1, description="stochastic depth of the backbone")


#: Defaults of the hyper-parameters every method accepts (they belong to the optimiser).
COMMON_HPARAMS: dict[str, Any] = {k: f.default for k, f in TrainingHParams.model_fields.items()}


def config_error(method: str, err: ValidationError) -> ValueError:
    """One line per bad field: ``method 'lora': rank=0: Input should be greater than ...``."""
    lines = []
    for item in err.errors():
        field = ".".join(str(p) for p in item["loc"]) or "config"
        lines.append(f"{field}={item.get('input')!r}: {item['msg']}")
    return ValueError(f"method {method!r}: " + "; ".join(lines))


def build_config(method: str, config_class: type[MethodConfig], hp: dict[str, Any]) -> MethodConfig:
    """The method's config from ``hp``; common keys are checked and set aside."""
    own, common = set(config_class.model_fields), set(COMMON_HPARAMS)
    unknown = sorted(set(hp) - own - common)
    if unknown:
        shown = unknown[0] if len(unknown) == 1 else unknown
        kind = "hyper-parameter" if len(unknown) == 1 else "hyper-parameters"
        raise ValueError(
            f"method {method!r}: " + unknown_message(kind, shown, sorted(own | common))
        )
    try:
        TrainingHParams.model_validate({k: v for k, v in hp.items() if k in common})
        return config_class.model_validate({k: v for k, v in hp.items() if k in own})
    except ValidationError as err:
        raise config_error(method, err) from None


def validate_value(method: str, config_class: type[MethodConfig], key: str, value: Any) -> Any:
    """``value`` of one field, validated and coerced (a ``ValueError`` as ``build_config``)."""
    model = TrainingHParams if key in COMMON_HPARAMS else config_class
    if key not in model.model_fields:
        build_config(method, config_class, {key: value})  # raises the unknown-key message
    try:
        return getattr(model.model_validate({key: value}), key)
    except ValidationError as err:
        raise config_error(method, err) from None


def _bounds(metadata: list[Any]) -> str:
    marks = {"ge": "≥", "gt": ">", "le": "≤", "lt": "<"}
    parts = [f"{marks[k]} {getattr(m, k)}" for m in metadata for k in marks
             if getattr(m, k, None) is not None]  # fmt: skip
    return ", ".join(parts)


def describe_fields(config_class: type[MethodConfig]) -> dict[str, dict[str, Any]]:
    """Every field as plain data: default, description, type, bounds and choices."""
    out = {}
    for name, field in config_class.model_fields.items():
        annotation = field.annotation
        literal = typing.get_origin(annotation) is typing.Literal
        choices = list(typing.get_args(annotation)) if literal else []
        out[name] = {
            "default": field.default,
            "help": field.description or "",
            "type": "choice" if choices else getattr(annotation, "__name__", str(annotation)),
            "bounds": _bounds(field.metadata),
            "choices": choices,
        }
    return out
