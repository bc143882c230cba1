"""The task registry: every task a sweep may name, as ``<suite>/<name>``.

Configs are validated against this list before anything runs (a typo fails in the first
second, not after a cluster spins up), and the leaderboard reads each task's VTAB group from
it to compute group means. Task data lives at ``<data_root>/<suite>/<name>`` in the VTAB-1k
layout, whatever the suite.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from pathlib import Path

from tuner.data.synthetic import SYNTH_TASKS

GROUPS = ("natural", "specialized", "structured")


@dataclass(frozen=True)
class TaskInfo:
    """What a sweep needs to know about a task before loading it."""

    id: str  # "<suite>/<name>", e.g. "synth/count", "vtab1k/cifar"
    suite: str
    name: str
    group: str  # one of GROUPS
    num_classes: int


# VTAB-1k folder names as the community ships them, with their group and class count.
_VTAB1K: dict[str, tuple[str, int]] = {
    "caltech101": ("natural", 102),
    "cifar": ("natural", 100),
    "dtd": ("natural", 47),
    "oxford_flowers102": ("natural", 102),
    "oxford_iiit_pet": ("natural", 37),
    "svhn": ("natural", 10),
    "sun397": ("natural", 397),
    "patch_camelyon": ("specialized", 2),
    "eurosat": ("specialized", 10),
    "resisc45": ("specialized", 45),
    "diabetic_retinopathy": ("specialized", 5),
    "clevr_count": ("structured", 8),
    "clevr_dist": ("structured", 6),
    "dmlab": ("structured", 6),
    "kitti": ("structured", 4),
    "dsprites_loc": ("structured", 16),
    "dsprites_ori": ("structured", 16),
    "smallnorb_azi": ("structured", 18),
    "smallnorb_ele": ("structured", 9),
}


def _build() -> dict[str, TaskInfo]:
    infos = [
        TaskInfo(f"synth/{t.name}", "synth", t.name, t.group, t.num_classes)
        for t in SYNTH_TASKS.values()
    ]
    infos += [
        TaskInfo(f"vtab1k/{name}", "vtab1k", name, group, k) for name, (group, k) in _VTAB1K.items()
    ]
    for info in infos:
        if info.group not in GROUPS:
            raise ValueError(f"task {info.id}: unknown group {info.group!r}")
    return {info.id: info for info in infos}


TASKS: dict[str, TaskInfo] = _build()


def list_tasks(pattern: str = "*") -> list[str]:
    """Registered task ids matching a shell wildcard (``synth/*``), in registry order."""
    return [tid for tid in TASKS if fnmatch.fnmatchcase(tid, pattern)]


def get_task(task_id: str) -> TaskInfo:
    """The task's info; an unknown id raises KeyError listing valid ids."""
    try:
        return TASKS[task_id]
    except KeyError:
        ids = list(TASKS)
        shown = ", ".join(ids[:20]) + (f", ... ({len(ids)} in all)" if len(ids) > 20 else "")
        raise KeyError(f"unknown task {task_id!r}; valid task ids: {shown}") from None


def task_dir(task_id: str, data_root: Path) -> Path:
    """Where the task's VTAB-layout folder lives: ``data_root/<suite>/<name>``."""
    info = get_task(task_id)
    return Path(data_root) / info.suite / info.name
