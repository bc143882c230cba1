"""The FGVC benchmark as VPT prepares it: one folder per data set, three JSON split files.

``<data_root>/fgvc/<name>/{train,val,test}.json``, each a JSON object mapping an image path
to an integer label. Paths are relative to the data set's image folder, which is where VPT's
``JSONDataset.get_imagedir`` puts it (``images/`` for CUB and NABirds, ``Images/`` for
Stanford Dogs, the data set folder itself for Oxford Flowers and Stanford Cars), so folders
prepared for VPT work unchanged. Labels are remapped to contiguous ids by sorted unique label,
as VPT does; the mapping is taken over all three splits, so it agrees with VPT's per-split
mapping whenever every split holds every class and stays consistent when one does not.

Our splits: ``train`` (tuning), ``val``, ``trainval`` = train + val (final retrains), ``test``.
"""

from __future__ import annotations

import json
from pathlib import Path

from tuner.data.cache import Item
from tuner.data.vtab import DataError

#: name -> (classes, image folder relative to the data set folder, as in VPT)
FGVC_DATASETS: dict[str, tuple[int, str]] = {
    "cub": (200, "images"),
    "nabirds": (555, "images"),
    "oxford_flowers": (102, ""),
    "stanford_dogs": (120, "Images"),
    "stanford_cars": (196, ""),
}
FGVC_SPLITS = ("train", "val", "test")


def image_dir(folder: Path, name: str) -> Path:
    """Where the JSON paths of data set ``name`` are rooted."""
    sub = FGVC_DATASETS[name][1] if name in FGVC_DATASETS else ""
    return Path(folder) / sub if sub else Path(folder)


def read_annotations(path: Path, problems: list[DataError] | None = None) -> dict[str, int]:
    """One split file as ``{relative image path: raw label}``, validated.

    Each bad entry is a DataError naming the file and key; with ``problems`` given they are
    collected there (and the entry skipped) instead of raised, so a check reports them all.
    """
    path = Path(path)

    def fail(message: str) -> None:
        err = DataError(message)
        if problems is None:
            raise err
        problems.append(err)

    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        fail(f"split file {path} is missing; expected a JSON object image path -> label")
        return {}
    except (ValueError, UnicodeDecodeError) as err:
        fail(f"{path}: not valid JSON ({err}); expected an object image path -> integer label")
        return {}
    if not isinstance(data, dict):
        fail(
            f"{path}: expected a JSON object image path -> integer label, "
            f"got a {type(data).__name__}"
        )
        return {}
    out: dict[str, int] = {}
    for rel, label in data.items():
        if isinstance(label, bool) or not isinstance(label, int):
            fail(f"{path}: label {label!r} of {rel!r} is not an integer")
        elif not rel:
            fail(f"{path}: empty image path (label {label})")
        else:
            out[rel] = label
    if not data:
        fail(f"{path}: split is empty; expected at least one image path -> label entry")
    return out


def read_fgvc(
    folder: Path, name: str, problems: list[DataError] | None = None
) -> dict[str, list[Item]]:
    """Items of ``train``, ``val``, ``trainval`` and ``test`` with contiguous labels."""
    folder = Path(folder)
    if not folder.is_dir():
        err = DataError(
            f"task folder {folder} does not exist; expected {', '.join(FGVC_SPLITS)} .json files"
        )
        if problems is None:
            raise err
        problems.append(err)
        return {s: [] for s in (*FGVC_SPLITS, "trainval")}
    raw = {s: read_annotations(folder / f"{s}.json", problems) for s in FGVC_SPLITS}
    ids = {
        v: i for i, v in enumerate(sorted({v for split in raw.values() for v in split.values()}))
    }
    root = image_dir(folder, name)
    items = {
        split: [
            (root / rel, ids[label], f"{folder / f'{split}.json'}: {rel!r}")
            for rel, label in a.items()
        ]
        for split, a in raw.items()
    }
    items["trainval"] = items["train"] + items["val"]
    return items


def fgvc_files(folder: Path) -> list[Path]:
    """The split files that define the task (for a data set digest)."""
    return [Path(folder) / f"{s}.json" for s in FGVC_SPLITS]
