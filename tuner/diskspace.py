"""A full disk as one line: which path, how much is free, what to do.

A disk that fills mid-sweep surfaces deep inside whatever was writing: an ``OSError``
(``ENOSPC``, or ``EDQUOT`` for a quota) from a checkpoint or a journal, or SQLite's
``database or disk is full`` wrapped by SQLAlchemy and again by MLflow. The traceback
names none of what the user needs, so ``disk_full_message`` walks the exception chain,
recognises both shapes, and words the one line: the path, the free space on its
filesystem (``shutil.disk_usage``) and the way on (free space, then ``--resume``).
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

#: What SQLite says (through sqlite3, SQLAlchemy and MLflow alike) when a write finds no room
SQLITE_FULL = "database or disk is full"
#: OSError numbers that mean "no room": the device, or the user's quota on it
FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


def _chain(err: BaseException) -> list[BaseException]:
    """``err`` and every cause or context behind it (each once; cycles are cut)."""
    seen: list[BaseException] = []
    current: BaseException | None = err
    while current is not None and all(current is not e for e in seen):
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def full_cause(err: BaseException) -> BaseException | None:
    """The exception in ``err``'s chain that says the disk is full, or None."""
    for link in _chain(err):
        if isinstance(link, OSError) and link.errno in FULL_ERRNOS:
            return link
        if SQLITE_FULL in str(link):
            return link
    return None


def _existing(path: Path) -> Path:
    """``path`` or its nearest existing parent (``disk_usage`` needs a real path)."""
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def mount_point(path: Path) -> Path:
    """The mount point of the filesystem holding ``path``."""
    path = _existing(path).resolve()
    while not os.path.ismount(path):
        path = path.parent
    return path


def human_bytes(count: float) -> str:
    """``1.5 MiB``: binary units, one decimal."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if count < 1024 or unit == "TiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")


def disk_full_message(path: str | Path, err: BaseException) -> str | None:
    """One line for an out-of-space error while writing under ``path``, else None.

    ``path`` is what the caller was writing under (``out_dir``, the SQLite file); an
    ``OSError`` that names its own file is reported with that file instead. Returns None
    for any other error, so callers can try it on everything they catch."""
    cause = full_cause(err)
    if cause is None:
        return None
    where = Path(path)
    if isinstance(cause, OSError) and cause.filename:
        where = Path(os.fsdecode(cause.filename))
    mount = mount_point(where)
    usage = shutil.disk_usage(mount)
    what = (
        "the disk quota is used up"
        if getattr(cause, "errno", None) == errno.EDQUOT
        else ("the disk is full")
    )
    return (
        f"{what} writing {where}: {human_bytes(usage.free)} free of "
        f"{human_bytes(usage.total)} on {mount}; free space there (or set out_dir to a larger "
        "disk), then run the same `petl-sweep run ... --resume` to continue"
    )
