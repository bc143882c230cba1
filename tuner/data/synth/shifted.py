"""Shifted variants of every synthetic task: its test images under a distribution shift.

Study 000 measures robustness as accuracy on shifted test sets of the same classes (and
WiSE-FT trades target for shift accuracy). The suite ships such sets so a sweep's ``shifts``
and the leaderboard's shift columns work offline: each is the task's test images with one
corruption applied, so the gap to test accuracy is the shift's effect alone.

* ``noise``: i.i.d. Gaussian pixel noise (σ = 0.2 of the range), a low-level shift that
  matters most to texture and density tasks (Specialized);
* ``colour``: each image's channels permuted (never the identity) and its contrast
  halved, a shift of colour statistics the Natural tasks' shapes should survive.

Both are drawn from ``split_rng(seed, task, "shift_<name>")``, so the same seed gives the
same bytes anywhere. Each holds the first ``SHIFT_SIZE`` test images, written beside the
splits as a ``shift_<name>.txt`` list file (``<image path> <label>``), the format a sweep's
``shifts:`` accepts.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Corruption = Callable[[np.ndarray, np.random.Generator], np.ndarray]
#: Test images per shift set (the first ones of the test split): enough to read a shift's
#: effect, half the PNGs of a full copy when every synthetic task is written
SHIFT_SIZE = 500
#: Noise standard deviation, as a fraction of the 0-255 range
NOISE_STD = 0.2
#: Contrast kept by the colour shift (1 = unchanged)
CONTRAST = 0.5
#: The five channel orders that differ from RGB
_PERMUTATIONS = np.array([[0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0]])


def noise(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Gaussian pixel noise on ``(n, H, W, 3) uint8`` images."""
    noisy = images.astype(np.float32) + rng.normal(0.0, 255 * NOISE_STD, images.shape)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def colour(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Per image: a non-identity channel permutation, then contrast scaled by ``CONTRAST``
    around the image's mean."""
    orders = _PERMUTATIONS[rng.integers(len(_PERMUTATIONS), size=len(images))]
    permuted = np.take_along_axis(images, orders[:, None, None, :], axis=3).astype(np.float32)
    mean = permuted.mean(axis=(1, 2, 3), keepdims=True)
    return np.clip(np.rint(mean + CONTRAST * (permuted - mean)), 0, 255).astype(np.uint8)


#: Shift name -> corruption; every synthetic task (all three groups) gets every one.
SHIFTS: dict[str, Corruption] = {"noise": noise, "colour": colour}


def shift_file(name: str) -> str:
    """The list file of shift ``name`` inside a task folder."""
    return f"shift_{name}.txt"
