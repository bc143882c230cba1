"""A full disk is one line naming the path, the free space and what to do.

The errors come from a real 2 MiB tmpfs filled to the last byte (root only: skipped where
mounting is not permitted): a plain file write (ENOSPC) and an MLflow SQLite store that
can no longer grow (``database or disk is full``, through SQLAlchemy and MLflow)."""

from __future__ import annotations

import errno
import os
import sqlite3
import subprocess
from pathlib import Path

import pytest

from tuner.diskspace import disk_full_message, human_bytes


@pytest.fixture
def full_disk(tmp_path: Path):
    """A 2 MiB tmpfs at ``tmp_path/disk``; unmounted afterwards."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(mount: Path) -> None:
    """Write until the filesystem refuses (ENOSPC), in smaller and smaller pieces: nothing
    is left, not even a partial block."""
    fd = os.open(mount / "ballast", os.O_WRONLY | os.O_CREAT)
    try:
        for size in (65536, 4096, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError as err:
                assert err.errno == errno.ENOSPC
    finally:
        os.close(fd)


def test_enospc_names_the_file_free_space_and_resume(full_disk: Path):
    fill(full_disk)
    target = full_disk / "results" / "checkpoint.pt"
    target.parent.mkdir(exist_ok=True)
    with pytest.raises(OSError) as caught, open(target, "wb") as f:
        f.write(b"x" * 100_000)
        f.flush()
        os.fsync(f.fileno())
    message = disk_full_message(full_disk / "results", caught.value)
    assert message is not None and "\n" not in message
    # a write() error carries no file name: the line names what the caller wrote under
    assert message.startswith(f"the disk is full writing {target.parent}: 0 B free")
    assert f"free of 2.0 MiB on {full_disk}" in message
    assert "--resume" in message and "out_dir" in message


def test_sqlite_store_full_through_mlflow_is_recognised(full_disk: Path):
    from mlflow import MlflowClient

    db = full_disk / "mlflow.db"
    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    experiment = client.create_experiment("full", artifact_location=(full_disk / "a").as_uri())
    run = client.create_run(experiment)
    fill(full_disk)
    with pytest.raises(Exception) as caught:  # MlflowException over SQLAlchemy over sqlite3
        for i in range(10_000):
            client.set_tag(run.info.run_id, f"tag{i}", "v" * 4000)
    assert "database or disk is full" in str(caught.value)
    message = disk_full_message(db, caught.value)
    assert message is not None and "\n" not in message
    assert message.startswith(f"the disk is full writing {db}: ")
    assert f"on {full_disk};" in message


def test_sqlite3_error_in_a_cause_chain():
    """The shape of the issue's traceback: the full disk is the *cause* of the error the
    sweep sees (raised while recording a study's failure)."""
    try:
        try:
            raise sqlite3.OperationalError("database or disk is full")
        except sqlite3.OperationalError as inner:
            raise RuntimeError("could not record the study's failure") from inner
    except RuntimeError as outer:
        message = disk_full_message("/", outer)
    assert message is not None and message.startswith("the disk is full writing /: ")


def test_other_errors_are_not_called_a_full_disk(tmp_path: Path):
    assert disk_full_message(tmp_path, OSError(errno.EACCES, "Permission denied")) is None
    assert disk_full_message(tmp_path, sqlite3.OperationalError("database is locked")) is None
    quota = OSError(errno.EDQUOT, "Disk quota exceeded", str(tmp_path / "x"))
    assert disk_full_message(tmp_path, quota).startswith(
        f"the disk quota is used up writing {tmp_path / 'x'}: "
    )


def test_human_bytes():
    assert human_bytes(512) == "512 B"
    assert human_bytes(2 * 1024 * 1024) == "2.0 MiB"
    assert human_bytes(3.5 * 1024**3) == "3.5 GiB"
