"""Two small things every layer needs: atomic writes and content hashes.

Sweeps run many processes against one data root and one cache: a reader must never see half
a file, so every file the project writes goes to a unique sibling temp name first and is
renamed into place (``os.replace`` is atomic on one filesystem). Reuse keys (study, final
run, sensitivity scores) are SHA-256 hashes of a JSON rendering of what decides a result.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def temp_sibling(path: Path) -> Path:
    """A unique hidden name beside ``path`` (same filesystem, so the rename is atomic)."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")


@contextmanager
def atomic_write(path: Path) -> Iterator[Path]:
    """Yield a temp path to write; on success it replaces ``path``, on failure it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def content_hash(content: Any, length: int = 16) -> str:
    """The first ``length`` hex digits of SHA-256 over ``content`` as sorted-key JSON."""
    text = json.dumps(content, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def unknown_message(
    kind: str, value: object, valid: list[str], limit: int = 30, extra: str = ""
) -> str:
    """The one wording of "unknown X" errors: the bad value and the valid ones (capped)."""
    shown = ", ".join(valid[:limit]) + (
        f", ... ({len(valid)} in all)" if len(valid) > limit else ""
    )
    return f"unknown {kind} {value!r}; valid: {shown or 'none'}{extra}"
