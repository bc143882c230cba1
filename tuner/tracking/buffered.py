"""A tracker that survives MLflow outages: writes it cannot make wait on disk, in order.

MLflow's HTTP client retries for a few minutes and then raises; a sweep runs for hours. So
the sweep's tracker actor is this wrapper: a write that fails for a transport reason (the
server is down, 5xx, timeouts) goes to an append-only journal on disk, and so does every
later write until the journal is replayed, in order, with backoff. Runs are addressed by
our keys, not MLflow ids, so a run created during replay gets every write meant for it.
It warns once when MLflow goes away and once when it is back; ``close`` replays what is
left and raises ``TrackingError`` (the sweep fails loudly) only if that is impossible.
Reads (resume checks, artifact URIs) cannot be deferred: they retry until ``read_timeout``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from mlflow.exceptions import MlflowException

from tuner.tracking.client import TrackingService

log = logging.getLogger("petl_sweep.tracking")
#: Largest journal (entries) before the sweep stops rather than risk losing more.
MAX_PENDING = 200_000


class TrackingError(RuntimeError):
    """Writes that could not reach MLflow; the journal that still holds them is named."""


def transient(err: BaseException) -> bool:
    """A failure of the transport or the server (retrying later may succeed), not of the
    request: no connection, a timeout, or an HTTP status of 429 or 5xx. MLflow's client
    retries such calls itself for minutes and then raises an ``MlflowException`` whose
    status code (``get_http_status_code``) says which it was; 4xx (a bad request, a missing
    run) are bugs, raised at once."""
    if isinstance(err, (ConnectionError, TimeoutError)):
        return True
    if type(err).__module__.split(".")[0] in ("requests", "urllib3"):
        return True
    if isinstance(err, MlflowException):
        status = err.get_http_status_code()
        return status == 429 or status >= 500
    return False


class BufferedTracker:
    """``TrackingService``'s interface (what the sweep calls) with a write journal."""

    WRITES = (
        "start_run", "ensure_run", "log_params", "log_metrics", "set_tags", "end_run",
        "log_artifact_bytes", "log_dataset", "log_dict", "fail_run", "adopt", "end_open",
        "end_runs",
    )  # fmt: skip

    def __init__(
        self,
        *args: Any,
        journal: Path,
        read_timeout: float = 900.0,
        clock: Callable[[], float] = time.monotonic,
        **kwargs: Any,
    ) -> None:
        self.inner = TrackingService(*args, **kwargs)
        self.journal = Path(journal)
        self.journal.mkdir(parents=True, exist_ok=True)
        self.pending: list[dict[str, Any]] = []
        self.read_timeout, self.clock = read_timeout, clock
        self.next_try, self.delay, self.warned = 0.0, 1.0, False
        self.outages = 0  # how many times MLflow went away (the driver may poll after it is back)
        #: Why writing is impossible (a full disk), once it is: the driver stops on it
        self.fatal = ""
        self.experiment_id = self.inner.experiment_id
        #: calls taken, by operation: what a sweep costs MLflow (the scale tests count them)
        self.calls: dict[str, int] = {}

    # -- writes ---------------------------------------------------------------------------
    def _write(self, op: str, *args: Any, **kwargs: Any) -> Any:
        self.calls[op] = self.calls.get(op, 0) + 1
        if self.fatal:
            raise TrackingError(self.fatal)
        entry = {"op": op, "args": list(args), "kwargs": kwargs}
        try:
            if not self.pending:
                try:
                    return getattr(self.inner, op)(*args, **kwargs)
                except Exception as err:
                    if not transient(err):
                        raise
                    self._went_down(err)
            self._append(entry)
            self.flush()
        except Exception as err:
            self._check_full(err)
            raise
        return None

    def _check_full(self, err: BaseException) -> None:
        """A full disk is no outage (waiting does not help, and the journal is likely on the
        same disk): remember it as one line, raise it from now on, show it in ``status``."""
        from tuner.diskspace import disk_full_message
        from tuner.tracking.store import sqlite_path

        where = sqlite_path(self.inner.tracking_uri) or self.journal
        message = disk_full_message(where, err)
        if message:
            self.fatal = message
            raise TrackingError(message) from None

    def _append(self, entry: dict[str, Any]) -> None:
        if len(self.pending) >= MAX_PENDING:
            raise TrackingError(f"MLflow unreachable and {MAX_PENDING} writes in {self.journal}")
        for i, arg in enumerate(entry["args"]):  # bytes (artifacts) go to files beside it
            if isinstance(arg, bytes):
                blob = self.journal / f"blob-{len(self.pending)}-{i}-{time.time_ns()}"
                blob.write_bytes(arg)
                entry["args"][i] = {"__blob__": str(blob)}
        self.pending.append(entry)
        with open(self.journal / "journal.jsonl", "a") as f:
            f.write(json.dumps(entry, default=str) + "\n")

    def _went_down(self, err: BaseException) -> None:
        if not self.warned:
            log.warning(
                "MLflow at %s is unreachable (%s); buffering writes in %s",
                self.inner.tracking_uri, str(err).splitlines()[0][:200], self.journal,
            )  # fmt: skip
            self.warned = True
            self.outages += 1
        self.next_try = self.clock() + self.delay
        self.delay = min(30.0, self.delay * 2)

    def flush(self, force: bool = False) -> int:
        """Replay the journal in order while MLflow answers; returns what is still pending."""
        if not self.pending or (not force and self.clock() < self.next_try):
            return len(self.pending)
        while self.pending:
            entry = self.pending[0]
            args = [
                Path(a["__blob__"]).read_bytes() if isinstance(a, dict) and "__blob__" in a else a
                for a in entry["args"]
            ]
            try:
                getattr(self.inner, entry["op"])(*args, **entry["kwargs"])
            except Exception as err:
                if not transient(err):
                    raise
                self._went_down(err)
                return len(self.pending)
            self.pending.pop(0)
        log.warning("MLflow at %s is back; buffered writes flushed", self.inner.tracking_uri)
        (self.journal / "journal.jsonl").unlink(missing_ok=True)
        self.warned, self.delay = False, 1.0
        return 0

    def close(self, timeout: float = 600.0) -> None:
        """Flush everything or fail loudly (nothing is dropped silently)."""
        deadline = self.clock() + timeout
        while self.flush(force=True):
            if self.clock() >= deadline:
                raise TrackingError(
                    f"{len(self.pending)} tracking writes could not reach MLflow at "
                    f"{self.inner.tracking_uri} in {timeout:.0f}s; they are kept in {self.journal}"
                )
            time.sleep(min(5.0, self.delay))

    def call_counts(self) -> dict[str, int]:
        return dict(self.calls)

    def status(self) -> dict[str, Any]:
        return {
            "pending": len(self.pending),
            "down": self.warned,
            "outages": self.outages,
            "fatal": self.fatal,
        }

    # -- reads: retried, since the sweep cannot go on without them --------------------------
    def _read(self, op: str, *args: Any, **kwargs: Any) -> Any:
        self.calls[op] = self.calls.get(op, 0) + 1
        deadline = self.clock() + self.read_timeout
        while True:
            self.flush(force=True)  # reads must see every earlier write
            try:
                if not self.pending:
                    return getattr(self.inner, op)(*args, **kwargs)
            except Exception as err:
                if not transient(err) or self.clock() >= deadline:
                    raise
                self._went_down(err)
            if self.clock() >= deadline:
                raise TrackingError(f"MLflow at {self.inner.tracking_uri} unreachable for {op}")
            time.sleep(min(5.0, self.delay))

    def find(self, tags: Mapping[str, str], status: str | None = "FINISHED") -> list[dict]:
        return self._read("find", tags, status)

    def search(self, filter_string: str = "") -> list[dict]:
        return self._read("search", filter_string)

    def load_dict(self, run_id: str, artifact_path: str) -> dict[str, Any]:
        return self._read("load_dict", run_id, artifact_path)

    def artifact_uri(self, key: str, path: str) -> str:
        return self._read("artifact_uri", key, path)

    def run_id(self, key: str) -> str:
        return self._read("run_id", key)


def _writer(op: str) -> Callable[..., Any]:
    def method(self: BufferedTracker, *args: Any, **kwargs: Any) -> Any:
        return self._write(op, *args, **kwargs)

    method.__name__ = op
    method.__doc__ = f"``TrackingService.{op}``, journaled while MLflow is unreachable."
    return method


for _op in BufferedTracker.WRITES:
    setattr(BufferedTracker, _op, _writer(_op))
