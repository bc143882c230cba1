"""Create a new SQLite tracking store once, however many sweeps start on it at once, and fast.

MLflow builds a new SQLite store on first use: it creates the initial tables, then runs
its Alembic migrations, which rebuild tables through ``_alembic_tmp_<name>`` copies. That
costs seconds of CPU for every new store (every sweep on a fresh ``out_dir``, every test
store), and two processes doing it to one new file at once collide (``table
_alembic_tmp_runs already exists``): the loser dies with a long traceback.

``ensure_store`` instead copies a *template*: a store this MLflow version migrated once per
machine (in the user's cache folder) and emptied of its one row, the Default experiment,
whose artifact location names the folder it was made in. MLflow recreates that experiment
with the new store's own location the first time a client opens it. The copy is written
beside the target and renamed into place, so a store that exists is complete: concurrent
starts take an exclusive file lock (the ``filelock`` package: ``flock`` on Linux) only while
the file is missing. Where the cache cannot be written, the store is migrated beside the
target and renamed into place, under the same lock.

Other stores need nothing: an MLflow server migrates its database once when it starts,
and a PostgreSQL URI used directly is migrated by whoever ran ``mlflow db upgrade``.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
from pathlib import Path

from filelock import FileLock
from sqlalchemy.engine import make_url

#: Seconds to wait for another process that is creating the same store
CREATE_TIMEOUT_S = 300.0
#: Where the migrated template lives (default: ``$XDG_CACHE_HOME/petl-sweep``)
CACHE_ENV = "PETL_SWEEP_CACHE"


def sqlite_path(tracking_uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (read as SQLAlchemy reads it); None for
    every other store and for an in-memory database."""
    if not tracking_uri.startswith("sqlite:"):
        return None
    database = make_url(tracking_uri).database
    if not database or database == ":memory:":
        return None
    return Path(database).absolute()


def lock_path(db: Path) -> Path:
    """The lock file beside ``db`` (same folder: the same filesystem's locks)."""
    return db.with_name(f".{db.name}.lock")


def _migrate(db: Path) -> None:
    """MLflow's own first use of a new store: create the tables, run every migration."""
    from mlflow import MlflowClient

    MlflowClient(tracking_uri=f"sqlite:///{db}").search_experiments(max_results=1)


def cache_dir() -> Path:
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "petl-sweep"


def template_path() -> Path:
    """The empty, migrated store of the installed MLflow version (one per version: a newer
    MLflow gets its own, never a stale schema)."""
    import mlflow

    return cache_dir() / f"mlflow-{mlflow.__version__}-empty.db"


def _template(timeout_s: float) -> Path:
    """The template, built once per machine (under its own lock; a reader never sees it
    half-written)."""
    path = template_path()
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(lock_path(path), timeout=timeout_s):
        if not path.exists():
            building = path.with_name(f"{path.name}.{os.getpid()}.tmp")
            building.unlink(missing_ok=True)
            _migrate(building)
            with sqlite3.connect(building) as conn:  # MLflow recreates it per store
                conn.execute("DELETE FROM experiments")
            conn.close()
            os.replace(building, path)
    return path


def _copy_into_place(source: Path, db: Path) -> None:
    partial = db.with_name(f".{db.name}.{os.getpid()}.tmp")
    shutil.copyfile(source, partial)
    os.replace(partial, db)


def ensure_store(tracking_uri: str, timeout_s: float = CREATE_TIMEOUT_S) -> None:
    """Make sure the store behind ``tracking_uri`` exists with MLflow's current schema.

    For a new SQLite store, the template is copied into place under a file lock, so
    concurrent starts never race (nor migrate). Call it before anything else touches the
    store (the access check, the tracker, a lease). Raises ``filelock.Timeout`` if another
    process holds the lock for ``timeout_s`` (it is then stuck, not creating)."""
    db = sqlite_path(tracking_uri)
    if db is None or db.exists():
        return
    db.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(lock_path(db), timeout=timeout_s):
        if db.exists():  # another process made it while this one waited
            return
        try:
            template = _template(timeout_s)
        except OSError:  # no writable cache: migrate beside it, as MLflow would
            partial = db.with_name(f".{db.name}.{os.getpid()}.new")
            partial.unlink(missing_ok=True)
            _migrate(partial)
            os.replace(partial, db)
            return
        _copy_into_place(template, db)
