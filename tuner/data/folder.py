"""User tasks, ``folder:<path>``: a VTAB-layout folder, an image folder or a manifest.

People bring their own data in one of three shapes that need no conversion step:

* a folder in the VTAB-1k layout (``train800.txt`` ... ``test.txt``, as ``petl-sweep data
  synth`` writes), the class count being the largest label + 1;
* an image folder ``<path>/{train,val,test}/<class name>/*.{png,jpg,jpeg}``; the classes are
  the sorted class folder names of ``train`` and val/test may only use those;
* a manifest ``<path>.csv`` / ``<path>.parquet`` with columns ``path,label,split`` (paths
  relative to the manifest's folder, ``split`` one of train/val/test). An integer ``label``
  column is used as is; a string column holds class names, numbered by sorted train names.

All three become the same cache items as every other layout. Every problem is a DataError naming
the file (and CSV line or Parquet row) and what was expected.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tuner.data.cache import Item
from tuner.data.vtab import DataError

PREFIX = "folder:"
FOLDER_SPLITS = ("train", "val", "test")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
MANIFEST_COLUMNS = ("path", "label", "split")


@dataclass
class FolderTask:
    """A user task's items per split (``trainval`` = train + val) and its label space."""

    items: dict[str, list[Item]]
    num_classes: int
    classes: tuple[str, ...] | None  # None: integer labels without names
    files: list[Path] = field(default_factory=list)  # what defines the task, for digests


def folder_path(task_id: str) -> Path:
    """The path of a ``folder:<path>`` task id."""
    if not task_id.startswith(PREFIX) or not task_id[len(PREFIX) :]:
        raise DataError(f"{task_id!r} is not a folder task; expected 'folder:<path>'")
    return Path(task_id[len(PREFIX) :])


def _images(class_dir: Path) -> list[Path]:
    return sorted(
        p for p in class_dir.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )


def _class_dirs(split_dir: Path) -> list[Path]:
    return sorted(p for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))


def image_folder_classes(root: Path) -> tuple[str, ...]:
    """Sorted class folder names of ``root/train`` (cheap: no image is listed)."""
    train = Path(root) / "train"
    if not train.is_dir():
        raise DataError(
            f"split folder {train} is missing; expected {root}/train/<class name>/*.png|jpg|jpeg"
        )
    classes = tuple(p.name for p in _class_dirs(train))
    if not classes:
        raise DataError(f"{train}: no class folders; expected {train}/<class name>/*.png|jpg")
    return classes


def read_image_folder(root: Path) -> FolderTask:
    """Items of an image-folder task (see the module docstring)."""
    root = Path(root)
    classes = image_folder_classes(root)
    index = {name: i for i, name in enumerate(classes)}
    items: dict[str, list[Item]] = {}
    for split in FOLDER_SPLITS:
        split_dir = root / split
        if not split_dir.is_dir():
            raise DataError(
                f"split folder {split_dir} is missing; expected "
                f"{split_dir}/<class name>/*.png|jpg|jpeg with the classes of {root / 'train'}"
            )
        items[split] = []
        for class_dir in _class_dirs(split_dir):
            if class_dir.name not in index:
                raise DataError(
                    f"{class_dir}: class {class_dir.name!r} is not a class of {root / 'train'}; "
                    f"expected one of {', '.join(classes)}"
                )
            label = index[class_dir.name]
            items[split] += [(p, label, str(p)) for p in _images(class_dir)]
        if not items[split]:
            raise DataError(
                f"split folder {split_dir} has no images; expected <class name>/*.png|jpg|jpeg"
            )
    items["trainval"] = items["train"] + items["val"]
    return FolderTask(items, len(classes), classes, [])


def _read_table(path: Path) -> tuple[dict[str, list], object, str]:
    """The manifest's columns as lists, the label column's arrow type and the row prefix."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    try:
        table = pacsv.read_csv(path) if path.suffix.lower() == ".csv" else pq.read_table(path)
    except (OSError, pa.ArrowInvalid) as err:
        raise DataError(f"{path}: cannot be read as a manifest ({err})") from None
    missing = [c for c in MANIFEST_COLUMNS if c not in table.column_names]
    if missing:
        raise DataError(
            f"{path}: missing column(s) {', '.join(missing)}; expected columns "
            f"{','.join(MANIFEST_COLUMNS)} (found: {','.join(table.column_names) or 'none'})"
        )
    columns = {c: table.column(c).to_pylist() for c in MANIFEST_COLUMNS}
    return columns, table.schema.field("label").type, path.suffix.lower()


def read_manifest(path: Path) -> FolderTask:
    """Items of a manifest task (see the module docstring)."""
    import pyarrow as pa

    path = Path(path)
    columns, label_type, suffix = _read_table(path)

    def where(i: int) -> str:  # a CSV line (header is line 1) or a Parquet row
        return f"{path}:{i + 2}" if suffix == ".csv" else f"{path}: row {i + 1}"

    if pa.types.is_integer(label_type):
        named = False
    elif pa.types.is_string(label_type) or pa.types.is_large_string(label_type):
        named = True
    else:
        raise DataError(f"{path}: column label has type {label_type}; expected int or string")
    rows: dict[str, list[tuple[int, str, object]]] = {s: [] for s in FOLDER_SPLITS}
    for i, (rel, label, split) in enumerate(zip(*columns.values(), strict=True)):
        if split not in rows:
            raise DataError(f"{where(i)}: split {split!r} is not one of train, val, test")
        if not rel or label is None:
            raise DataError(f"{where(i)}: empty path or label; expected path,label,split values")
        if not named and label < 0:
            raise DataError(f"{where(i)}: label {label} is negative; expected >= 0")
        rows[split].append((i, rel, label))
    for split, r in rows.items():
        if not r:
            raise DataError(f"{path}: split {split!r} has no rows; expected train, val and test")
    classes = tuple(sorted({label for _, _, label in rows["train"]})) if named else None
    index = {name: i for i, name in enumerate(classes or ())}
    items: dict[str, list[Item]] = {}
    for split, r in rows.items():
        items[split] = []
        for i, rel, label in r:
            if named and label not in index:
                raise DataError(
                    f"{where(i)}: class {label!r} does not occur in the train split; "
                    f"expected one of {', '.join(classes or ())}"
                )
            items[split].append(
                (path.parent / rel, index[label] if named else int(label), where(i))
            )
    items["trainval"] = items["train"] + items["val"]
    num_classes = len(index) if named else 1 + max(y for s in items.values() for _, y, _ in s)
    return FolderTask(items, num_classes, classes, [path])


def read_folder_task(path: Path) -> FolderTask:
    """An image folder or a ``.csv`` / ``.parquet`` manifest, whichever ``path`` is."""
    path = Path(path)
    if path.is_file() and path.suffix.lower() in (".csv", ".parquet"):
        return read_manifest(path)
    if path.is_dir() and (path / "train800.txt").exists():
        return read_vtab_folder(path)
    if path.is_dir():
        return read_image_folder(path)
    raise DataError(
        f"folder task {path} does not exist or is neither a folder nor a .csv/.parquet file; "
        "expected <path>/{train,val,test}/<class name>/*.png or a path,label,split manifest"
    )


def read_vtab_folder(path: Path) -> FolderTask:
    """A user task already in the VTAB-1k layout (e.g. written by ``petl-sweep data synth``):
    the four split files; the class count is the largest label + 1."""
    from tuner.data.cache import vtab_items
    from tuner.data.vtab import split_path

    names = {"train": "train800", "val": "val200", "trainval": "train800val200", "test": "test"}
    items = {ours: vtab_items(path, theirs) for ours, theirs in names.items()}
    labels = {label for split in items.values() for _, label, _ in split}
    files = [split_path(path, theirs) for theirs in names.values()]
    return FolderTask(items, max(labels) + 1, None, files)


def folder_classes(path: Path) -> tuple[int, tuple[str, ...] | None]:
    """``(num_classes, class names)`` of a user task, listing as little as it can."""
    path = Path(path)
    if path.is_dir() and not (path / "train800.txt").exists():
        classes = image_folder_classes(path)
        return len(classes), classes
    task = read_folder_task(path)
    return task.num_classes, task.classes
