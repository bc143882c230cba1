"""Search spaces live in YAML (``search_spaces/``), apart from the training code.

Each method has ``search_spaces/<method>.yaml`` with two sections: ``optuna`` (ranges for
TPE) and ``published_grid`` (the seed study's exact grid). ``common.yaml`` holds the
optimiser's keys; a method file may override them. This module turns those files into plain
dicts of ``Domain`` objects; ``sweep.py`` turns them into Ray Tune spaces.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml

from tuner import methods
from tuner.methods.base import COMMON_HPARAMS

SpaceKind = Literal["optuna", "published_grid"]


def default_spaces_dir() -> Path:
    """The repo's ``search_spaces/`` (editable install) or the copy inside the wheel."""
    here = Path(__file__).resolve().parents[1]  # the tuner package
    for candidate in (here.parent / "search_spaces", here / "_search_spaces"):
        if (candidate / "common.yaml").exists():
            return candidate
    raise FileNotFoundError(f"no search_spaces/ with common.yaml beside {here}")


@dataclass(frozen=True)
class Domain:
    """One searchable hyper-parameter: ``kind`` in choice/loguniform/uniform/int/fixed."""

    kind: str
    args: tuple[Any, ...]

    def sample(self, rng: np.random.Generator) -> Any:
        if self.kind == "fixed":
            return self.args[0]
        if self.kind == "choice":
            return self.args[int(rng.integers(len(self.args)))]
        if self.kind == "int":
            return int(rng.integers(self.args[0], self.args[1] + 1))
        low, high = self.args
        if self.kind == "loguniform":
            return float(np.exp(rng.uniform(np.log(low), np.log(high))))
        return float(rng.uniform(low, high))


def _parse_domain(where: str, spec: Any) -> Domain:
    if not isinstance(spec, dict):
        return Domain("fixed", (spec,))
    if len(spec) != 1:
        raise ValueError(f"{where}: a domain has exactly one key, got {sorted(spec)}")
    kind, args = next(iter(spec.items()))
    if kind == "choice":
        if not isinstance(args, list) or not args:
            raise ValueError(f"{where}: choice needs a non-empty list, got {args!r}")
        return Domain("choice", tuple(args))
    if kind in ("loguniform", "uniform", "int"):
        if not isinstance(args, list) or len(args) != 2:
            raise ValueError(f"{where}: {kind} needs [low, high], got {args!r}")
        low, high = (int(a) if kind == "int" else float(a) for a in args)
        if not low < high or (kind == "loguniform" and low <= 0):
            raise ValueError(f"{where}: {kind} needs 0 < low < high (log) or low < high")
        return Domain(kind, (low, high))
    raise ValueError(f"{where}: unknown domain {kind!r}; use choice, loguniform, uniform, int")


def _read(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise FileNotFoundError(f"search space file {path} is missing")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping")
    return data


def load_space(
    method: str, kind: SpaceKind = "optuna", spaces_dir: Path | None = None
) -> dict[str, Domain]:
    """Optuna domains (``kind='optuna'``) or grid value lists as ``choice`` domains.

    Keys are the method's typed config fields and the optimiser's (``COMMON_HPARAMS``);
    every grid value, choice and range end is checked against the field's bounds, so a zero
    rank or a negative lr in a space file is refused before any trial, naming the field.
    """
    spaces_dir = spaces_dir or default_spaces_dir()
    valid = set(methods.method_class(method).config_class.model_fields) | set(COMMON_HPARAMS)
    merged: dict[str, Domain] = {}
    for path in (spaces_dir / "common.yaml", spaces_dir / f"{method}.yaml"):
        section = _read(path).get(kind) or {}
        for key, spec in section.items():
            where = f"{path}: {kind}.{key}"
            if key not in valid:
                raise ValueError(
                    f"{where}: not a hyper-parameter of {method!r}; valid: {sorted(valid)}"
                )
            if kind == "published_grid":
                values = spec if isinstance(spec, list) else [spec]
                merged[key] = Domain("choice", tuple(values))
            else:
                merged[key] = _parse_domain(where, spec)
            _check_bounds(method, where, key, merged[key])
    return merged


def _check_bounds(method: str, where: str, key: str, domain: Domain) -> None:
    """Every value a domain can yield lies within the field's bounds (range ends included)."""
    for value in domain.args:
        try:
            methods.check_hparam(method, key, value)
        except ValueError as err:
            raise ValueError(f"{where}: {err}") from None


def grid_points(space: dict[str, Domain]) -> list[dict[str, Any]]:
    """Every combination of a published grid (Cartesian product), in file order."""
    keys = list(space)
    values = [space[k].args if space[k].kind == "choice" else space[k].args[:1] for k in keys]
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*values)]
