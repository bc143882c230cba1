"""Images in, uint8 tensors out, prepared exactly as training prepared them.

Training decodes each image once (``tuner.data.cache``): PIL, converted to RGB (grayscale,
palette and RGBA images included), resized to the backbone's square input with its
``pretrained_cfg`` filter when the size differs, no crop. A deployed model must do the same,
so this is the one place prediction does it. Inputs are file paths, encoded bytes, or
``data:`` URIs (base64), the form JSON requests to a model server can carry.

``collect`` turns what a user typed (files, folders, split files) into a list of images,
with the true labels where a split file gives them.
"""

from __future__ import annotations

import base64
import binascii
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from tuner.data.cache import INTERPOLATIONS

#: A split file: ``<image path relative to the file's folder> <label>`` per line.
SPLIT_SUFFIXES = (".txt", ".list")


class ImageError(ValueError):
    """One input that is not a decodable image (the message names it and why)."""


def _open(source: str | bytes | Path) -> Image.Image:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return Image.open(io.BytesIO(bytes(source)))
    text = str(source)
    if text.startswith("data:"):
        try:
            payload = base64.b64decode(text.partition(",")[2], validate=True)
        except (binascii.Error, ValueError) as err:
            raise ImageError(f"data URI: not base64 ({err})") from None
        return Image.open(io.BytesIO(payload))
    return Image.open(text)


def describe(source: str | bytes | Path) -> str:
    """How errors name an input: its path, or its kind and size."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return f"<{len(source)} bytes>"
    text = str(source)
    return f"<data URI, {len(text)} chars>" if text.startswith("data:") else text


def decode(source: str | bytes | Path, size: int, interpolation: str) -> torch.Tensor:
    """One image as ``3 × size × size`` uint8 RGB, as the training cache decodes it."""
    try:
        with _open(source) as im:
            rgb = im.convert("RGB")
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ImageError(f"{describe(source)}: not a readable image ({reason})") from None
    if rgb.size != (size, size):
        rgb = rgb.resize((size, size), INTERPOLATIONS[interpolation])
    return torch.from_numpy(np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1).copy())


@dataclass
class Inputs:
    """The images to predict, in order, and their true labels where known (else -1)."""

    paths: list[Path]
    labels: list[int]


def _split_file(path: Path) -> Inputs:
    paths, labels = [], []
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        rel, _, label = line.strip().rpartition(" ")
        try:
            labels.append(int(label))
        except ValueError:
            raise ImageError(f"{path}:{lineno}: expected '<image path> <label>'") from None
        paths.append(path.parent / rel)
    return Inputs(paths, labels)


def collect(items: list[str | Path]) -> Inputs:
    """Files, folders (every non-hidden file below, sorted) and split files, in the order
    given. A missing path is an ``ImageError``; files that are not images are kept, so the
    prediction step names and counts them."""
    out = Inputs([], [])
    for item in items:
        path = Path(item)
        if path.is_dir():
            found = sorted(
                p for p in path.rglob("*")
                if p.is_file() and not any(s.startswith(".") for s in p.relative_to(path).parts)
            )  # fmt: skip
            out.paths += found
            out.labels += [-1] * len(found)
        elif path.is_file() and path.suffix in SPLIT_SUFFIXES:
            split = _split_file(path)
            out.paths += split.paths
            out.labels += split.labels
        elif path.is_file():
            out.paths.append(path)
            out.labels.append(-1)
        else:
            raise ImageError(f"{path}: no such file or folder")
    return out
