"""Tiny on-the-fly data folders in each community layout, for the data tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image


def png(path: Path, seed: int = 0, size: int = 16) -> Path:
    """A seeded noise RGB PNG at ``path`` (parents created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)
    return path


def vtab_task(
    folder: Path,
    num_classes: int = 10,
    sizes: tuple[int, int, int] = (20, 10, 10),
    size: int = 16,
) -> Path:
    """A VTAB-1k task folder: train800/val200/train800val200/test.txt over images/."""
    lines: dict[str, list[str]] = {}
    seed = 0
    for split, n in zip(("train800", "val200", "test"), sizes, strict=True):
        lines[split] = []
        for i in range(n):
            rel = f"images/{split}_{i:03d}.png"
            png(folder / rel, seed := seed + 1, size)
            lines[split].append(f"{rel} {i % num_classes}")
    lines["train800val200"] = lines["train800"] + lines["val200"]
    for split, rows in lines.items():
        (folder / f"{split}.txt").write_text("\n".join(rows) + "\n")
    return folder


def fgvc_task(
    folder: Path,
    image_dir: str = "images",
    num_classes: int = 3,
    sizes: tuple[int, int, int] = (9, 3, 6),
    first_label: int = 1,
) -> Path:
    """A VPT-style FGVC folder: {train,val,test}.json, paths relative to ``image_dir``."""
    seed = 100
    for split, n in zip(("train", "val", "test"), sizes, strict=True):
        anno = {}
        for i in range(n):
            label = first_label + i % num_classes
            rel = f"{label:03d}.class/{split}_{i}.jpg"
            png(folder / image_dir / rel, seed := seed + 1)
            anno[rel] = label
        (folder / f"{split}.json").write_text(json.dumps(anno))
    return folder


def image_folder(
    root: Path,
    classes: tuple[str, ...] = ("cat", "dog"),
    sizes: tuple[int, int, int] = (6, 2, 2),
    size: int = 16,
) -> Path:
    """``root/{train,val,test}/<class>/*.png`` with ``sizes`` images per class."""
    seed = 200
    for split, n in zip(("train", "val", "test"), sizes, strict=True):
        for c in classes:
            for i in range(n):
                png(root / split / c / f"{i}.png", seed := seed + 1, size)
    return root
