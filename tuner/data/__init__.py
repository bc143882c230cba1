"""Task data for training: one call from a task id to uint8 tensors.

Synthetic and real VTAB-1k tasks take the same path (VTAB layout on disk, then the decode
cache), so the offline suite exercises the exact loader the real benchmark will use. FGVC,
user folders and shift sets only differ in how their items are listed (``sources``); every
image goes through one cache keyed by content and preprocessing, and is decoded once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from tuner.data.cache import Arrays, Item, load_arrays
from tuner.data.shifts import load_eval_arrays, load_eval_set
from tuner.data.sources import read_source, task_digest
from tuner.data.subsets import parse_task, subset_indices
from tuner.data.synth import write_synth_suite
from tuner.data.tasks import TaskInfo, get_task, task_dir
from tuner.data.vtab import DataError

__all__ = [
    "DataError",
    "TaskData",
    "TaskInfo",
    "ensure_synth",
    "get_task",
    "load_eval_set",
    "load_task",
    "task_digest",
    "task_dir",
]

Split = tuple[torch.Tensor, torch.Tensor]


@dataclass
class TaskData:
    """A task's four splits as ``(uint8 N x 3 x H x W images, int64 labels)``."""

    info: TaskInfo
    train: Split  # train800
    val: Split  # val200
    trainval: Split  # train800val200 (what final retrains fit on)
    test: Split
    shifts: dict[str, Split] = field(default_factory=dict)  # evaluation-only test sets
    classes: tuple[str, ...] | None = None  # label names where the layout has them


def ensure_synth(data_root: Path, seed: int = 0, tasks: Sequence[str] | None = None) -> None:
    """Write missing synthetic tasks (names without ``synth/``) under ``data_root/synth``.

    Complete folders with the same seed are left alone, so this is cheap to call per trial.
    """
    write_synth_suite(Path(data_root) / "synth", seed=seed, tasks=tasks)


def load_task(
    task_id: str,
    data_root: Path,
    image_size: int,
    cache_dir: Path | None = None,
    synth_seed: int = 0,
    interpolation: str = "bilinear",
    shifts: Mapping[str, Path | str] | None = None,
) -> TaskData:
    """Every split of ``task_id`` at ``image_size``, decoded once and then memory-mapped.

    ``synth/*`` tasks are written first if missing, so a fresh machine needs no data step.
    ``interpolation`` is the resize filter (timm's ``pretrained_cfg["interpolation"]``).
    A ``@<n>[#<fold>]`` suffix subsamples train (trainval = subset + val). ``shifts`` maps a
    name to a shift set (:func:`load_eval_set`) that fills ``TaskData.shifts``.
    Train, val and test are decoded; trainval, subsets and shift images already decoded
    are copied from those cache files. The tensors share copy-on-write memory maps of the
    cache files: concurrent trials share one copy in the page cache, and an accidental
    in-place write stays private to the process instead of corrupting the cache.
    """
    info = get_task(task_id)
    data_root = Path(data_root)
    if info.suite == "synth":
        ensure_synth(data_root, seed=synth_seed, tasks=[info.name])
    source = read_source(task_id, data_root)
    cache = data_root / ".cache" if cache_dir is None else Path(cache_dir)
    label = f"{info.suite}-{Path(info.name).name}"

    def load(name: str, items: list[Item], reuse: Sequence[Arrays] = ()) -> Arrays:
        return load_arrays(items, image_size, cache, f"{label}-{name}", interpolation, "c", reuse)

    train, val = load("train", source.items["train"]), load("val", source.items["val"])
    test = load("test", source.items["test"])
    ref = parse_task(task_id)
    if ref.subset is None:
        trainval = load("trainval", source.items["trainval"], (train, val))
    else:
        keep = subset_indices(task_id, train.y)
        items = [source.items["train"][i] for i in keep]
        train = load(f"train{ref.suffix}", items, (train,))
        trainval = load(f"trainval{ref.suffix}", items + source.items["val"], (train, val))
    shift_sets = {
        name: load_eval_arrays(
            spec, image_size, cache, info.num_classes, source.classes, interpolation, (test,)
        )
        for name, spec in (shifts or {}).items()
    }

    def split(a: Arrays) -> Split:
        return torch.from_numpy(a.x), torch.from_numpy(a.y)

    return TaskData(
        info,
        split(train),
        split(val),
        split(trainval),
        split(test),
        {name: split(a) for name, a in shift_sets.items()},
        source.classes,
    )
