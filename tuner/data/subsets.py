"""Many-shot subsets: ``<task>@<n>`` or ``<task>@<fraction>``, optionally ``#<fold>``.

Data-efficiency curves need the same task at several train sizes, and several folds per
size to put an error bar on each point. A subset is drawn from the train split only
(trainval = subset + val; val and test are unchanged), class-stratified so small subsets
keep every class when they can, and seeded by (task, n, fold) through SHA-256, so a rerun
on any machine draws the same images while different folds draw different ones.
"""

from __future__ import annotations

import functools
import hashlib
import re
from dataclasses import dataclass

import numpy as np

from tuner.data.vtab import DataError

_SUFFIX = re.compile(r"@(?P<size>[0-9]*\.?[0-9]+)(?:#(?P<fold>[0-9]+))?$")
SYNTAX = "<task>@<n> or <task>@<fraction>, optionally #<fold>, e.g. synth/objects@400#1"


@dataclass(frozen=True)
class Subset:
    """How many train examples to keep (a count or a fraction) and which fold."""

    count: int | None
    fraction: float | None
    fold: int = 0

    def size(self, n_train: int) -> int:
        """The number of examples this subset keeps of a train split of ``n_train``."""
        if self.count is not None:
            return self.count
        return max(1, round(float(self.fraction or 0) * n_train))


@dataclass(frozen=True)
class TaskRef:
    """A task id parsed once: the full id, its base task and its subset (if any)."""

    id: str
    base: str
    subset: Subset | None

    @property
    def suffix(self) -> str:
        """``@400#1`` of ``synth/objects@400#1`` (empty without a subset)."""
        return self.id[len(self.base) :]


@functools.lru_cache(maxsize=4096)
def parse_task(task_id: str) -> TaskRef:
    """The ``TaskRef`` of an id (cached: ids are parsed once per process)."""
    base, subset = split_subset(task_id)
    return TaskRef(task_id, base, subset)


def split_subset(task_id: str) -> tuple[str, Subset | None]:
    """``("synth/objects", Subset(400, None, 2))`` for ``"synth/objects@400#2"``.

    An id without ``@`` in its last path component has no subset. A malformed suffix, a
    zero count or a fraction outside (0, 1] raises KeyError naming the syntax.
    """
    if "@" not in task_id.rsplit("/", 1)[-1]:
        return task_id, None
    match = _SUFFIX.search(task_id)
    if match is None or match.start() == 0:
        raise KeyError(f"bad subset suffix in task {task_id!r}; expected {SYNTAX}")
    size, fold = match["size"], int(match["fold"] or 0)
    if "." in size:
        fraction = float(size)
        if not 0 < fraction <= 1:
            raise KeyError(f"task {task_id!r}: fraction {size} is not in (0, 1]; expected {SYNTAX}")
        subset = Subset(None, fraction, fold)
    else:
        if int(size) < 1:
            raise KeyError(f"task {task_id!r}: subset size must be at least 1; expected {SYNTAX}")
        subset = Subset(int(size), None, fold)
    return task_id[: match.start()], subset


def subset_indices(task_id: str, labels: np.ndarray) -> np.ndarray:
    """Sorted indices into the train split of ``task_id`` (which carries the suffix).

    Every class present gets one example first when ``n`` allows it; the rest is shared in
    proportion to what each class has left (largest remainder, ties broken by the seeded
    generator). ``n`` above the train size is a DataError naming task, n and size.
    """
    ref = parse_task(task_id)
    base, subset = ref.base, ref.subset
    labels = np.asarray(labels)
    if subset is None:
        return np.arange(len(labels))
    n_train, n = len(labels), subset.size(len(labels))
    if n > n_train:
        raise DataError(
            f"task {task_id}: subset n={n} exceeds the train split size {n_train} of {base}"
        )
    digest = hashlib.sha256(f"petl-sweep/subset/v1/{base}/{n}/{subset.fold}".encode()).digest()
    rng = np.random.default_rng(int.from_bytes(digest[:16], "little"))
    classes, counts = np.unique(labels, return_counts=True)
    quota = np.ones_like(counts) if n >= len(classes) else np.zeros_like(counts)
    left, capacity = n - int(quota.sum()), counts - quota
    if left:
        share = left * capacity / capacity.sum()
        quota += np.floor(share).astype(quota.dtype)
        rest = left - int(np.floor(share).sum())
        order = np.lexsort((rng.random(len(classes)), -(share - np.floor(share))))
        quota[order[:rest]] += 1
    chosen = [
        rng.choice(np.flatnonzero(labels == c), size=int(q), replace=False)
        for c, q in zip(classes, quota, strict=True)
        if q
    ]
    return np.sort(np.concatenate(chosen))
