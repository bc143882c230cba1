"""The task registry: every task a sweep may name, as ``<suite>/<name>``.

Configs are validated against this list before anything runs (a typo fails in the first
second, not after a cluster spins up), and the leaderboard reads each task's VTAB group from
it to compute group means. Task data lives at ``<data_root>/<suite>/<name>``: the VTAB-1k
layout for ``synth`` and ``vtab1k``, VPT's JSON layout for ``fgvc``.

Two kinds of id are resolved on the fly rather than listed: user tasks ``folder:<path>``
(their class count comes from the data) and many-shot subsets ``<task>@<n>[#<fold>]`` (see
:mod:`tuner.data.subsets`), which share their base task's group and classes.
"""

from __future__ import annotations

import fnmatch
import functools
from dataclasses import dataclass, replace
from pathlib import Path

from tuner.data.fgvc import FGVC_DATASETS
from tuner.data.folder import PREFIX as FOLDER_PREFIX
from tuner.data.folder import folder_classes, folder_path
from tuner.data.subsets import parse_task
from tuner.data.synth import SYNTH_TASKS
from tuner.util import unknown_message

#: VTAB's groups: the leaderboard's group mean averages over these only.
GROUPS = ("natural", "specialized", "structured")
#: Groups of tasks outside VTAB (FGVC, user folders), reported per task and in the flat mean.
OTHER_GROUPS = ("fgvc", "custom")


@dataclass(frozen=True)
class TaskInfo:
    """What a sweep needs to know about a task before loading it."""

    id: str  # "<suite>/<name>", e.g. "synth/count", "vtab1k/cifar"
    suite: str
    name: str
    group: str  # one of GROUPS or OTHER_GROUPS
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
    infos += [TaskInfo(f"fgvc/{n}", "fgvc", n, "fgvc", k) for n, (k, _) in FGVC_DATASETS.items()]
    for info in infos:
        if info.group not in GROUPS + OTHER_GROUPS:
            raise ValueError(f"task {info.id}: unknown group {info.group!r}")
    return {info.id: info for info in infos}


TASKS: dict[str, TaskInfo] = _build()


def list_tasks(pattern: str = "*") -> list[str]:
    """Registered task ids matching a shell wildcard (``synth/*``), in registry order."""
    return [tid for tid in TASKS if fnmatch.fnmatchcase(tid, pattern)]


def get_task(task_id: str) -> TaskInfo:
    """The task's info; an unknown id raises KeyError listing valid ids.

    ``folder:<path>`` reads the class count from the data (a missing or malformed folder is a
    DataError); a subset suffix keeps the base task's info under the full id.
    """
    ref = parse_task(task_id)
    base, subset = ref.base, ref.subset
    if base.startswith(FOLDER_PREFIX):
        path = folder_path(base)
        info = _folder_info(base, str(path), _stamp(path))
    elif base in TASKS:
        info = TASKS[base]
    else:
        extra = ", or folder:<path>, optionally with @<n>[#<fold>]"
        raise KeyError(unknown_message("task", task_id, list(TASKS), 20, extra))
    return info if subset is None else replace(info, id=task_id)


def _stamp(path: Path) -> tuple[int, ...] | None:
    """Modification times of a user task and its direct entries (split folders, files):
    any change that could change its classes changes the stamp."""
    if not path.exists():
        return None
    entries = [path, *sorted(path.iterdir())] if path.is_dir() else [path]
    return tuple(p.stat().st_mtime_ns for p in entries)


@functools.lru_cache(maxsize=256)
def _folder_info(base: str, path: str, stamp: tuple[int, ...] | None) -> TaskInfo:
    """A user folder's info, read once per (folder, modification time) and process."""
    return TaskInfo(base, "folder", path, "custom", folder_classes(Path(path))[0])


def task_group(task_id: str) -> str:
    """The task's group without reading any data (a user folder may be gone by now)."""
    base = parse_task(task_id).base
    if base.startswith(FOLDER_PREFIX):
        return "custom"
    try:
        return get_task(base).group
    except KeyError:  # a replay table's task label, not a registered task
        return "custom"


def task_order(task_ids: list[str]) -> list[str]:
    """Registry order; within a base task, subsets by count, then by fraction, then the
    plain task (its full size), so a leaderboard's columns read as a data-size curve;
    then user tasks as given."""
    rank = {tid: i for i, tid in enumerate(TASKS)}
    given = {tid: i for i, tid in enumerate(dict.fromkeys(task_ids))}

    def key(task: str) -> tuple[float, ...]:
        ref, sub = parse_task(task), parse_task(task).subset
        if ref.base not in rank:
            return (len(rank), given[task])
        if sub is None:
            return (rank[ref.base], 2, 0, 0, given[task])
        if sub.count is not None:
            return (rank[ref.base], 0, sub.count, sub.fold, given[task])
        return (rank[ref.base], 1, sub.fraction or 0.0, sub.fold, given[task])

    return sorted(given, key=key)


def layout_candidates(data_root: Path, suite: str, name: str) -> list[Path]:
    """Where a registered task may live under a data root, in order of preference.

    ``ROOT/<suite>/<name>`` is the layout; VTAB-1k tasks also sit directly under ROOT as the
    community ships them, and ROOT may be the suite folder itself. ``data check`` and sweeps
    both resolve through here, so a root one accepts the other reads.
    """
    root = Path(data_root)
    found = [root / suite / name]
    if suite == "vtab1k" or root.name == suite:
        found.append(root / name)
    return found


def task_dir(task_id: str, data_root: Path) -> Path:
    """Where the task's data lives (see ``layout_candidates``), or a user task's path; the
    canonical ``data_root/<suite>/<name>`` when none exists yet (synth tasks are written)."""
    info = get_task(parse_task(task_id).base)
    if info.suite == "folder":
        return Path(info.name)
    candidates = layout_candidates(Path(data_root), info.suite, info.name)
    return next((c for c in candidates if c.is_dir()), candidates[0])
