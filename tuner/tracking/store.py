"""Create a new SQLite tracking store once, however many sweeps start on it at once.

MLflow builds a new SQLite store on first use: it creates the initial tables, then runs
its Alembic migrations, which rebuild tables through ``_alembic_tmp_<name>`` copies. Two
processes doing that to one new file at once collide (``table _alembic_tmp_runs already
exists``) and the loser dies with a long traceback; three sweeps started together by a
script reproduce it every time. ``ensure_store`` serialises the first use with an
exclusive file lock beside the database (the ``filelock`` package: ``flock`` on Linux):
the first process builds the schema while the others wait, then they find it complete
and only check it. A store that exists already costs one lock and one query.

Other stores need nothing: an MLflow server migrates its database once when it starts,
and a PostgreSQL URI used directly is migrated by whoever ran ``mlflow db upgrade``.
"""

from __future__ import annotations

from pathlib import Path

from filelock import FileLock
from sqlalchemy.engine import make_url

#: Seconds to wait for another process that is creating the same store
CREATE_TIMEOUT_S = 300.0


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


def ensure_store(tracking_uri: str, timeout_s: float = CREATE_TIMEOUT_S) -> None:
    """Make sure the store behind ``tracking_uri`` exists with MLflow's current schema.

    For SQLite, the first use (create + migrate) runs under a file lock, so concurrent
    starts never race in the migration. Call it before anything else touches the store
    (the access check, the tracker, a lease). Raises ``filelock.Timeout`` if another
    process holds the lock for ``timeout_s`` (it is then stuck, not creating)."""
    from mlflow import MlflowClient

    db = sqlite_path(tracking_uri)
    if db is None:
        return
    db.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(lock_path(db), timeout=timeout_s):
        # any call builds the store: MLflow creates and migrates the schema on first use
        MlflowClient(tracking_uri=tracking_uri).search_experiments(max_results=1)
