"""Decode a split once into ``.npy`` files; every later trial memory-maps them.

A sweep runs hundreds of trials over the same few splits. Decoding PNG/JPEG and resizing in
every trial would cost more than training the tiny models, and holding a private copy per
trial would multiply memory by the number of concurrent trials. So the first reader decodes
to uint8 ``(N, 3, H, W)`` and writes it next to the labels; everyone else ``np.load``s with
``mmap_mode`` and shares the page cache.

The cache key hashes what the arrays depend on (split file bytes, each image's path, size and
mtime, the output size and this module's format version), so editing an image or a split
file gets a fresh decode instead of silently stale tensors. Files are written to a temp name
and renamed into place, so a concurrent trial sees either nothing or a complete file.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

from tuner.data.vtab import DataError, read_split_lines, split_path

#: Bump when the decoded representation changes (resize filter, layout, dtype).
FORMAT_VERSION = 1


def _decode_image(path: Path, image_size: int) -> np.ndarray:
    """One image as ``(3, image_size, image_size) uint8`` RGB (bilinear resize if needed)."""
    with Image.open(path) as im:
        rgb = im.convert("RGB")
    if rgb.size != (image_size, image_size):
        rgb = rgb.resize((image_size, image_size), Image.BILINEAR)
    return np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1)


def cache_key(task_dir: Path, split: str, image_size: int, num_classes: int | None = None) -> str:
    """SHA-256 over everything the decoded arrays depend on (see the module docstring)."""
    task_dir = Path(task_dir)
    items = read_split_lines(task_dir, split, num_classes)
    sfile = split_path(task_dir, split)
    h = hashlib.sha256(f"petl-sweep-cache/v{FORMAT_VERSION}/{image_size}\n".encode())
    h.update(sfile.read_bytes())
    for lineno, rel, _ in items:
        try:
            st = (task_dir / rel).stat()
        except OSError as err:
            raise DataError(
                f"{sfile}:{lineno}: image {task_dir / rel} cannot be read ({err.strerror})"
            ) from None
        h.update(f"\n{rel}\0{st.st_size}\0{st.st_mtime_ns}".encode())
    return h.hexdigest()


def _temp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")


def _save_labels(path: Path, labels: np.ndarray) -> None:
    tmp = _temp_name(path)
    try:
        with open(tmp, "wb") as f:
            np.save(f, labels)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _decode_split(
    task_dir: Path, items: list[tuple[int, str, int]], sfile: Path, image_size: int, out: Path
) -> None:
    """Decode straight into a memory-mapped temp ``.npy`` (a full-size VTAB test split does
    not have to fit in RAM), then rename it to ``out``."""
    tmp = _temp_name(out)
    try:
        shape = (len(items), 3, image_size, image_size)
        images = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
        for i, (lineno, rel, _) in enumerate(items):
            try:
                images[i] = _decode_image(task_dir / rel, image_size)
            except (OSError, ValueError, SyntaxError) as err:
                raise DataError(
                    f"{sfile}:{lineno}: image {task_dir / rel} cannot be decoded ({err})"
                ) from None
        images.flush()
        del images
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)


def _load_cached(x_path: Path, y_path: Path, mmap_mode: str) -> tuple[np.ndarray, np.ndarray]:
    x = np.load(x_path, mmap_mode=mmap_mode)  # type: ignore[arg-type]
    y = np.load(y_path, mmap_mode=mmap_mode)  # type: ignore[arg-type]
    if x.ndim != 4 or x.dtype != np.uint8 or y.dtype != np.int64 or y.shape != x.shape[:1]:
        raise ValueError(f"cache files {x_path.name} / {y_path.name} do not match")
    return x, y


def load_split_arrays(
    task_dir: Path,
    split: str,
    image_size: int,
    cache_dir: Path,
    num_classes: int | None = None,
    mmap_mode: Literal["r", "c"] = "r",
) -> tuple[np.ndarray, np.ndarray]:
    """Images ``(N, 3, S, S) uint8`` and labels ``(N,) int64`` of a split, memory-mapped.

    ``mmap_mode="r"`` maps read-only; ``"c"`` (copy-on-write) gives writable arrays whose
    writes stay private to the process, for consumers such as ``torch.from_numpy`` that
    want writable memory. Bad split lines and missing or undecodable images raise DataError.
    """
    task_dir, cache_dir = Path(task_dir), Path(cache_dir)
    key = cache_key(task_dir, split, image_size, num_classes)
    stem = f"{task_dir.name}-{split}-{image_size}px-{key[:24]}"
    x_path, y_path = cache_dir / f"{stem}.x.npy", cache_dir / f"{stem}.y.npy"
    if x_path.exists() and y_path.exists():
        try:
            return _load_cached(x_path, y_path, mmap_mode)
        except (OSError, ValueError):
            pass  # a damaged cache file is rebuilt below, never trusted
    items = read_split_lines(task_dir, split, num_classes)
    cache_dir.mkdir(parents=True, exist_ok=True)
    # Labels first, images last: readers wait for both, so the images file appearing means
    # its labels are already in place.
    _save_labels(y_path, np.array([label for _, _, label in items], dtype=np.int64))
    _decode_split(task_dir, items, split_path(task_dir, split), image_size, x_path)
    return _load_cached(x_path, y_path, mmap_mode)
