"""Renderers of the Structured synthetic tasks: counting, distance, sprite location and
orientation: geometry, not semantics.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from tuner.data.synth.draw import (
    _SHAPES,
    _YY,
    SIZE,
    _canvas,
    _ellipse,
    _finish,
    _muted,
    _rot,
    _vivid,
    _xy,
)

_FLOOR_SHAPES = ("circle", "square", "triangle", "hexagon")


def _floor(rng: np.random.Generator) -> tuple[Image.Image, float]:
    """A clevr-like grey floor receding to a soft horizon; returns the horizon row."""
    h = rng.uniform(6, 12)
    near, far = _muted(rng, 0.45, 0.8) * 0.3 + 0.7 * 140, _muted(rng, 0.3, 0.6) * 0.3 + 0.7 * 100
    t = np.clip((_YY * SIZE - h) / (SIZE - h), 0, 1)[..., None]
    small = np.where(t > 0, far * (1 - t) + near * t, far * 0.8)
    return _canvas(small), h


def _draw_thing(
    d: ImageDraw.ImageDraw, rng: np.random.Generator, x: float, y: float, r: float
) -> None:
    """A solid object sitting on the floor, with a soft contact shadow."""
    _ellipse(d, x + 0.25 * r, y + 0.8 * r, 1.1 * r, 0.45 * r, (60, 60, 60))
    kind = _FLOOR_SHAPES[int(rng.integers(len(_FLOOR_SHAPES)))]
    d.polygon(_xy(_SHAPES[kind] * r, x, y), fill=_vivid(rng))


def _render_count(rng: np.random.Generator, label: int) -> np.ndarray:
    img, h = _floor(rng)
    d = ImageDraw.Draw(img)
    placed: list[tuple[float, float, float]] = []
    for _ in range(label + 1):
        r = rng.uniform(2.2, 4.0)
        for _ in range(200):
            x, y = rng.uniform(r + 0.5, SIZE - r - 0.5), rng.uniform(max(h, r + 0.5), SIZE - r - 1)
            if all(np.hypot(x - a, y - b) > r + c + 1.0 for a, b, c in placed):
                break
            r = max(1.6, r * 0.97)  # crowded: shrink until it fits apart from the others
        placed.append((x, y, r))
    for x, y, r in sorted(placed, key=lambda p: p[1]):
        _draw_thing(d, rng, x, y, r)
    return _finish(img, rng, (2, 8))


def _render_distance(rng: np.random.Generator, label: int) -> np.ndarray:
    """Nearest object's depth bin: its floor row and size both encode it, but the horizon
    and each object's true size vary, so neither cue alone is exact (as in clevr_dist)."""
    img, h = _floor(rng)
    d = ImageDraw.Draw(img)
    nearness = [(label + rng.random()) / 6]
    nearness += list(rng.uniform(0, nearness[0], size=int(rng.integers(0, 3))))
    for t in sorted(nearness):  # far to near, so near objects occlude far ones
        r = (1.2 + 4.3 * t) * rng.uniform(0.85, 1.15)
        y = h + 1.0 + t * (SIZE - h - 3.0) - r
        _draw_thing(d, rng, rng.uniform(r, SIZE - r), y, r)
    return _finish(img, rng, (2, 8))


_SPRITES = ("square", "ellipse", "heart")
_T = np.linspace(0, 2 * np.pi, 32, endpoint=False)
# The classic parametric heart, scaled to about the unit square, point up on screen.
_HEART = (
    np.stack(
        [
            16 * np.sin(_T) ** 3,
            -(13 * np.cos(_T) - 5 * np.cos(2 * _T) - 2 * np.cos(3 * _T) - np.cos(4 * _T)),
        ],
        axis=1,
    )
    / 16
)


def _sprite_background(rng: np.random.Generator) -> Image.Image:
    small = rng.normal(rng.uniform(0, 40), rng.uniform(0, 18), size=(SIZE, SIZE, 1))
    return _canvas(np.repeat(small, 3, axis=2))


def _render_dsprites_loc(rng: np.random.Generator, label: int) -> np.ndarray:
    img = _sprite_background(rng)
    row, col = divmod(label, 4)
    x, y = (col + rng.random()) * 8, (row + rng.random()) * 8
    kind = _SPRITES[int(rng.integers(3))]
    outline = {"square": _SHAPES["square"], "ellipse": _SHAPES["ellipse"], "heart": _HEART}[kind]
    pts = _rot(outline * rng.uniform(2.5, 4.5), rng.uniform(0, 2 * np.pi))
    grey = int(rng.integers(170, 256))
    ImageDraw.Draw(img).polygon(_xy(pts, x, y), fill=(grey, grey, grey))
    return _finish(img, rng, (0, 6))


_KITE = np.array([[1.0, 0.0], [-0.7, -0.42], [-0.35, 0.0], [-0.7, 0.42]])


def _render_dsprites_ori(rng: np.random.Generator, label: int) -> np.ndarray:
    """A chevron (asymmetric, so the full 360 degrees are identifiable) in 16 angle bins."""
    img = _sprite_background(rng)
    theta = (label + rng.random()) * 2 * np.pi / 16
    r = rng.uniform(7, 11)
    x, y = rng.uniform(r * 0.8, SIZE - r * 0.8, size=2)
    grey = int(rng.integers(170, 256))
    # Screen y points down; negate the angle so class k means counter-clockwise k * 22.5°.
    ImageDraw.Draw(img).polygon(_xy(_rot(_KITE * r, -theta), x, y), fill=(grey, grey, grey))
    return _finish(img, rng, (0, 6))
