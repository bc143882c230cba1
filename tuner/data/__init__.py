"""Task data for training: one call from a task id to uint8 tensors.

Synthetic and real VTAB-1k tasks take the same path (VTAB layout on disk, then the decode
cache), so the offline suite exercises the exact loader the real benchmark will use.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from tuner.data.cache import load_split_arrays
from tuner.data.synthetic import write_synth_suite
from tuner.data.tasks import TaskInfo, get_task, task_dir
from tuner.data.vtab import DataError

__all__ = ["DataError", "TaskData", "TaskInfo", "ensure_synth", "get_task", "load_task"]

Split = tuple[torch.Tensor, torch.Tensor]


@dataclass
class TaskData:
    """A task's four splits as ``(uint8 N x 3 x H x W images, int64 labels)``."""

    info: TaskInfo
    train: Split  # train800
    val: Split  # val200
    trainval: Split  # train800val200 (what final retrains fit on)
    test: Split


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
) -> TaskData:
    """Every split of ``task_id`` at ``image_size``, decoded once and then memory-mapped.

    ``synth/*`` tasks are written first if missing, so a fresh machine needs no data step.
    The tensors share copy-on-write memory maps of the cache files: concurrent trials share
    one copy in the page cache, and an accidental in-place write stays private to the
    process instead of corrupting the cache.
    """
    info = get_task(task_id)
    data_root = Path(data_root)
    if info.suite == "synth":
        ensure_synth(data_root, seed=synth_seed, tasks=[info.name])
    folder = task_dir(task_id, data_root)
    cache = data_root / ".cache" if cache_dir is None else Path(cache_dir)

    def split(name: str) -> Split:
        x, y = load_split_arrays(folder, name, image_size, cache, info.num_classes, "c")
        return torch.from_numpy(x), torch.from_numpy(y)

    return TaskData(
        info, split("train800"), split("val200"), split("train800val200"), split("test")
    )
