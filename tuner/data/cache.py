"""Decode a split once into ``.npy`` files; every later trial memory-maps them.

A sweep runs hundreds of trials over the same few splits. Decoding PNG/JPEG and resizing in
every trial would cost more than training the tiny models, and holding a private copy per
trial would multiply memory by the number of concurrent trials. So the first reader decodes
to uint8 ``(N, 3, H, W)`` and writes it next to the labels; everyone else ``np.load``s with
``mmap_mode`` and shares the page cache.

Every reader (VTAB split files, FGVC JSON, image folders and manifests, shift sets) turns its
layout into a list of ``(image path, label, where)`` items and hands it to
:func:`load_arrays`, so there is one cache keyed by content and preprocessing. The key hashes
what the arrays depend on (each image's absolute path, size and mtime, its label, the output
size, the resize filter and this module's format version), so editing an image or a split
file, or changing the interpolation, gets a fresh decode instead of silently stale tensors.
Splits that share images (train800val200 = train800 + val200, many-shot subsets of train)
copy those rows from already-cached arrays (``reuse``) instead of decoding them again.
Files are written to a temp name and renamed into place, so a concurrent trial sees either
nothing or a complete file.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

from tuner.data.vtab import DataError, read_split_lines, split_path
from tuner.util import atomic_write

#: Bump when the decoded representation or the key layout changes.
FORMAT_VERSION = 2

#: ``(image path, label, where)``; ``where`` names the file (and line) an error points at.
Item = tuple[Path, int, str]

#: Resize filters by timm's ``pretrained_cfg["interpolation"]`` name.
INTERPOLATIONS: dict[str, Image.Resampling] = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "nearest": Image.Resampling.NEAREST,
    "lanczos": Image.Resampling.LANCZOS,
}


@dataclass(frozen=True)
class Arrays:
    """Cached images and labels, plus what identifies each row's source image (for reuse)."""

    x: np.ndarray
    y: np.ndarray
    fingerprints: tuple[str, ...]
    interpolation: str


def _resample(interpolation: str) -> Image.Resampling:
    try:
        return INTERPOLATIONS[interpolation]
    except KeyError:
        valid = ", ".join(INTERPOLATIONS)
        raise DataError(
            f"unknown interpolation {interpolation!r}; expected one of {valid}"
        ) from None


def _decode_image(path: Path, image_size: int, interpolation: str = "bilinear") -> np.ndarray:
    """One image as ``(3, image_size, image_size) uint8`` RGB (resized if needed)."""
    with Image.open(path) as im:
        rgb = im.convert("RGB")
    if rgb.size != (image_size, image_size):
        rgb = rgb.resize((image_size, image_size), _resample(interpolation))
    return np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1)


def fingerprints(items: Sequence[Item]) -> tuple[str, ...]:
    """Absolute path, size and mtime of every item's image (a missing one is a DataError)."""
    out = []
    for path, _, where in items:
        try:
            st = os.stat(path)
        except OSError as err:
            raise DataError(f"{where}: image {path} cannot be read ({err.strerror})") from None
        out.append(f"{os.path.abspath(path)}\0{st.st_size}\0{st.st_mtime_ns}")
    return tuple(out)


def items_key(
    items: Sequence[Item], fps: Sequence[str], image_size: int, interpolation: str
) -> str:
    """SHA-256 over everything the decoded arrays depend on (see the module docstring)."""
    _resample(interpolation)
    h = hashlib.sha256(f"petl-sweep-cache/v{FORMAT_VERSION}/{image_size}/{interpolation}".encode())
    for (_, label, _), fp in zip(items, fps, strict=True):
        h.update(f"\n{fp}\0{int(label)}".encode())
    return h.hexdigest()


def vtab_items(task_dir: Path, split: str, num_classes: int | None = None) -> list[Item]:
    """A VTAB-layout split file as cache items (``where`` = ``file:line``)."""
    task_dir = Path(task_dir)
    sfile = split_path(task_dir, split)
    return [
        (task_dir / rel, label, f"{sfile}:{lineno}")
        for lineno, rel, label in read_split_lines(task_dir, split, num_classes)
    ]


def cache_key(
    task_dir: Path,
    split: str,
    image_size: int,
    num_classes: int | None = None,
    interpolation: str = "bilinear",
) -> str:
    """The cache key of a VTAB-layout split (see :func:`items_key`)."""
    items = vtab_items(task_dir, split, num_classes)
    return items_key(items, fingerprints(items), image_size, interpolation)


def _save_labels(path: Path, labels: np.ndarray) -> None:
    with atomic_write(path) as tmp, open(tmp, "wb") as f:
        np.save(f, labels)


def _decode_split(
    items: Sequence[Item],
    fps: Sequence[str],
    image_size: int,
    interpolation: str,
    reuse: dict[str, tuple[np.ndarray, int]],
    out: Path,
) -> None:
    """Decode straight into a memory-mapped temp ``.npy`` (a full-size VTAB test split does
    not have to fit in RAM), then rename it to ``out``. Rows whose image is in ``reuse`` (or
    earlier in this list) are copied, not decoded."""
    with atomic_write(out) as tmp:
        shape = (len(items), 3, image_size, image_size)
        images = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
        seen: dict[str, int] = {}
        for i, ((path, _, where), fp) in enumerate(zip(items, fps, strict=True)):
            if fp in seen:
                images[i] = images[seen[fp]]
            elif fp in reuse:
                src, row = reuse[fp]
                images[i] = src[row]
            else:
                try:
                    images[i] = _decode_image(path, image_size, interpolation)
                except (OSError, ValueError, SyntaxError) as err:
                    raise DataError(f"{where}: image {path} cannot be decoded ({err})") from None
            seen.setdefault(fp, i)
        images.flush()
        del images


def _load_cached(x_path: Path, y_path: Path, mmap_mode: str) -> tuple[np.ndarray, np.ndarray]:
    x = np.load(x_path, mmap_mode=mmap_mode)  # type: ignore[arg-type]
    y = np.load(y_path, mmap_mode=mmap_mode)  # type: ignore[arg-type]
    if x.ndim != 4 or x.dtype != np.uint8 or y.dtype != np.int64 or y.shape != x.shape[:1]:
        raise ValueError(f"cache files {x_path.name} / {y_path.name} do not match")
    return x, y


def load_arrays(
    items: Sequence[Item],
    image_size: int,
    cache_dir: Path,
    name: str = "split",
    interpolation: str = "bilinear",
    mmap_mode: Literal["r", "c"] = "r",
    reuse: Sequence[Arrays] = (),
) -> Arrays:
    """Images ``(N, 3, S, S) uint8`` and labels ``(N,) int64`` of ``items``, memory-mapped.

    The first call decodes (or copies rows of ``reuse`` arrays decoded with the same size and
    filter) and writes ``.npy`` files under ``cache_dir``; later calls only map them.
    ``mmap_mode="r"`` maps read-only; ``"c"`` (copy-on-write) gives writable arrays whose
    writes stay private to the process, for consumers such as ``torch.from_numpy``. Missing
    or undecodable images raise DataError naming the item's ``where``. ``name`` only labels
    the cache files for humans.
    """
    cache_dir = Path(cache_dir)
    if not items:
        raise DataError(f"{name}: no images to load (empty split)")
    fps = fingerprints(items)
    key = items_key(items, fps, image_size, interpolation)
    stem = f"{re.sub(r'[^A-Za-z0-9_.@#-]+', '_', name)}-{image_size}px-{interpolation}-{key[:24]}"
    x_path, y_path = cache_dir / f"{stem}.x.npy", cache_dir / f"{stem}.y.npy"
    if x_path.exists() and y_path.exists():
        try:
            return Arrays(*_load_cached(x_path, y_path, mmap_mode), fps, interpolation)
        except (OSError, ValueError):
            pass  # a damaged cache file is rebuilt below, never trusted
    cache_dir.mkdir(parents=True, exist_ok=True)
    rows = {
        fp: (a.x, row)
        for a in reuse
        if a.interpolation == interpolation and a.x.shape[-1] == image_size
        for row, fp in enumerate(a.fingerprints)
    }
    # Labels first, images last: readers wait for both, so the images file appearing means
    # its labels are already in place.
    _save_labels(y_path, np.array([label for _, label, _ in items], dtype=np.int64))
    _decode_split(items, fps, image_size, interpolation, rows, x_path)
    return Arrays(*_load_cached(x_path, y_path, mmap_mode), fps, interpolation)


def load_split_arrays(
    task_dir: Path,
    split: str,
    image_size: int,
    cache_dir: Path,
    num_classes: int | None = None,
    mmap_mode: Literal["r", "c"] = "r",
    interpolation: str = "bilinear",
) -> tuple[np.ndarray, np.ndarray]:
    """Images and labels of a VTAB-layout split file via :func:`load_arrays`.

    Bad split lines and missing or undecodable images raise DataError naming file and line.
    """
    task_dir = Path(task_dir)
    items = vtab_items(task_dir, split, num_classes)
    arrays = load_arrays(
        items, image_size, cache_dir, f"{task_dir.name}-{split}", interpolation, mmap_mode
    )
    return arrays.x, arrays.y
