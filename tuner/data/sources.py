"""Any task id to cache items per split: the one place that knows which layout a suite uses.

``load_task``, ``data check`` and the sweep's data record all need "the images and labels
of each split, and the files that define them"; keeping the dispatch here means a new layout
is one branch, and the cache and subsets never care where items came from.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from tuner.data.cache import Item, vtab_items
from tuner.data.fgvc import fgvc_files, read_fgvc
from tuner.data.folder import read_folder_task
from tuner.data.subsets import parse_task, subset_pool
from tuner.data.tasks import TaskInfo, get_task, task_dir
from tuner.data.vtab import SPLITS, DataError, split_path

#: Our split names -> the VTAB-1k split files that hold them.
VTAB_NAMES = {"train": "train800", "val": "val200", "trainval": "train800val200", "test": "test"}


@dataclass
class Source:
    """Items of ``train``, ``val``, ``trainval`` and ``test``, and the task's label names."""

    info: TaskInfo
    items: dict[str, list[Item]]
    classes: tuple[str, ...] | None = None
    files: list[Path] = field(default_factory=list)


def read_source(task_id: str, data_root: Path) -> Source:
    """The base task's items (a subset is drawn in ``load_task``; its train pool may be a
    VTAB-layout task's full train split, see ``subset_pool``)."""
    base = parse_task(task_id).base
    info = get_task(base)
    folder = task_dir(base, Path(data_root))
    if info.suite == "folder":
        task = read_folder_task(folder)
        return Source(info, task.items, task.classes, task.files or [folder])
    if info.suite == "fgvc":
        items = read_fgvc(folder, info.name)
        found = len({y for split in items.values() for _, y, _ in split})
        if found > info.num_classes:
            raise DataError(
                f"{folder}: {found} distinct labels in train/val/test.json, but the registry "
                f"says {info.id} has {info.num_classes} classes; expected at most that many"
            )
        return Source(info, items, None, fgvc_files(folder))
    items = {ours: vtab_items(folder, v, info.num_classes) for ours, v in VTAB_NAMES.items()}
    items["train"], full = subset_pool(task_id, folder, items, info.num_classes)
    return Source(info, items, None, [split_path(folder, s) for s in SPLITS] + full)


def task_digest(task_id: str, data_root: Path) -> str:
    """16 hex digits over every split's (image path, label) list: the data set's identity
    for tracking, whatever the layout (split files, JSON, folders, manifests)."""
    source = read_source(task_id, data_root)
    folder = task_dir(task_id, Path(data_root))
    root = folder if folder.is_dir() else folder.parent
    h = hashlib.sha256(f"{task_id}\n".encode())
    for split in ("train", "val", "trainval", "test"):
        h.update(f"[{split}]\n".encode())
        for path, label, _ in source.items[split]:
            h.update(f"{os.path.relpath(path, root)}\0{label}\n".encode())
    return h.hexdigest()[:16]
