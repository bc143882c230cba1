"""Decode-per-trial vs the decode-once cache, measured side by side in one run.

The cache exists because a sweep loads the same split in hundreds of trials. This writes a
VTAB-layout task of ``--images`` PNGs at ``--size`` px (synthetic "objects" renders, upscaled
so they compress like photos rather than noise), then times ``--trials`` trials both ways:

* decode: every trial opens, decodes and resizes every image (what a naive loader does);
* cache: every trial calls ``load_arrays``; the first decodes and writes the ``.npy``, the
  rest memory-map it.

Both touch every pixel once per trial (a checksum), so the cache is not credited for pages
it never read. Usage: ``python bench/cache_bench.py [--images 1000 --trials 5 --size 224]``.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from tuner.data.cache import _decode_image, load_arrays, vtab_items
from tuner.data.synth import SYNTH_TASKS
from tuner.data.vtab import write_split


def write_task(folder: Path, n: int, size: int) -> None:
    """``n`` PNGs at ``size`` px in the VTAB-1k layout (train800 split only)."""
    images, labels = SYNTH_TASKS["objects"].generate(n, seed=0, split="train")
    (folder / "images").mkdir(parents=True)
    items = []
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        rel = f"images/{i:05d}.png"
        Image.fromarray(image).resize((size, size), Image.Resampling.BICUBIC).save(folder / rel)
        items.append((rel, int(label)))
    write_split(folder, "train800", items)


def touch(x: np.ndarray) -> int:
    return int(x.sum(dtype=np.uint64))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--size", type=int, default=224, help="stored and decoded size")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="cache_bench-"))
    try:
        folder, cache = work / "task", work / "cache"
        t0 = time.perf_counter()
        write_task(folder, args.images, args.size)
        print(f"wrote {args.images} PNGs at {args.size}px in {time.perf_counter() - t0:.1f} s")
        items = vtab_items(folder, "train800")

        decode = []
        for _ in range(args.trials):
            t0 = time.perf_counter()
            x = np.stack([_decode_image(p, args.size) for p, _, _ in items])
            touch(x)
            decode.append(time.perf_counter() - t0)

        cached = []
        for _ in range(args.trials):
            t0 = time.perf_counter()
            touch(load_arrays(items, args.size, cache, "bench").x)
            cached.append(time.perf_counter() - t0)

        later = cached[1:] or cached
        print(f"{'trials':>8} {'decode every trial':>20} {'cache (decode once)':>20}")
        for i, (d, c) in enumerate(zip(decode, cached, strict=True), 1):
            print(f"{i:>8} {d:>19.3f}s {c:>19.3f}s")
        print(f"{'total':>8} {sum(decode):>19.3f}s {sum(cached):>19.3f}s")
        print(f"ratio over {args.trials} trials (decode / cache): {sum(decode) / sum(cached):.1f}x")
        print(f"ratio per later trial (decode / memmap): {np.mean(decode) / np.mean(later):.1f}x")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
