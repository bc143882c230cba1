"""Many-shot subsets: ``<task>@<n>`` or ``<task>@<fraction>``, optionally ``#<fold>``.

Data-efficiency curves need the same task at several train sizes, and several folds per
size to put an error bar on each point. A subset is drawn from the train split only
(trainval = subset + val; val and test are unchanged), class-stratified so small subsets
keep every class when they can, and seeded by (task, n, fold) through SHA-256, so a rerun
on any machine draws the same images while different folds draw different ones.

The train split a subset draws from is the task's whole one: a folder task's ``train``, an
FGVC ``train.json``, and for a VTAB-layout task (``vtab1k/*``, ``synth/*``) its full train
split ``train.txt`` when the folder has one (VTAB-1k ships only ``train800``; the many-shot
arm of study 000 trains on up to the full set), less the ``val200`` images so selection
never sees a training image. ``<task>@1.0`` is then the full training set.
"""

from __future__ import annotations

import functools
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tuner.data.vtab import DataError

_SUFFIX = re.compile(r"@(?P<size>[0-9]*\.?[0-9]+)(?:#(?P<fold>[0-9]+))?$")
SYNTAX = "<task>@<n> or <task>@<fraction>, optionally #<fold>, e.g. synth/objects@400#1"
#: A VTAB-layout folder's optional full train split (``<image path> <label>`` lines)
FULL_TRAIN = "train.txt"


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
            f"task {task_id}: subset n={n} exceeds the train split size {n_train} of {base} "
            f"(a VTAB-layout task draws from its full train split {FULL_TRAIN} when its folder "
            "has one, else from train800)"
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


def subset_pool(
    task_id: str, folder: Path, items: dict[str, list], num_classes: int
) -> tuple[list, list[Path]]:
    """The train items a subset of a VTAB-layout task draws from, and the files defining them.

    ``items`` are the task's split items (``train`` = train800). With a subset id and a
    ``folder/train.txt``: that full split less the val200 images (matched by resolved path),
    so ``T@n`` may exceed 800 and ``T@1.0`` is the full set; otherwise ``items["train"]``.
    """
    full = Path(folder) / FULL_TRAIN
    if parse_task(task_id).subset is None or not full.is_file():
        return items["train"], []
    from tuner.data.shifts import list_file_items  # the same list-file reader (lazy: torch)

    held_out = {Path(path).resolve() for path, _, _ in items["val"]}
    pool = [i for i in list_file_items(full, num_classes) if Path(i[0]).resolve() not in held_out]
    if not pool:
        raise DataError(f"{full}: every image is in val200; expected train images besides them")
    return pool, [full]
