"""The method registry: the single place every other part asks about PETL methods.

``@register`` adds a class (duplicates fail at import time), ``get`` builds one from
hyper-parameters, ``list_methods`` filters names with shell wildcards like timm's
``list_models('vit_*')``. It imports only the contract (``base``), never a method, so a
method module can import ``register`` without a cycle; ``tuner.methods`` imports the
methods and so fills the registry. Tests are generated from it, so a method is tested the
moment it is registered.
"""

from __future__ import annotations

import fnmatch
from typing import Any, TypeVar

from tuner.methods.base import Method, validate_hparam
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
    """Build method ``name`` with hyper-parameters ``hp`` (unknown keys and values outside
    a field's bounds are a ``ValueError`` naming method, field, value and bound)."""
    return method_class(name)(**hp)


def check_hparam(name: str, key: str, value: Any) -> Any:
    """One value of one hyper-parameter of method ``name``, validated (and coerced) by the
    method's typed config, or by the training settings for ``lr``/``weight_decay``/
    ``drop_path``. The search-space loader checks every grid value and range end with it."""
    return validate_hparam(method_class(name), key, value)
