"""The VTAB-1k on-disk layout: one folder per task, four image-list split files.

``ROOT/<task>/{train800,val200,train800val200,test}.txt``, each line
``<image path relative to the task folder> <integer label>``. This is the layout the PETL
community ships VTAB-1k in, and the synthetic suite is written in it too, so one reader
serves both and a bug in it shows up offline.

A bad data folder is found before training starts, not as a shape error mid-sweep: every
problem raises :class:`DataError` naming the file, the line and what was expected.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from tuner.util import atomic_write

SPLITS = ("train800", "val200", "train800val200", "test")


class DataError(ValueError):
    """A data folder or split file that cannot be used as it is."""


def split_path(task_dir: Path, split: str) -> Path:
    """The split file of ``split`` in ``task_dir`` (an unknown split name is a DataError)."""
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    return Path(task_dir) / f"{split}.txt"


def _parse_line(path: Path, lineno: int, line: str, num_classes: int | None) -> tuple[str, int]:
    parts = line.rsplit(maxsplit=1)
    where = f"{path}:{lineno}"
    if len(parts) != 2:
        raise DataError(f"{where}: expected '<image path> <integer label>', got {line.strip()!r}")
    rel, raw = parts
    try:
        label = int(raw)
    except ValueError:
        raise DataError(f"{where}: label {raw!r} is not an integer") from None
    if label < 0 or (num_classes is not None and label >= num_classes):
        bound = f"[0, {num_classes})" if num_classes is not None else ">= 0"
        raise DataError(f"{where}: label {label} is out of range, expected {bound}")
    return rel, label


def read_split_lines(
    task_dir: Path, split: str, num_classes: int | None = None
) -> list[tuple[int, str, int]]:
    """Like :func:`read_split`, with each item's 1-based line number first (for errors)."""
    task_dir = Path(task_dir)
    if not task_dir.is_dir():
        raise DataError(f"task folder {task_dir} does not exist")
    path = split_path(task_dir, split)
    try:
        text = path.read_text()
    except FileNotFoundError:
        present = sorted(p.name for p in task_dir.glob("*.txt"))
        raise DataError(
            f"split file {path} is missing (found: {', '.join(present) or 'none'})"
        ) from None
    items = [
        (lineno, *_parse_line(path, lineno, line, num_classes))
        for lineno, line in enumerate(text.splitlines(), start=1)
        if line.strip()
    ]
    if not items:
        raise DataError(f"split file {path} is empty; expected '<image path> <label>' lines")
    return items


def read_split(task_dir: Path, split: str, num_classes: int | None = None) -> list[tuple[str, int]]:
    """``(relative image path, label)`` for every line of a split file, validated.

    Blank lines are ignored; the path is everything before the last whitespace. Labels are
    checked against ``[0, num_classes)`` when ``num_classes`` is given.
    """
    return [(rel, label) for _, rel, label in read_split_lines(task_dir, split, num_classes)]


def write_split(task_dir: Path, split: str, items: Sequence[tuple[str, int]]) -> Path:
    """Write a split file (atomically, via a temp file and rename); returns its path."""
    path = split_path(task_dir, split)
    lines = []
    for rel, label in items:
        if not rel or any(ch.isspace() for ch in rel):
            raise DataError(f"{path}: image path {rel!r} is empty or contains whitespace")
        try:
            ok = int(label) == label and label >= 0
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise DataError(f"{path}: label {label!r} for {rel} is not a non-negative integer")
        lines.append(f"{rel} {int(label)}\n")
    with atomic_write(path) as tmp:
        tmp.write_text("".join(lines))
    return path
