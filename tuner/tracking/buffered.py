"""The sweep's tracker: every MLflow write queued, merged per run, written concurrently,
and kept on disk through outages.

Every MLflow write of a sweep goes through one tracker (in Ray: one actor, whose calls run
one at a time, in the order each caller sent them). At cluster scale hundreds of trials
report an epoch a second each, more than one serial MLflow client can write; so a write is
queued and the call returns at once (``tuner.tracking.writer`` writes it: a run's queued
epochs as one ``log_batch``, different runs at once, each run in its own order, and an
on-disk journal while MLflow is away). ``start_run`` waits for its run to exist (it returns
the id); reads (resume checks, artifact URIs) first wait until every earlier write is in,
and retry until ``read_timeout``. Runs are addressed by our keys, not MLflow ids, so a run
created during an outage's replay gets every write meant for it. It warns once when MLflow
goes away and once when it is back; ``close`` writes what is left and raises
``TrackingError`` (the sweep fails loudly) if it cannot, or if MLflow refused a write.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from tenacity import Retrying, retry_if_exception, retry_if_result, wait_exponential

from tuner.tracking.client import TrackingService, now_ms, numeric_metrics
from tuner.tracking.errors import Behind, TrackingError, transient
from tuner.tracking.lanes import Entry
from tuner.tracking.writer import MAX_PENDING, Writer

__all__ = ["MAX_PENDING", "BufferedTracker", "TrackingError", "transient"]


class BufferedTracker:
    """``TrackingService``'s interface (what the sweep calls), queued, merged and journaled.

    ``workers``: writer threads (default 8 for an HTTP server, 1 for a local SQLite store,
    which takes one writer at a time anyway); ``flush_every``: seconds between flushes
    (None: only ``flush``, ``status``, reads and ``close`` write, as the tests want)."""

    def __init__(
        self,
        *args: Any,
        journal: Path,
        read_timeout: float = 900.0,
        clock: Callable[[], float] = time.monotonic,
        flush_every: float | None = 1.0,
        workers: int | None = None,
        **kwargs: Any,
    ) -> None:
        self.inner = TrackingService(*args, **kwargs)
        self.journal = Path(journal)
        self.writer = Writer(self.inner, self.journal, flush_every, workers)
        self.read_timeout, self.clock = read_timeout, clock
        self.known: set[str] = set()  # keys with a run (or one queued)
        self.open: set[str] = set()  # keys started or adopted and not ended (``end_open``)
        self.experiment_id = self.inner.experiment_id
        #: calls taken, by operation: what a sweep costs MLflow (the scale tests count them)
        self.calls: dict[str, int] = {}

    # -- the sweep's writes: queued, the call returns at once ------------------------------
    def start_run(
        self,
        key: str,
        name: str,
        tags: Mapping[str, Any],
        params: Mapping[str, Any] | None = None,
        parent: str | None = None,
        start_time: float | None = None,
    ) -> str | None:
        """Queue the run's creation and wait for it: its MLflow id, or None while MLflow is
        unreachable (the run is created on replay)."""
        self._count("start_run")
        entry = self._create(key, name, tags, params, parent, start_time)
        return self.writer.wait_for(entry)

    def ensure_run(
        self,
        key: str,
        name: str,
        tags: Mapping[str, Any],
        params: Mapping[str, Any] | None = None,
        parent: str | None = None,
    ) -> str | None:
        """As ``TrackingService.ensure_run`` (a resumed trial continues its run), without
        waiting: a trial's first call."""
        self._count("ensure_run")
        if key not in self.known:
            self._create(key, name, tags, params, parent, None)
        return self.inner.runs.get(key)

    def log_params(self, key: str, params: Mapping[str, Any]) -> None:
        self._count("log_params")
        self.writer.put("log_params", self._known(key), [key, dict(params)])

    def log_metrics(self, key: str, metrics: Mapping[str, float], step: int) -> None:
        """One step's metrics, stamped now; merged with the run's other queued writes."""
        self._count("log_metrics")
        values = numeric_metrics(metrics)
        if values:
            self.writer.put("log_metrics", self._known(key), [key, values, int(step)], ts=now_ms())

    def set_tags(self, key: str, tags: Mapping[str, Any]) -> None:
        self._count("set_tags")
        self.writer.put("set_tags", self._known(key), [key, {k: str(v) for k, v in tags.items()}])

    def end_run(
        self,
        key: str,
        status: str = "FINISHED",
        tags: Mapping[str, Any] | None = None,
        end_time: float | None = None,
    ) -> None:
        self._count("end_run")
        self._end(key, status, tags, end_time)

    def log_artifact_bytes(
        self, key: str, filename: str, data: bytes, artifact_path: str | None = None
    ) -> None:
        self._count("log_artifact_bytes")
        self.writer.put(
            "log_artifact_bytes", self._known(key), [key, filename, data, artifact_path]
        )

    def log_dataset(self, key: str, record: Mapping[str, Any], context: str) -> None:
        self._count("log_dataset")
        self.writer.put("log_dataset", self._known(key), [key, dict(record), context])

    def log_dict(self, key: str, data: Mapping[str, Any], filename: str) -> None:
        self._count("log_dict")
        self.writer.put("log_dict", self._known(key), [key, dict(data), filename])

    def fail_run(
        self, key: str, name: str, tags: Mapping[str, Any], error: str, detail: str
    ) -> str | None:
        self._count("fail_run")
        self.writer.put("fail_run", key, [key, name, dict(tags), error, detail])
        self.known.add(key)
        self.open.discard(key)
        return self.inner.runs.get(key)

    def has_run(self, key: str) -> bool:
        """Whether ``key`` has a run (started, queued or adopted), without asking MLflow."""
        self._count("has_run")
        return key in self.known

    def adopt(self, key: str, run_id: str, status: str = "RUNNING") -> None:
        self._count("adopt")
        self.writer.put("adopt", key, [key, run_id, status])
        self.known.add(key)
        self.open.add(key)

    def end_open(self, status: str, tags: Mapping[str, Any]) -> int:
        """End every run started or adopted and not ended; returns how many."""
        self._count("end_open")
        ended = sorted(self.open)
        for key in ended:
            self._end(key, status, tags, None)
        return len(ended)

    def end_runs(self, run_ids: list[str], status: str, tags: Mapping[str, Any]) -> int:
        self._count("end_runs")
        for run_id in run_ids:
            self.writer.put("end_runs", f"run-id:{run_id}", [[run_id], status, dict(tags)])
        return len(run_ids)

    def _count(self, op: str) -> None:
        self.calls[op] = self.calls.get(op, 0) + 1
        if self.writer.fatal:
            raise TrackingError(self.writer.fatal)

    def _known(self, key: str) -> str:
        if key not in self.known:
            raise KeyError(key)  # a bug in the caller, said at once, as MLflow's client would
        return key

    def _create(
        self,
        key: str,
        name: str,
        tags: Mapping[str, Any],
        params: Mapping[str, Any] | None,
        parent: str | None,
        start_time: float | None,
    ) -> Entry:
        if parent is not None:
            self._known(parent)
        kwargs = {"parent": parent, "start_time": start_time}
        entry = self.writer.put("start_run", key, [key, name, dict(tags)], kwargs)
        self.known.add(key)
        self.open.add(key)
        if params:
            self.writer.put("log_params", key, [key, dict(params)])
        return entry

    def _end(self, key: str, status: str, tags: Mapping[str, Any] | None, end_time: Any) -> None:
        if tags:  # goes out with the run's last metrics, in the same log_batch
            self.set_tags(key, tags)
        self.writer.put("end_run", self._known(key), [key, status], {"end_time": end_time})
        self.open.discard(key)

    # -- waiting for the writes -----------------------------------------------------------
    def flush(self, force: bool = False) -> int:
        """Write everything queued and wait for it; returns what is still pending (MLflow
        is away). ``force``: while MLflow is away, probe it now and wait for the answer."""
        return self.writer.flush(force)

    def close(self, timeout: float = 600.0) -> None:
        """Write everything or fail loudly (nothing is dropped silently)."""
        deadline = self.clock() + timeout
        pending = Retrying(
            retry=retry_if_result(bool),
            stop=lambda _: self.clock() >= deadline,
            wait=wait_exponential(multiplier=1, max=5),
            retry_error_callback=lambda state: state.outcome.result(),
        )(self.writer.flush, True)
        if self.writer.fatal:
            raise TrackingError(self.writer.fatal)
        if pending:
            raise TrackingError(
                f"{pending} tracking writes could not reach MLflow at "
                f"{self.inner.tracking_uri} in {timeout:.0f}s; they are kept in {self.journal}"
            )
        if self.writer.refused:
            refused = self.writer.refused
            raise TrackingError(
                f"MLflow at {self.inner.tracking_uri} refused {len(refused)} tracking "
                f"writes (logged as they happened); the first: {refused[0]}"
            )

    def call_counts(self) -> dict[str, int]:
        return dict(self.calls)

    def mlflow_calls(self) -> dict[str, int]:
        """MLflow requests made, by kind: what the merging saved (the bench reports it)."""
        with self.writer.lock:
            return dict(self.writer.sent)

    def backlog(self) -> dict[str, int]:
        """Writes queued and lanes being written now, without waiting (the load bench)."""
        with self.writer.lock:
            return {"queued": len(self.writer.lanes), "writing": len(self.writer.scheduled)}

    def status(self) -> dict[str, Any]:
        """After the queued writes are in (or MLflow is found away)."""
        w = self.writer
        pending = w.flush()
        return {"pending": pending, "down": w.warned, "outages": w.outages, "fatal": w.fatal}

    # -- reads: retried, since the sweep cannot go on without them --------------------------
    def _read(self, op: str, *args: Any) -> Any:
        self.calls[op] = self.calls.get(op, 0) + 1
        deadline = self.clock() + self.read_timeout

        def attempt() -> Any:
            if self.writer.flush(force=True):  # reads must see every earlier write
                raise Behind(f"MLflow at {self.inner.tracking_uri} unreachable for {op}")
            try:
                result = getattr(self.inner, op)(*args)
            except Exception as err:
                if transient(err):
                    self.writer.read_failed(err)
                raise
            self.writer.read_ok()
            return result

        return Retrying(
            retry=retry_if_exception(lambda e: isinstance(e, Behind) or transient(e)),
            stop=lambda _: self.clock() >= deadline,
            wait=wait_exponential(multiplier=1, max=5),
            reraise=True,
        )(attempt)

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

    def metric_history(self, run_id: str, name: str) -> list[tuple[int, float]]:
        return self._read("metric_history", run_id, name)


def outage_news(
    status: dict[str, Any], outages_seen: int, was_down: bool
) -> tuple[list[str], int, bool]:
    """What to tell the user about MLflow since the last check: (lines, outages, down).

    ``status`` is the tracker's (``down`` now, ``outages`` ever), so an outage that began
    and ended between two checks still gets both lines."""
    messages = []
    down = was_down
    if status["outages"] > outages_seen and not down:
        messages.append("MLflow is unreachable: buffering tracking writes (nothing is lost)")
        down = True
    if down and not status["down"]:
        messages.append("MLflow is reachable again: buffered writes flushed")
        down = False
    return messages, max(outages_seen, status["outages"]), down
