"""The method registry: the single place every other part asks about PETL methods.

``@register`` adds a class (duplicates fail at import time), ``get`` builds one with
hyper-parameters, ``list_methods`` filters names with shell wildcards like timm's
``list_models('vit_*')``. Tests are generated from this registry, so a method is tested
the moment it is registered.
"""

from __future__ import annotations

import fnmatch
from typing import Any, TypeVar

from tuner.methods.base import COMMON_HPARAMS, HParam, Method, count_trainable, set_merge_factor
from tuner.util import unknown_message

_REGISTRY: dict[str, type[Method]] = {}
M = TypeVar("M", bound=type[Method])


def register(cls: M) -> M:
    """Class decorator: add a ``Method`` subclass under its ``name``."""
    name = getattr(cls, "name", None)
    if not name:
        raise TypeError(f"{cls.__qualname__} has no 'name' to register under")
    if name in _REGISTRY:
        raise ValueError(
            f"method {name!r} registered twice: {_REGISTRY[name].__module__} and {cls.__module__}"
        )
    _REGISTRY[name] = cls
    return cls


def list_methods(pattern: str = "*") -> list[str]:
    """Registered method names matching a shell wildcard, in registration order."""
    return [n for n in _REGISTRY if fnmatch.fnmatchcase(n, pattern)]


def method_class(name: str) -> type[Method]:
    """The class registered under ``name``; the error lists the valid names."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(unknown_message("method", name, list_methods())) from None


def get(name: str, **hp: Any) -> Method:
    """Build method ``name`` with hyper-parameters ``hp`` (unknown keys are an error)."""
    return method_class(name)(**hp)


# Importing the modules registers them; order here is the order `petl-sweep methods` prints.
from tuner.methods import (  # noqa: E402, F401, I001
    linear,
    full,
    bitfit,
    layernorm,
    difffit,
    ssf,
    vpt,
    lora,
    adapter,
    convpass,
    repadapter,
    fact,
)
from tuner.methods.spt import spt_lora, spt_adapter  # noqa: E402, F401

__all__ = [
    "COMMON_HPARAMS",
    "HParam",
    "Method",
    "count_trainable",
    "get",
    "list_methods",
    "method_class",
    "register",
    "set_merge_factor",
]
