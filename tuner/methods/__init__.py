"""PETL methods: importing this package registers every one (see ``registry``).

Each method module imports ``register`` from ``tuner.methods.registry``, which imports no
method, so there is no import cycle; the order below is the order `petl-sweep methods`
prints.
"""

from __future__ import annotations

from tuner.methods.base import COMMON_HPARAMS, Method, count_trainable, set_merge_factor
from tuner.methods.configs import MethodConfig
from tuner.methods.registry import check_hparam, get, list_methods, method_class, register

# isort: off
from tuner.methods import (  # noqa: F401  (imported to register them, in this order)
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
from tuner.methods.spt import spt_lora, spt_adapter  # noqa: F401

# isort: on

__all__ = [
    "COMMON_HPARAMS",
    "Method",
    "MethodConfig",
    "check_hparam",
    "count_trainable",
    "get",
    "list_methods",
    "method_class",
    "register",
    "set_merge_factor",
]
