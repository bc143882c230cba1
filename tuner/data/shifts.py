"""Evaluation-only shift sets: extra test sets in a task's label space (corruptions, a new
domain), read once through the same cache and never trained or tuned on.

A shift set is either a list file of ``<image path> <label>`` lines (paths relative to the
list file's folder, as in VTAB split files) or an image folder ``<path>/<class>/*.png`` whose
class folders are the task's class names (user tasks) or integer labels.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from tuner.data.cache import Arrays, Item, load_arrays
from tuner.data.folder import IMAGE_SUFFIXES
from tuner.data.vtab import DataError, _parse_line

Split = tuple[torch.Tensor, torch.Tensor]


def list_file_items(path: Path, num_classes: int) -> list[Item]:
    """A ``<image path> <label>`` list file as cache items, labels in ``[0, num_classes)``."""
    path = Path(path)
    items: list[Item] = []
    for lineno, line in enumerate(path.read_text().splitlines(), start=1):
        if line.strip():
            rel, label = _parse_line(path, lineno, line, num_classes)
            items.append((path.parent / rel, label, f"{path}:{lineno}"))
    if not items:
        raise DataError(f"shift list {path} is empty; expected '<image path> <label>' lines")
    return items


def folder_items(path: Path, num_classes: int, classes: Sequence[str] | None = None) -> list[Item]:
    """An image folder ``<path>/<class>/*`` as cache items in the task's label space."""
    path = Path(path)
    index = {name: i for i, name in enumerate(classes or ())}
    items: list[Item] = []
    for class_dir in sorted(p for p in path.iterdir() if p.is_dir() and p.name[0] != "."):
        name = class_dir.name
        if classes is not None:
            if name not in index:
                raise DataError(
                    f"{class_dir}: class {name!r} is not a class of the task; "
                    f"expected one of {', '.join(classes)}"
                )
            label = index[name]
        elif name.isdigit() and int(name) < num_classes:
            label = int(name)
        else:
            raise DataError(
                f"{class_dir}: folder name {name!r} is not a label; expected an integer "
                f"in [0, {num_classes}) (the task has no class names)"
            )
        items += [
            (p, label, str(p))
            for p in sorted(class_dir.iterdir())
            if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
        ]
    if not items:
        raise DataError(f"shift folder {path} has no images; expected <class>/*.png|jpg|jpeg")
    return items


def load_eval_arrays(
    spec: Path | str,
    image_size: int,
    cache_dir: Path,
    num_classes: int,
    classes: Sequence[str] | None = None,
    interpolation: str = "bilinear",
    reuse: Sequence[Arrays] = (),
) -> Arrays:
    """:func:`load_eval_set` as cached arrays (for reuse by later loads)."""
    spec = Path(spec)
    if spec.is_dir():
        items = folder_items(spec, num_classes, classes)
    elif spec.is_file():
        items = list_file_items(spec, num_classes)
    else:
        raise DataError(
            f"shift set {spec} does not exist; expected a '<image path> <label>' list file "
            "or an image folder <path>/<class>/*.png"
        )
    name = f"shift-{spec.parent.name}-{spec.name}"
    return load_arrays(items, image_size, cache_dir, name, interpolation, "c", reuse)


def load_eval_set(
    spec: Path | str,
    image_size: int,
    cache_dir: Path,
    num_classes: int,
    classes: Sequence[str] | None = None,
    interpolation: str = "bilinear",
) -> Split:
    """A shift set's ``(uint8 N x 3 x S x S images, int64 labels)``, decoded once."""
    a = load_eval_arrays(spec, image_size, cache_dir, num_classes, classes, interpolation)
    return torch.from_numpy(a.x), torch.from_numpy(a.y)
