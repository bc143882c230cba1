"""Procedural "glyph" images: the synthetic *upstream* task the tiny ViT is pretrained on.

PETL methods only make sense on a backbone whose features already mean something, and we
cannot download ImageNet weights. So the tiny ViT is pretrained on a task that plays
ImageNet's role: many classes, each a fixed visual concept, rendered with nuisance variation
(pose, scale, colour, stroke width, busy backgrounds). To tell 64 such glyphs apart the network
has to learn edges, strokes, curvature, corners, filled regions, colour and their spatial
arrangement, which is exactly what the downstream suite then reuses.

The upstream labels deliberately are *not* any downstream label (shape category, texture,
blob density, object count, grid location, orientation, size): a glyph class is an arbitrary
composition of 2-4 primitives, and per-sample translation, rotation, scale and colour jitter
make location, orientation, size and exact colour nuisances rather than signal.

Everything is derived from ``numpy.random.default_rng`` seeded with explicit integers (never
Python's salted ``hash()``), so the same ``(n, seed, class_seed)`` gives the same bytes on
every machine and run.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

#: Number of glyph classes of the upstream task (matches ``TINY_UPSTREAM_CLASSES``).
NUM_UPSTREAM_CLASSES = 64
#: Seed of the class compositions the shipped weights were pretrained on. A different value
#: gives a *novel* set of 64 glyphs, used to check that features transfer.
UPSTREAM_CLASS_SEED = 20250
#: Output resolution; images are drawn at ``_SS`` times this and box-filtered down, which
#: anti-aliases thin strokes so they do not turn into aliasing noise at 32x32.
IMAGE_SIZE = 32
_SS = 2
_CANVAS = IMAGE_SIZE * _SS

_KINDS = ("stroke", "arc", "polygon", "blob")


@dataclass(frozen=True)
class _Primitive:
    """One part of a glyph, in glyph coordinates (roughly the square [-1, 1]^2).

    Everything is reduced to a point list so that per-sample rotation/scale/translation is a
    single affine map and PIL only ever draws polylines or filled polygons.
    """

    points: np.ndarray  # (k, 2) float
    filled: bool
    closed: bool
    colour: int  # index into the class palette
    width: float  # relative stroke width (multiplied by the per-sample width)


@dataclass(frozen=True)
class _GlyphClass:
    primitives: tuple[_Primitive, ...]
    palette: np.ndarray  # (3, 3) float in [0, 255]


def _random_colour(rng: np.random.Generator) -> np.ndarray:
    """A saturated-ish colour: a random hue with random value, so palettes are varied."""
    hue = rng.uniform(0.0, 1.0)
    sat = rng.uniform(0.45, 1.0)
    val = rng.uniform(0.55, 1.0)
    return _hsv_to_rgb(hue, sat, val)


def _hsv_to_rgb(h: float, s: float, v: float) -> np.ndarray:
    i = int(h * 6.0) % 6
    f = h * 6.0 - int(h * 6.0)
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    rgb = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]
    return np.asarray(rgb, dtype=np.float64) * 255.0


def _make_primitive(rng: np.random.Generator, kind: str, n_colours: int) -> _Primitive:
    colour = int(rng.integers(n_colours))
    centre = rng.uniform(-0.45, 0.45, size=2)
    if kind == "stroke":
        # A 2-4 point polyline: straight bars, corners and zig-zags.
        k = int(rng.integers(2, 5))
        pts = [centre + rng.uniform(-0.6, 0.6, size=2)]
        for _ in range(k - 1):
            ang = rng.uniform(0, 2 * np.pi)
            pts.append(pts[-1] + rng.uniform(0.35, 0.8) * np.array([np.cos(ang), np.sin(ang)]))
        points = np.clip(np.asarray(pts), -1.0, 1.0)
        return _Primitive(points, False, False, colour, rng.uniform(0.8, 1.4))
    if kind == "arc":
        # Part of an ellipse: curvature is a feature straight strokes do not teach.
        radii = rng.uniform(0.25, 0.65, size=2)
        start = rng.uniform(0, 2 * np.pi)
        sweep = rng.uniform(0.6, 1.7) * np.pi
        t = np.linspace(start, start + sweep, 14)
        tilt = rng.uniform(0, np.pi)
        pts = np.stack([radii[0] * np.cos(t), radii[1] * np.sin(t)], axis=1)
        points = centre + pts @ _rotation(tilt).T
        return _Primitive(points, False, False, colour, rng.uniform(0.8, 1.3))
    if kind == "polygon":
        # 3-6 vertices at jittered angles/radii: triangles, quads, irregular and star-ish
        # outlines, either filled (regions) or outlined (closed contours with corners).
        k = int(rng.integers(3, 7))
        ang = np.sort(rng.uniform(0, 2 * np.pi, size=k))
        rad = rng.uniform(0.2, 0.5, size=k)
        points = centre + np.stack([rad * np.cos(ang), rad * np.sin(ang)], axis=1)
        filled = bool(rng.random() < 0.6)
        return _Primitive(points, filled, True, colour, rng.uniform(0.8, 1.2))
    # "blob": a small filled ellipse, placed off-centre so the layout carries information.
    radii = rng.uniform(0.09, 0.22, size=2)
    t = np.linspace(0, 2 * np.pi, 12, endpoint=False)
    points = centre + np.stack([radii[0] * np.cos(t), radii[1] * np.sin(t)], axis=1)
    return _Primitive(points, True, True, colour, 1.0)


def _rotation(theta: float) -> np.ndarray:
    c, s = np.cos(theta), np.sin(theta)
    return np.array([[c, -s], [s, c]])


def glyph_classes(
    num_classes: int = NUM_UPSTREAM_CLASSES, class_seed: int = UPSTREAM_CLASS_SEED
) -> list[_GlyphClass]:
    """The fixed class definitions: class ``c`` depends only on ``(class_seed, c)``.

    Seeding each class from ``[class_seed, c]`` (a NumPy ``SeedSequence`` entropy list) keeps a
    class's glyph stable even if ``num_classes`` changes.
    """
    classes = []
    for c in range(num_classes):
        rng = np.random.default_rng([class_seed, c])
        n_colours = int(rng.integers(1, 4))
        palette = np.stack([_random_colour(rng) for _ in range(3)])
        n_parts = int(rng.integers(2, 5))
        # At least two different primitive kinds so no class is "just blobs" or "just bars".
        kinds = list(rng.choice(_KINDS, size=2, replace=False))
        kinds += list(rng.choice(_KINDS, size=n_parts - 2))
        parts = tuple(_make_primitive(rng, str(k), n_colours) for k in kinds)
        classes.append(_GlyphClass(parts, palette))
    return classes


_YY, _XX = (np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE] + 0.5) / IMAGE_SIZE


def _background(rng: np.random.Generator) -> Image.Image:
    """A random canvas-sized RGB background: flat, gradient, smooth noise or soft stripes.

    Backgrounds are nuisances with strong low-level structure so the network must separate
    figure from ground instead of keying on "any non-background pixel". They are smooth, so
    they are computed at output resolution and upsampled (4x less float work per image).
    """
    kind = int(rng.integers(4))
    c0 = rng.uniform(0, 255, size=3)
    c1 = rng.uniform(0, 255, size=3)
    if kind == 0:
        img = np.broadcast_to(c0, (IMAGE_SIZE, IMAGE_SIZE, 3))
    else:
        if kind == 1:
            ang = rng.uniform(0, 2 * np.pi)
            t = np.clip(0.5 + (_XX - 0.5) * np.cos(ang) + (_YY - 0.5) * np.sin(ang), 0, 1)
        elif kind == 2:
            # Low-frequency value noise: a coarse random grid, bilinearly upsampled.
            g = int(rng.integers(3, 7))
            coarse = Image.fromarray((rng.uniform(0, 1, size=(g, g)) * 255).astype(np.uint8))
            t = np.asarray(coarse.resize((IMAGE_SIZE, IMAGE_SIZE), Image.BILINEAR)) / 255.0
        else:
            # Soft sinusoidal stripes of random frequency and angle, at low contrast.
            ang = rng.uniform(0, np.pi)
            freq = rng.uniform(1.5, 5.0)
            t = 0.35 + 0.35 * np.sin(2 * np.pi * freq * (_XX * np.cos(ang) + _YY * np.sin(ang)))
        img = c0 * (1 - t[..., None]) + c1 * t[..., None]
    # Pull the background towards mid-grey a little so glyphs keep some contrast.
    small = (0.75 * img + 0.25 * 128.0).astype(np.uint8)
    return Image.fromarray(small).resize((_CANVAS, _CANVAS), Image.BILINEAR)


def _clutter(draw: ImageDraw.ImageDraw, rng: np.random.Generator, count: int) -> None:
    """Thin random lines and dots in random colours: distractors that are not part of the glyph."""
    for _ in range(count):
        colour = tuple(int(v) for v in rng.integers(0, 256, size=3))
        if rng.random() < 0.5:
            a, b = rng.uniform(0, _CANVAS, size=2), rng.uniform(0, _CANVAS, size=2)
            draw.line([tuple(a), tuple(b)], fill=colour, width=int(rng.integers(1, 3)))
        else:
            x, y = rng.uniform(0, _CANVAS, size=2)
            r = rng.uniform(1.0, 3.0)
            draw.ellipse([x - r, y - r, x + r, y + r], fill=colour)


def _render(glyph: _GlyphClass, rng: np.random.Generator) -> np.ndarray:
    """One 32x32 uint8 sample of ``glyph`` under random pose, colour, width and background."""
    img = _background(rng)
    draw = ImageDraw.Draw(img)
    if rng.random() < 0.5:
        _clutter(draw, rng, int(rng.integers(2, 6)))

    # Pose: the glyph fills most of the frame; moderate rotation keeps classes distinct while
    # making orientation a nuisance.
    theta = rng.uniform(-0.45, 0.45)
    scale = rng.uniform(0.32, 0.46) * _CANVAS
    shift = _CANVAS / 2 + rng.uniform(-0.12, 0.12, size=2) * _CANVAS
    aspect = np.array([1.0, rng.uniform(0.85, 1.15)])
    affine = _rotation(theta) * scale

    # Colour: class palette with brightness/offset jitter; sometimes fully recoloured so that
    # colour alone never identifies a class and shape has to be learned.
    if rng.random() < 0.2:
        palette = np.stack([_random_colour(rng) for _ in range(3)])
    else:
        palette = glyph.palette * rng.uniform(0.75, 1.2) + rng.uniform(-25, 25, size=3)
    palette = np.clip(palette, 0, 255).astype(int)
    base_width = rng.uniform(1.6, 3.2) * _SS

    for prim in glyph.primitives:
        pts = (prim.points * aspect) @ affine.T + shift
        xy = [tuple(p) for p in pts]
        fill = tuple(int(v) for v in palette[prim.colour])
        if prim.filled:
            draw.polygon(xy, fill=fill)
        else:
            width = max(1, round(base_width * prim.width))
            if prim.closed:
                xy = [*xy, xy[0]]
            draw.line(xy, fill=fill, width=width, joint="curve")

    small = np.asarray(img.resize((IMAGE_SIZE, IMAGE_SIZE), Image.BOX), dtype=np.float32)
    noise = rng.standard_normal(size=small.shape, dtype=np.float32) * rng.uniform(0.0, 8.0)
    return np.clip(np.rint(small + noise), 0, 255).astype(np.uint8)


def generate_upstream(
    n: int,
    seed: int,
    *,
    class_seed: int = UPSTREAM_CLASS_SEED,
    num_classes: int = NUM_UPSTREAM_CLASSES,
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` glyph images ``(n, 32, 32, 3) uint8`` and their labels ``(n,) int64``.

    ``seed`` drives the per-sample randomness (pose, colours, backgrounds, label order);
    ``class_seed`` fixes *which* glyphs the classes are. Keep ``class_seed`` at its default for
    the pretraining task; change it for a novel task with unseen classes (transfer checks).
    Labels are balanced (each class appears ``n // num_classes`` or one more times) and
    shuffled, so any ``n >= num_classes`` covers every class.
    """
    if n < 0:
        raise ValueError(f"n must be non-negative, got {n}")
    classes = glyph_classes(num_classes, class_seed)
    rng = np.random.default_rng([seed, class_seed])
    labels = rng.permutation(np.arange(n, dtype=np.int64) % num_classes)
    images = np.empty((n, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    for i, label in enumerate(labels):
        images[i] = _render(classes[int(label)], rng)
    return images, labels
