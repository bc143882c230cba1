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
through exactly the loader the real benchmark uses.
"""

from __future__ import annotations

import colorsys
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from tuner.data.vtab import write_split

SIZE = 32
_SS = 2
_C = SIZE * _SS
#: Bump when any generator changes, so suites written by older code are regenerated.
SYNTH_VERSION = 1
SPLIT_SIZES = {"train800": 800, "val200": 200, "test": 1000}
SUCCESS_MARKER = "_SUCCESS"

Colour = tuple[int, int, int]
Renderer = Callable[[np.random.Generator, int], np.ndarray]


def split_rng(seed: int, task: str, split: str) -> np.random.Generator:
    """A generator that depends only on ``(seed, task, split)``, stable across processes."""
    digest = hashlib.sha256(f"petl-sweep/synth/v{SYNTH_VERSION}/{task}/{split}/{seed}".encode())
    return np.random.default_rng(int.from_bytes(digest.digest()[:16], "little"))


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


def _natural_background(rng: np.random.Generator) -> tuple[Image.Image, np.ndarray]:
    """Gradient + blotchy noise + soft distractor blobs: clutter without shape categories."""
    c0, c1 = _muted(rng), _muted(rng)
    small = _gradient(rng, c0, c1)
    small = small + (_noise_field(rng, int(rng.integers(3, 8)))[..., None] - 0.5) * rng.uniform(
        20, 80
    ) * (rng.random(3) * 0.5 + 0.75)
    img = _canvas(small)
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(2, 7))):
        x, y = rng.uniform(0, SIZE, size=2)
        _ellipse(draw, x, y, rng.uniform(1, 4), rng.uniform(1, 4), _jitter(_muted(rng), rng, 30))
    img = img.filter(ImageFilter.GaussianBlur(rng.uniform(1.0, 2.2)))
    return img, small.mean(axis=(0, 1))


def _render_objects(rng: np.random.Generator, label: int) -> np.ndarray:
    img, mean = _natural_background(rng)
    draw = ImageDraw.Draw(img)
    kind = _OBJECTS[label]
    r = rng.uniform(6.0, 11.5)
    theta = rng.uniform(0, 2 * np.pi) if kind in ("ellipse", "arrow") else rng.uniform(-0.3, 0.3)
    aspect = np.array([1.0, rng.uniform(0.85, 1.15)])
    pts = _rot(_SHAPES[kind] * aspect * r, theta)
    margin = 0.6 * r
    cx, cy = rng.uniform(margin, SIZE - margin, size=2)
    colour = _far_colour(rng, mean)
    if kind == "ring":
        xy = _xy(pts, cx, cy)
        draw.line(
            [*xy, xy[0]], fill=colour, width=round(rng.uniform(0.22, 0.32) * r * _SS), joint="curve"
        )
    else:
        draw.polygon(_xy(pts, cx, cy), fill=colour)
    return _finish(img, rng, (2, 10))


_SCENES = ("field", "beach", "mountains", "city", "forest", "road")


def _render_scenes(rng: np.random.Generator, label: int) -> np.ndarray:
    """Layouts of a horizon scene; colours are drawn from one pool so only layout tells."""
    h = rng.uniform(9.5, 19)  # horizon row
    sky, ground = _muted(rng, 0.5, 0.95), _muted(rng, 0.2, 0.7)
    small = np.where(_YY[..., None] * SIZE < h, sky * (0.8 + 0.3 * _YY[..., None]), ground)
    small = small + (_noise_field(rng, 6)[..., None] - 0.5) * 30
    img = _canvas(small)
    d = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(0, 3))):  # clouds, a sun: present in every class
        _ellipse(
            d,
            rng.uniform(0, SIZE),
            rng.uniform(0, h - 3),
            rng.uniform(2, 6),
            rng.uniform(1, 2.5),
            _jitter(sky + 40, rng, 20),
        )
    scene = _SCENES[label]
    other = _muted(rng, 0.15, 0.8)
    if scene == "beach":
        sea = h + rng.uniform(4, 9)
        _rect(d, 0, h, SIZE, sea, _jitter(other, rng, 10))
        for _ in range(int(rng.integers(2, 5))):
            y = rng.uniform(h + 1, sea)
            x = rng.uniform(-4, SIZE)
            d.line(
                [(x * _SS, y * _SS), ((x + rng.uniform(4, 12)) * _SS, y * _SS)],
                fill=_jitter(other + 50, rng, 15),
                width=1,
            )
    elif scene == "mountains":
        n = int(rng.integers(2, 5))
        xs = np.sort(rng.uniform(-4, SIZE + 4, size=2 * n + 1))
        ys = np.where(np.arange(xs.size) % 2 == 1, h - rng.uniform(5, 12, xs.size), h)
        pts = np.stack([np.r_[-4, xs, SIZE + 4], np.r_[h + 1, ys, h + 1]], axis=1)
        d.polygon(_xy(pts, 0, 0), fill=_jitter(other, rng, 10))
    elif scene == "city":
        x = rng.uniform(-3, 2)
        while x < SIZE:
            w, top = rng.uniform(2.5, 6), h - rng.uniform(3, 12)
            col = _jitter(other, rng, 25)
            _rect(d, x, top, x + w, h + 0.5, col)
            for _ in range(int(rng.integers(1, 4))):
                wx, wy = rng.uniform(x + 0.5, x + w - 1), rng.uniform(top + 1, h - 1)
                _rect(d, wx, wy, wx + 1, wy + 1, _jitter(np.asarray(col) + 70, rng, 20))
            x += w + rng.uniform(0, 1.5)
    elif scene == "forest":
        for _ in range(int(rng.integers(4, 9))):
            x, w = rng.uniform(0, SIZE), rng.uniform(0.8, 2)
            base = rng.uniform(h, SIZE)
            _rect(d, x, rng.uniform(-2, h - 4), x + w, base, _jitter(other * 0.6, rng, 15))
            _ellipse(
                d,
                x + w / 2,
                rng.uniform(0, h - 3),
                rng.uniform(2, 5),
                rng.uniform(2, 4),
                _jitter(other, rng, 25),
            )
    elif scene == "road":
        vx = rng.uniform(8, 24)
        left, right = rng.uniform(-10, 10), rng.uniform(22, 42)
        pts = np.array([[vx - 0.5, h], [vx + 0.5, h], [right, SIZE], [left, SIZE]])
        d.polygon(_xy(pts, 0, 0), fill=_jitter(other, rng, 10))
        mid = (left + right) / 2
        for t0 in (0.15, 0.45, 0.75):
            a = (vx + (mid - vx) * t0, h + (SIZE - h) * t0)
            b = (vx + (mid - vx) * (t0 + 0.15), h + (SIZE - h) * (t0 + 0.15))
            d.line(
                [(a[0] * _SS, a[1] * _SS), (b[0] * _SS, b[1] * _SS)],
                fill=_jitter(other + 90, rng, 20),
                width=max(1, round(2 * t0 * _SS)),
            )
    # "field" adds nothing: plain ground. Bushes appear in every class as distractors.
    for _ in range(int(rng.integers(0, 4))):
        _ellipse(
            d,
            rng.uniform(0, SIZE),
            rng.uniform(h + 1, SIZE),
            rng.uniform(0.8, 2.5),
            rng.uniform(0.6, 1.6),
            _jitter(ground * 0.6, rng, 20),
        )
    return _finish(img, rng, (2, 8))


_TEXTURES = ("stripes_h", "stripes_v", "stripes_diag", "checker", "dots", "grid", "rings", "blobs")
_FY, _FX = (np.mgrid[0:_C, 0:_C] + 0.5) / _C - 0.5


def _render_textures(rng: np.random.Generator, label: int) -> np.ndarray:
    """Periodic and stochastic textures with random colours, phase, frequency and tilt."""
    kind = _TEXTURES[label]
    diag = np.pi / 4 * rng.choice([1, 3])
    base = {"stripes_h": np.pi / 2, "stripes_v": 0.0, "stripes_diag": diag}
    ang = base.get(kind, rng.uniform(0, np.pi / 2)) + rng.uniform(-0.2, 0.2)
    u = _FX * np.cos(ang) + _FY * np.sin(ang)
    v = -_FX * np.sin(ang) + _FY * np.cos(ang)
    f = rng.uniform(2.5, 5.5)
    pu, pv = rng.uniform(0, 2 * np.pi, size=2)
    if kind.startswith("stripes"):
        t = np.sin(2 * np.pi * f * u + pu)
    elif kind == "checker":
        t = np.sin(2 * np.pi * f * u + pu) * np.sin(2 * np.pi * f * v + pv)
    elif kind == "dots":
        t = (np.cos(2 * np.pi * f * u + pu) + np.cos(2 * np.pi * f * v + pv)) / 2 - 0.4
    elif kind == "grid":
        t = np.maximum(np.cos(2 * np.pi * f * u + pu), np.cos(2 * np.pi * f * v + pv)) - 0.6
    elif kind == "rings":
        cx, cy = rng.uniform(-0.5, 0.5, size=2)
        t = np.sin(2 * np.pi * f * np.hypot(_FX - cx, _FY - cy) + pu)
    else:  # blobs: thresholded value noise, no periodicity
        fine = Image.fromarray(rng.random((7, 7), dtype=np.float32), mode="F")
        t = np.asarray(fine.resize((_C, _C), Image.BICUBIC)) - 0.5
    hard = rng.random() < 0.5
    t = (
        (t > 0).astype(np.float32)
        if hard
        else np.clip(0.5 + 0.5 * t / (np.abs(t).max() + 1e-6), 0, 1)
    )
    c0 = _muted(rng, 0.1, 0.9)
    c1 = np.asarray(_far_colour(rng, c0, 90), float)
    light = 0.8 + 0.4 * _gradient(rng, np.zeros(1), np.ones(1))  # uneven illumination
    img = c0 * (1 - t[..., None]) + c1 * t[..., None]
    small = img.reshape(SIZE, _SS, SIZE, _SS, 3).mean(axis=(1, 3)) * light
    return _finish(Image.fromarray(np.clip(small, 0, 255).astype(np.uint8)), rng, (3, 14))


def _render_cells(rng: np.random.Generator, label: int) -> np.ndarray:
    """H&E-like tissue; class 1 has a dense cluster of large dark nuclei, class 0 does not.

    The totals overlap between classes, so "more purple" is only a weak cue: the signal is
    local density and nucleus size, as in patch_camelyon's tumour vs normal patches.
    """
    hue = rng.uniform(0.83, 0.97)
    stroma = np.array(_hsv(hue, rng.uniform(0.15, 0.4), rng.uniform(0.75, 0.95)), float)
    tex = _noise_field(rng, int(rng.integers(4, 9)))[..., None]
    img = _canvas(stroma * (0.85 + 0.25 * tex))
    d = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(2, 6))):  # fibres
        pts = np.cumsum(rng.uniform(-5, 5, size=(4, 2)), axis=0) + rng.uniform(0, SIZE, 2)
        d.line(_xy(pts, 0, 0), fill=_jitter(stroma * 0.9, rng, 15), width=_SS)
    nucleus = np.array(_hsv(rng.uniform(0.7, 0.8), rng.uniform(0.4, 0.7), rng.uniform(0.3, 0.5)))
    spots = [
        (x, y, rng.uniform(0.7, 1.3))
        for x, y in rng.uniform(
            0, SIZE, size=(int(rng.integers(4, 12) if label else rng.integers(10, 26)), 2)
        )
    ]
    if label:
        cx, cy = rng.uniform(6, SIZE - 6, size=2)
        spread = rng.uniform(2.5, 4.5)
        for _ in range(int(rng.integers(8, 15))):
            x, y = rng.normal((cx, cy), spread)
            spots.append((x, y, rng.uniform(1.1, 1.8)))
    for x, y, r in spots:
        _ellipse(
            d,
            x,
            y,
            r * rng.uniform(0.8, 1.2),
            r * rng.uniform(0.8, 1.2),
            _jitter(nucleus * rng.uniform(0.8, 1.1), rng, 15),
        )
    return _finish(img.filter(ImageFilter.GaussianBlur(0.6)), rng, (3, 10))


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


def _write_task(task: SynthTask, dest: Path, seed: int, test_size: int) -> None:
    """Write one task into ``dest`` (a fresh folder); the marker goes last."""
    (dest / "images").mkdir(parents=True)
    streams = {"train800": "train", "val200": "val", "test": "test"}
    sizes = {**SPLIT_SIZES, "test": test_size}
    lines: dict[str, list[tuple[str, int]]] = {}
    for split, stream in streams.items():
        images, labels = task.generate(sizes[split], seed, stream)
        lines[split] = []
        for i, (image, label) in enumerate(zip(images, labels, strict=True)):
            rel = f"images/{stream}_{i:05d}.png"
            Image.fromarray(image).save(dest / rel, compress_level=1)
            lines[split].append((rel, int(label)))
    lines["train800val200"] = lines["train800"] + lines["val200"]
    for split, items in lines.items():
        write_split(dest, split, items)
    counts = {split: len(items) for split, items in lines.items()}
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
        raise KeyError(f"unknown synth task(s) {unknown}; valid: {', '.join(SYNTH_TASKS)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    counts = {
        "train800": SPLIT_SIZES["train800"],
        "val200": SPLIT_SIZES["val200"],
        "train800val200": SPLIT_SIZES["train800"] + SPLIT_SIZES["val200"],
        "test": test_size,
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
