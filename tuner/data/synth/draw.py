"""Drawing helpers of the synthetic suite: colours, noise, canvases, shapes.

Coordinates are in 32-px units; images are drawn at ``_SS`` times that size with PIL and
box-filtered down (anti-aliasing).
"""

from __future__ import annotations

import colorsys

import numpy as np
from PIL import Image, ImageDraw

SIZE = 32
_SS = 2
_C = SIZE * _SS
#: Bump when any generator changes, so suites written by older code are regenerated.

Colour = tuple[int, int, int]

# -- drawing helpers (coordinates in 32-px units; the canvas is _SS times larger) ------------


def _hsv(h: float, s: float, v: float) -> Colour:
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, s, v)
    return round(r * 255), round(g * 255), round(b * 255)


def _vivid(rng: np.random.Generator) -> Colour:
    return _hsv(rng.random(), rng.uniform(0.55, 1.0), rng.uniform(0.55, 1.0))


def _muted(rng: np.random.Generator, lo: float = 0.25, hi: float = 0.85) -> np.ndarray:
    return np.array(_hsv(rng.random(), rng.uniform(0.1, 0.5), rng.uniform(lo, hi)), float)


def _jitter(colour: np.ndarray | Colour, rng: np.random.Generator, amount: float) -> Colour:
    c = np.clip(np.asarray(colour, float) + rng.uniform(-amount, amount, size=3), 0, 255)
    return tuple(int(v) for v in c)  # type: ignore[return-value]


def _far_colour(rng: np.random.Generator, ref: np.ndarray, min_dist: float = 110) -> Colour:
    """A vivid colour that stands out from ``ref`` (the object must be visible, not guessed)."""
    best, best_d = _vivid(rng), -1.0
    for _ in range(8):
        c = _vivid(rng)
        d = float(np.linalg.norm(np.asarray(c, float) - ref))
        if d >= min_dist:
            return c
        if d > best_d:
            best, best_d = c, d
    return best


def _noise_field(rng: np.random.Generator, grid: int, size: int = SIZE) -> np.ndarray:
    """Smooth value noise in [0, 1]: a coarse random grid, bicubically upsampled."""
    coarse = Image.fromarray(rng.random((grid, grid), dtype=np.float32), mode="F")
    return np.clip(np.asarray(coarse.resize((size, size), Image.BICUBIC)), 0.0, 1.0)


_YY, _XX = (np.mgrid[0:SIZE, 0:SIZE] + 0.5) / SIZE


def _gradient(rng: np.random.Generator, c0: np.ndarray, c1: np.ndarray) -> np.ndarray:
    ang = rng.uniform(0, 2 * np.pi)
    t = np.clip(0.5 + (_XX - 0.5) * np.cos(ang) + (_YY - 0.5) * np.sin(ang), 0, 1)[..., None]
    return c0 * (1 - t) + c1 * t


def _canvas(small: np.ndarray) -> Image.Image:
    """A 32x32 float background, upsampled to the drawing canvas."""
    img = Image.fromarray(np.clip(small, 0, 255).astype(np.uint8))
    return img.resize((_C, _C), Image.BILINEAR)


def _finish(img: Image.Image, rng: np.random.Generator, noise: tuple[float, float]) -> np.ndarray:
    """Box-filter down to 32x32 and add sensor noise of random strength."""
    small = np.asarray(img.resize((SIZE, SIZE), Image.BOX), dtype=np.float32)
    sd = rng.uniform(*noise)
    small = small + rng.standard_normal(small.shape, dtype=np.float32) * sd
    return np.clip(np.rint(small), 0, 255).astype(np.uint8)


def _rot(points: np.ndarray, theta: float) -> np.ndarray:
    c, s = np.cos(theta), np.sin(theta)
    return points @ np.array([[c, s], [-s, c]])


def _xy(points: np.ndarray, cx: float, cy: float) -> list[tuple[float, float]]:
    return [(float(x), float(y)) for x, y in (points + np.array([cx, cy])) * _SS]


def _ellipse(
    draw: ImageDraw.ImageDraw, cx: float, cy: float, rx: float, ry: float, fill: Colour
) -> None:
    draw.ellipse([(cx - rx) * _SS, (cy - ry) * _SS, (cx + rx) * _SS, (cy + ry) * _SS], fill=fill)


def _rect(
    draw: ImageDraw.ImageDraw, x0: float, y0: float, x1: float, y1: float, fill: Colour
) -> None:
    draw.rectangle([x0 * _SS, y0 * _SS, x1 * _SS - 1, y1 * _SS - 1], fill=fill)


def _ring_points(k: int, radii: np.ndarray | float, start: float = 0.0) -> np.ndarray:
    t = start + np.linspace(0, 2 * np.pi, k, endpoint=False)
    r = np.broadcast_to(np.asarray(radii, float), t.shape)
    return np.stack([r * np.cos(t), r * np.sin(t)], axis=1)


# Outlines of the "objects" shape categories, unit size, pointing up / axis-aligned.
_UP = -np.pi / 2
_SHAPES: dict[str, np.ndarray] = {
    "circle": _ring_points(28, 1.0),
    "square": np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * 0.82,
    "triangle": _ring_points(3, 1.0, _UP) * 1.1 + (0, 0.15),
    "star": _ring_points(10, np.tile([1.0, 0.42], 5), _UP),
    "cross": np.array(
        [
            [-0.3, -1],
            [0.3, -1],
            [0.3, -0.3],
            [1, -0.3],
            [1, 0.3],
            [0.3, 0.3],
            [0.3, 1],
            [-0.3, 1],
            [-0.3, 0.3],
            [-1, 0.3],
            [-1, -0.3],
            [-0.3, -0.3],
        ]
    ),
    "ring": _ring_points(28, 1.0),
    "ellipse": _ring_points(28, 1.0) * (1.0, 0.5),
    "diamond": np.array([[0, -1.05], [0.62, 0], [0, 1.05], [-0.62, 0]]),
    "hexagon": _ring_points(6, 1.0),
    "arrow": np.array(
        [[-1, -0.24], [0.1, -0.24], [0.1, -0.62], [1, 0], [0.1, 0.62], [0.1, 0.24], [-1, 0.24]]
    ),
}
_OBJECTS = tuple(_SHAPES)
