"""Renderers of the Natural and Specialized synthetic tasks: objects over clutter, scene
layouts, textures and cell density. Each draws one image of a class from a seeded generator.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from tuner.data.synth.draw import (
    _C,
    _OBJECTS,
    _SHAPES,
    _SS,
    _YY,
    SIZE,
    _canvas,
    _ellipse,
    _far_colour,
    _finish,
    _gradient,
    _hsv,
    _jitter,
    _muted,
    _noise_field,
    _rect,
    _rot,
    _xy,
)


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


def _draw_layout(
    d: ImageDraw.ImageDraw, rng: np.random.Generator, scene: str, h: float, other: np.ndarray
) -> None:
    """What makes ``scene`` a scene: drawn over sky and ground above/below horizon ``h``."""
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
    _draw_layout(d, rng, scene, h, other)
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
