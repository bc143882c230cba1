"""Replay tables: recorded results that stand in for training.

A table has one row per configuration (its final validation accuracy) or one row per epoch
(a learning curve) of each study, a study being a (task, method) pair. Columns: ``task``,
``method``, ``config`` (a JSON object of hyper-parameter → value), ``val_acc`` (a fraction in
[0, 1]); optional ``epoch`` (1-based), ``test_acc``, ``epoch_s`` and ``test_correct`` (a
string of 0s and 1s: which test examples the configuration got right after its last epoch,
in test order, so a replay can tell ties on test with the leaderboard's paired bootstrap);
any other column is ignored. Tasks, methods and hyper-parameter names are labels: nothing
here needs them to be registered in this project.

A configuration is found by its *canonical key*, so ``{"lr": 0.001}``, ``{"lr": "1e-3"}``
(an MLflow param) and ``{"lr": 1e-3}`` are the same point, as are ``8`` and ``8.0``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TABLES = Path(__file__).parent / "tables"
REQUIRED = ("task", "method", "config", "val_acc")
OPTIONAL = ("epoch", "test_acc", "epoch_s", "test_correct")


class TableError(ValueError):
    """A replay table that cannot be used; the message names the file, column, row, value."""


def typed(value: Any) -> Any:
    """A config value as the type it means: MLflow params are strings ("8", "1e-3", "True")."""
    if isinstance(value, str):
        low = value.strip().lower()
        if low in ("true", "false"):
            return low == "true"
        try:
            number = float(value)
        except ValueError:
            return value
        if math.isfinite(number) and number.is_integer() and "." not in low and "e" not in low:
            return int(number)
        return number
    return value


def canonical(value: Any) -> Any:
    """The matching form of a value: booleans stay booleans, every number is a float."""
    value = typed(value)
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, (int, float)):
        return float(value)
    return str(value)


def config_key(config: Mapping[str, Any]) -> str:
    """The canonical key of a configuration (sorted keys, canonical values)."""
    return json.dumps({str(k): canonical(v) for k, v in sorted(config.items())}, sort_keys=True)


@dataclass
class Entry:
    """One configuration of a study: its values, curve (val acc per epoch) and extras."""

    config: dict[str, Any]
    curve: dict[int, float] = field(default_factory=dict)
    test_acc: float | None = None
    epoch_s: list[float] = field(default_factory=list)
    test_correct: str | None = None


class ReplayTable:
    """Every study's configurations in table order, looked up by canonical key."""

    def __init__(self, source: str, meta: dict[str, Any] | None = None) -> None:
        self.source = source
        self.meta = meta or {}
        self._studies: dict[tuple[str, str], dict[str, Entry]] = {}
        self.has_curves = False
        self.has_test = False

    # -- building -------------------------------------------------------------------------
    def add(
        self,
        where: str,
        task: str,
        method: str,
        config: Mapping[str, Any],
        val_acc: float,
        epoch: int | None = None,
        test_acc: float | None = None,
        epoch_s: float | None = None,
        test_correct: str | None = None,
    ) -> None:
        """Add one row (``where`` names it in errors); a repeated (config, epoch) is an error."""
        entries = self._studies.setdefault((task, method), {})
        key = config_key(config)
        entry = entries.setdefault(key, Entry({str(k): typed(v) for k, v in config.items()}))
        step = 0 if epoch is None else epoch
        if step in entry.curve:
            what = "configuration" if epoch is None else f"configuration at epoch {epoch}"
            raise TableError(f"{where}: {task} {method} {key}: this {what} appears twice")
        if entry.curve and (0 in entry.curve) != (step == 0):
            raise TableError(
                f"{where}: column 'epoch': {task} {method} {key} has rows with and without an epoch"
            )
        entry.curve[step] = val_acc
        self.has_curves |= epoch is not None
        if test_acc is not None:
            entry.test_acc, self.has_test = test_acc, True
        if epoch_s is not None:
            entry.epoch_s.append(epoch_s)
        if test_correct is not None:
            entry.test_correct = test_correct

    def _entry(self, task: str, method: str, config: Mapping[str, Any]) -> Entry:
        study = self._studies.get((task, method))
        if study is None:
            raise KeyError(f"{self.source}: no study ({task}, {method}); has {self.studies()}")
        entry = study.get(config_key(config))
        if entry is None:
            raise KeyError(
                f"{self.source}: ({task}, {method}) has no configuration {config_key(config)}"
            )
        return entry

    # -- lookups (the replay engine and the strategy comparison read these) ---------------
    def studies(self) -> list[tuple[str, str]]:
        """(task, method) pairs in table order."""
        return list(self._studies)

    def configs(self, task: str, method: str) -> list[dict[str, Any]]:
        """The study's configurations in table order (values typed)."""
        return [dict(e.config) for e in self._studies[(task, method)].values()]

    def values(self, task: str, method: str) -> dict[str, list[Any]]:
        """Each hyper-parameter's distinct values in the study, sorted (a choice space)."""
        out: dict[str, dict[Any, Any]] = {}
        for entry in self._studies[(task, method)].values():
            for k, v in entry.config.items():
                out.setdefault(k, {}).setdefault(canonical(v), v)
        return {k: [seen[c] for c in sorted(seen, key=_order)] for k, seen in out.items()}

    def curve(self, task: str, method: str, config: Mapping[str, Any]) -> list[float]:
        """Val accuracy per epoch (a final-only row: one value, which a replay repeats)."""
        entry = self._entry(task, method, config)
        return [entry.curve[e] for e in sorted(entry.curve)]

    def final(self, task: str, method: str, config: Mapping[str, Any]) -> float:
        """The configuration's last recorded val accuracy."""
        return self.curve(task, method, config)[-1]

    def test_acc(self, task: str, method: str, config: Mapping[str, Any]) -> float | None:
        return self._entry(task, method, config).test_acc

    def test_correct(self, task: str, method: str, config: Mapping[str, Any]) -> Any:
        """Per-example test correctness (a float array of 0/1), or None where not recorded."""
        import numpy as np

        bits = self._entry(task, method, config).test_correct
        if bits is None:
            return None
        return (np.frombuffer(bits.encode(), np.uint8) - ord("0")).astype(np.float64)

    def epoch_s(self, task: str, method: str, config: Mapping[str, Any]) -> float | None:
        """Mean recorded seconds per epoch of the configuration, None where not recorded."""
        spent = self._entry(task, method, config).epoch_s
        return sum(spent) / len(spent) if spent else None

    def __contains__(self, item: tuple[str, str, Mapping[str, Any]]) -> bool:
        task, method, config = item
        return config_key(config) in self._studies.get((task, method), {})

    def rows(self) -> int:
        return sum(len(e.curve) for s in self._studies.values() for e in s.values())

    def describe(self) -> str:
        configs = sum(len(s) for s in self._studies.values())
        kind = "curves" if self.has_curves else "final values"
        return f"{self.source}: {len(self._studies)} studies, {configs} configurations ({kind})"


def _order(value: Any) -> tuple[int, Any]:
    """Sort key of canonical values of mixed kinds (numbers first, then text)."""
    if isinstance(value, bool) or value is None:
        return (0, str(value))
    return (1, value) if isinstance(value, float) else (2, str(value))


def _number(where: str, column: str, value: Any, low: float | None, high: float | None) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise TableError(f"{where}: column {column!r}: {value!r} is not a number") from None
    if (
        not math.isfinite(number)
        or (low is not None and number < low)
        or (high is not None and number > high)
    ):
        bounds = f"[{low}, {high}]" if high is not None else f">= {low}"
        raise TableError(f"{where}: column {column!r}: {value!r} is outside {bounds}")
    return number


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _correct(where: str, value: Any, sizes: dict[str, int], task: Any) -> str:
    """A ``test_correct`` cell checked: 0s and 1s, as many as the task's other rows have."""
    bits = str(value).strip()
    if not bits or set(bits) - {"0", "1"}:
        raise TableError(f"{where}: column 'test_correct': {value!r} is not a string of 0s and 1s")
    expected = sizes.setdefault(str(task), len(bits))
    if len(bits) != expected:
        raise TableError(
            f"{where}: column 'test_correct': {len(bits)} test examples, but task {task}'s "
            f"earlier rows have {expected} (every configuration must score the same test set)"
        )
    return bits


def from_records(
    records: Iterable[Mapping[str, Any]], source: str, meta: dict[str, Any] | None = None
) -> ReplayTable:
    """A validated table from row mappings (row numbers in errors are 1-based data rows)."""
    table = ReplayTable(source, meta)
    test_sizes: dict[str, int] = {}
    for i, rec in enumerate(records, start=1):
        where = f"{source}: row {i}"
        for column in REQUIRED:
            if _missing(rec.get(column)):
                raise TableError(f"{where}: column {column!r} is empty")
        config = rec["config"]
        if isinstance(config, str):
            try:
                config = json.loads(config)
            except json.JSONDecodeError as err:
                raise TableError(
                    f"{where}: column 'config': {config!r} is not JSON ({err.msg})"
                ) from None
        if not isinstance(config, dict):
            raise TableError(f"{where}: column 'config': {rec['config']!r} is not a JSON object")
        epoch = None
        if not _missing(rec.get("epoch")):
            value = _number(where, "epoch", rec["epoch"], 1, None)
            if not value.is_integer():
                raise TableError(f"{where}: column 'epoch': {rec['epoch']!r} is not an integer")
            epoch = int(value)
        extras = {
            c: _number(where, c, rec[c], 0, 1 if c == "test_acc" else None)
            for c in ("test_acc", "epoch_s")
            if not _missing(rec.get(c))
        }
        if not _missing(rec.get("test_correct")):
            extras["test_correct"] = _correct(where, rec["test_correct"], test_sizes, rec["task"])
        table.add(
            where,
            str(rec["task"]),
            str(rec["method"]),
            config,
            _number(where, "val_acc", rec["val_acc"], 0, 1),
            epoch,
            **extras,
        )
    if not table.studies():
        raise TableError(f"{source}: no rows")
    return table


def shipped_tables() -> list[str]:
    """Names of the tables shipped in the package (``petl_vision_vtab1k``)."""
    return sorted(p.stem for p in TABLES.glob("*.parquet"))


def resolve(name_or_path: str | Path) -> Path:
    """A shipped table's name or a file path, as the path of the file."""
    if str(name_or_path) in shipped_tables():
        return TABLES / f"{name_or_path}.parquet"
    path = Path(name_or_path)
    if not path.is_file():
        raise TableError(
            f"no replay table {str(name_or_path)!r}: not a file, nor one of {shipped_tables()}"
        )
    return path


COMPRESSED = (".gz", ".bz2", ".xz", ".zst")


def _kind(path: Path) -> str:
    """``.csv`` of ``t.csv`` and ``t.csv.gz``; ``.parquet`` of ``t.parquet`` and ``t.pq``."""
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in COMPRESSED:
        suffixes = suffixes[:-1]
    kind = suffixes[-1] if suffixes else ""
    return ".parquet" if kind == ".pq" else kind


def load_table(name_or_path: str | Path) -> ReplayTable:
    """Read a CSV or parquet table (by path or shipped name) and validate every row; a JSON
    sidecar with the same stem (the source, the name mappings) becomes ``meta``."""
    import pandas as pd

    path = resolve(name_or_path)
    try:
        kind = _kind(path)
        if kind == ".parquet":
            frame = pd.read_parquet(path)
        elif kind in (".csv", ".tsv"):  # pandas reads a .gz/.bz2/.xz/.zst file compressed
            frame = pd.read_csv(
                path,
                sep="\t" if kind == ".tsv" else ",",
                dtype={"config": str, "task": str, "method": str, "test_correct": str},
            )
        else:
            raise TableError(
                f"{path}: a replay table is .csv, .tsv (either may be compressed: .csv.gz) "
                "or .parquet"
            )
    except (OSError, ValueError) as err:
        if isinstance(err, TableError):
            raise
        raise TableError(f"{path}: cannot be read: {err}") from err
    missing = [c for c in REQUIRED if c not in frame.columns]
    if missing:
        raise TableError(
            f"{path}: missing column(s) {missing}; a replay table needs {list(REQUIRED)} "
            f"(optional: {list(OPTIONAL)}), found {list(frame.columns)}"
        )
    sidecar = path.with_suffix(".json")
    meta = json.loads(sidecar.read_text()) if sidecar.is_file() else {}
    columns = [c for c in (*REQUIRED, *OPTIONAL) if c in frame.columns]
    records = frame[columns].to_dict("records")
    return from_records(records, str(path), meta)


def from_experiment(experiment: str, tracking_uri: str) -> ReplayTable:
    """A table (curves) from a finished sweep's trial runs in MLflow."""
    from tuner.tracking.history import trial_rows

    rows = trial_rows(tracking_uri, experiment)
    source = f"mlflow:{experiment}@{tracking_uri}"
    if not rows:
        raise TableError(f"{source}: no finished trial run with a val/acc history")
    return from_records(rows, source, {"name": experiment, "tracking_uri": tracking_uri})
