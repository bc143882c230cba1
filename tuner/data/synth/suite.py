"""An offline, seed-deterministic task suite that echoes VTAB-1k's three groups.

The real VTAB-1k needs downloads we cannot make, yet every sweep, test and quickstart needs
downstream tasks whose *kind* matters: PETL methods are compared per group because Natural,
Specialized and Structured tasks reward different things (semantics, texture statistics,
geometry). So each task here is drawn to need what its VTAB counterpart needs, not merely
to be hard: object shape over cluttered backgrounds, scene layout, texture class, local nuclei
density, object count, sprite location and orientation, and apparent distance.

Nuisances (colour, size, position, noise, background) are randomised so that no single
pixel statistic gives the label away; a linear model on raw pixels stays well short of 100%.

Images are drawn at ``_SS`` times 32x32 with PIL and box-filtered down (anti-aliasing), and
every random draw comes from ``numpy.random.default_rng`` seeded by a SHA-256 of
``(seed, task, split)``, never Python's salted ``hash()``: the same call gives the same bytes
on any machine. :func:`write_synth_suite` stores the tasks in the VTAB-1k layout so they go
through exactly the loader the real benchmark uses, with shifted copies of each test set
(``shift_<name>.txt``, see :mod:`tuner.data.synth.shifted`) for a sweep's ``shifts``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from tuner.data.synth.draw import _OBJECTS, SIZE
from tuner.data.synth.natural import (
    _SCENES,
    _TEXTURES,
    _render_cells,
    _render_objects,
    _render_scenes,
    _render_textures,
)
from tuner.data.synth.shifted import SHIFT_SIZE, SHIFTS, shift_file
from tuner.data.synth.structured import (
    _render_count,
    _render_distance,
    _render_dsprites_loc,
    _render_dsprites_ori,
)
from tuner.data.vtab import write_split
from tuner.util import unknown_message

#: Bump when any generator changes, so suites written by older code are regenerated.
SYNTH_VERSION = 1
SPLIT_SIZES = {"train800": 800, "val200": 200, "test": 1000}
SUCCESS_MARKER = "_SUCCESS"
Renderer = Callable[[np.random.Generator, int], np.ndarray]


def split_rng(seed: int, task: str, split: str) -> np.random.Generator:
    """A generator that depends only on ``(seed, task, split)``, stable across processes."""
    digest = hashlib.sha256(f"petl-sweep/synth/v{SYNTH_VERSION}/{task}/{split}/{seed}".encode())
    return np.random.default_rng(int.from_bytes(digest.digest()[:16], "little"))


@dataclass(frozen=True)
class SynthTask:
    """One procedural classification task: what it is, and how to draw a sample of a class."""

    name: str
    group: str  # "natural" | "specialized" | "structured"
    num_classes: int
    description: str
    render: Renderer = field(repr=False, compare=False)

    def generate(self, n: int, seed: int, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
        """``n`` images ``(n, 32, 32, 3) uint8`` and labels ``(n,) int64`` for ``split``.

        Labels are balanced (every class ``n // K`` or one more times) and shuffled, so any
        ``n >= K`` covers every class; ``split`` picks an independent stream, so a task's
        train, val and test images never coincide.
        """
        if n < 0:
            raise ValueError(f"n must be non-negative, got {n}")
        rng = split_rng(seed, self.name, split)
        labels = rng.permutation(np.arange(n, dtype=np.int64) % self.num_classes)
        images = np.empty((n, SIZE, SIZE, 3), dtype=np.uint8)
        for i, label in enumerate(labels):
            images[i] = self.render(rng, int(label))
        return images, labels


SYNTH_TASKS: dict[str, SynthTask] = {
    t.name: t
    for t in (
        SynthTask(
            "objects",
            "natural",
            10,
            "shape category (" + ", ".join(_OBJECTS) + ") over cluttered backgrounds",
            _render_objects,
        ),
        SynthTask(
            "scenes",
            "natural",
            6,
            "scene layout (" + ", ".join(_SCENES) + ") with shuffled colours",
            _render_scenes,
        ),
        SynthTask(
            "textures",
            "specialized",
            8,
            "texture class (" + ", ".join(_TEXTURES) + ") under random colour/phase",
            _render_textures,
        ),
        SynthTask(
            "cells",
            "specialized",
            2,
            "patch_camelyon-like: dense cluster of large nuclei vs sparse nuclei",
            _render_cells,
        ),
        SynthTask(
            "count", "structured", 8, "clevr_count-like: number of objects (1-8)", _render_count
        ),
        SynthTask(
            "distance",
            "structured",
            6,
            "clevr_dist-like: depth bin of the nearest object",
            _render_distance,
        ),
        SynthTask(
            "dsprites_loc", "structured", 16, "sprite position on a 4x4 grid", _render_dsprites_loc
        ),
        SynthTask(
            "dsprites_ori",
            "structured",
            16,
            "chevron orientation in 16 bins of 22.5 degrees",
            _render_dsprites_ori,
        ),
    )
}


# -- the suite on disk ------------------------------------------------------------------------


def _is_complete(task_dir: Path, seed: int, counts: dict[str, int]) -> bool:
    try:
        marker = json.loads((task_dir / SUCCESS_MARKER).read_text())
    except (OSError, ValueError):
        return False
    want = {"version": SYNTH_VERSION, "seed": seed, "counts": counts}
    return all(marker.get(k) == v for k, v in want.items())


def _save(dest: Path, stream: str, images: np.ndarray, labels: np.ndarray) -> list[tuple[str, int]]:
    """PNGs ``images/<stream>_<i>.png`` under ``dest``; returns their (path, label) lines."""
    lines = []
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        rel = f"images/{stream}_{i:05d}.png"
        Image.fromarray(image).save(dest / rel, compress_level=1)
        lines.append((rel, int(label)))
    return lines


def _write_shifts(
    task: SynthTask, dest: Path, seed: int, test: tuple[np.ndarray, np.ndarray]
) -> dict[str, int]:
    """Every shift set of the task (``shifted.SHIFTS``) from its first ``SHIFT_SIZE`` test
    images, as list files."""
    counts = {}
    for name, corrupt in SHIFTS.items():
        stream = f"shift_{name}"
        images = corrupt(test[0][:SHIFT_SIZE], split_rng(seed, task.name, stream))
        lines = _save(dest, stream, images, test[1][:SHIFT_SIZE])
        (dest / shift_file(name)).write_text("".join(f"{p} {y}\n" for p, y in lines))
        counts[stream] = len(lines)
    return counts


def _write_task(task: SynthTask, dest: Path, seed: int, test_size: int) -> None:
    """Write one task into ``dest`` (a fresh folder); the marker goes last."""
    (dest / "images").mkdir(parents=True)
    streams = {"train800": "train", "val200": "val", "test": "test"}
    sizes = {**SPLIT_SIZES, "test": test_size}
    lines: dict[str, list[tuple[str, int]]] = {}
    for split, stream in streams.items():
        images, labels = task.generate(sizes[split], seed, stream)
        lines[split] = _save(dest, stream, images, labels)
    shifts = _write_shifts(task, dest, seed, (images, labels))  # the last stream: test
    lines["train800val200"] = lines["train800"] + lines["val200"]
    for split, items in lines.items():
        write_split(dest, split, items)
    counts = {**{split: len(items) for split, items in lines.items()}, **shifts}
    marker = {"version": SYNTH_VERSION, "seed": seed, "task": task.name, "counts": counts}
    (dest / SUCCESS_MARKER).write_text(json.dumps(marker, indent=1))


def write_synth_suite(
    out_dir: Path,
    seed: int = 0,
    tasks: Sequence[str] | None = None,
    test_size: int = SPLIT_SIZES["test"],
    overwrite: bool = False,
) -> list[Path]:
    """Write tasks to ``out_dir/<task>/`` in the VTAB-1k layout; returns their folders.

    A folder whose ``_SUCCESS`` marker matches (seed, sizes, generator version) is kept as is,
    so repeated calls are cheap. Anything else (missing, half-written, other seed) is built in
    a sibling temp folder and swapped in with renames, so concurrent trials that race to
    create a task never see, or leave, a half-written folder.
    """
    names = list(SYNTH_TASKS) if tasks is None else list(tasks)
    unknown = [n for n in names if n not in SYNTH_TASKS]
    if unknown:
        raise KeyError(unknown_message("synth task(s)", unknown, list(SYNTH_TASKS)))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    counts = {
        "train800": SPLIT_SIZES["train800"],
        "val200": SPLIT_SIZES["val200"],
        "train800val200": SPLIT_SIZES["train800"] + SPLIT_SIZES["val200"],
        "test": test_size,
        **{f"shift_{name}": min(test_size, SHIFT_SIZE) for name in SHIFTS},
    }
    written = []
    for name in names:
        final = out_dir / name
        written.append(final)
        if not overwrite and _is_complete(final, seed, counts):
            continue
        tmp = out_dir / f".{name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            _write_task(SYNTH_TASKS[name], tmp, seed, test_size)
            if not overwrite and _is_complete(final, seed, counts):
                continue  # another process finished it meanwhile
            if final.exists():
                trash = out_dir / f".{name}.old-{uuid.uuid4().hex[:8]}"
                final.rename(trash)
                shutil.rmtree(trash, ignore_errors=True)
            tmp.rename(final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return written
