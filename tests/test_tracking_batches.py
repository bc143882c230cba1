"""The tracker's merging and concurrency, counted at the MLflow client (never timed).

A run's writes queued between two flushes go out as one ``log_batch`` (chunked at MLflow's
limits), different runs are written at once, each run in its own order, a child run after
its parent, and an outage with merging on loses nothing.
"""

from __future__ import annotations

import threading

import pytest

from tuner.tracking.buffered import BufferedTracker, TrackingError
from tuner.tracking.client import TrackingService, fetch_artifact
from tuner.tracking.names import PARENT_RUN_TAG


class Counting:
    """Wraps the tracker's MlflowClient: records each call that succeeded as (method, run id,
    sizes); raises like an unreachable server while ``down``; ``gate`` (a barrier) holds
    the first ``log_batch`` of each run until the other run's is in flight too."""

    def __init__(self, client) -> None:
        self.client, self.down, self.gate = client, False, None
        self.calls: list[tuple] = []
        self.gated: set[str] = set()
        self.lock = threading.Lock()

    def __getattr__(self, name):
        real = getattr(self.client, name)

        def call(*args, **kwargs):
            self.refuse_if_down()
            run = args[0] if args and isinstance(args[0], str) else None
            if name == "log_batch" and self.gate is not None and run not in self.gated:
                self.gated.add(run)
                self.gate.wait()  # both runs' writers must be here at once
            out = real(*args, **kwargs)
            sizes = tuple(len(kwargs.get(k) or ()) for k in ("metrics", "params", "tags"))
            with self.lock:
                self.calls.append((name, run, sizes))
            return out

        return call

    def refuse_if_down(self) -> None:
        if self.down:
            raise ConnectionError("Max retries exceeded: connection refused")

    def made(self, name: str, run: str | None = None) -> list[tuple]:
        return [c for c in self.calls if c[0] == name and (run is None or c[1] == run)]


@pytest.fixture
def tracker(tmp_path):
    made = []

    def make(workers: int = 1) -> tuple[BufferedTracker, Counting]:
        t = BufferedTracker(
            f"sqlite:///{tmp_path / 'm.db'}", f"batches-{len(made)}",
            journal=tmp_path / f"journal-{len(made)}", flush_every=None, workers=workers,
        )  # fmt: skip
        t.inner.client = counting = Counting(t.inner.client)
        upload = t.inner.log_artifact  # goes to the artifact store, not through the client

        def counted_upload(key, path, artifact_path=None):
            counting.refuse_if_down()
            upload(key, path, artifact_path)
            with counting.lock:
                counting.calls.append(("log_artifact", t.inner.runs[key], (0, 0, 0)))

        t.inner.log_artifact = counted_upload
        made.append(t)
        return t, counting

    return make


def _history(t: BufferedTracker, key: str, metric: str) -> list[tuple[int, float]]:
    return t.inner.metric_history(t.inner.runs[key], metric)


def test_epochs_queued_between_flushes_go_out_as_one_log_batch(tracker):
    t, client = tracker()
    run = t.start_run("a", "a", {"stage": "tune"}, params={"lr": 0.1})
    t.flush()
    assert [c[0] for c in client.calls] == ["create_run", "log_batch"]  # the params
    client.calls.clear()
    for epoch in range(1, 11):
        t.log_metrics("a", {"val/acc": epoch / 10, "train/loss": 1 / epoch}, epoch)
    t.set_tags("a", {"phase": "half"})
    t.log_params("a", {"wd": 0.01})
    assert client.calls == []  # queued, nothing written yet
    t.flush()
    assert client.calls == [("log_batch", run, (20, 1, 1))]
    for epoch in (11, 12):
        t.log_metrics("a", {"val/acc": 0.99}, epoch)
    t.end_run("a", "FINISHED", {"outcome": "completed"})
    t.close()
    assert [c[:2] for c in client.calls[1:]] == [("log_batch", run), ("set_terminated", run)]
    assert client.calls[1][2] == (2, 0, 1)  # the last epochs and the end tags, together
    assert [s for s, _ in _history(t, "a", "val/acc")] == list(range(1, 13))
    data = t.inner.client.get_run(run).data
    assert data.params == {"lr": "0.1", "wd": "0.01"}
    assert data.tags["phase"] == "half" and data.tags["outcome"] == "completed"


def test_a_large_backlog_is_chunked_at_mlflows_limits(tracker):
    t, client = tracker()
    run = t.start_run("a", "a", {})
    t.flush()
    client.calls.clear()
    t.log_params("a", {f"p{i}": i for i in range(250)})
    t.set_tags("a", {f"t{i}": i for i in range(150)})
    for epoch in range(200):
        t.log_metrics("a", {f"m{j}": float(j) for j in range(10)}, epoch)
    t.close()
    sizes = [c[2] for c in client.made("log_batch", run)]
    assert sizes == [(800, 100, 100), (850, 100, 50), (350, 50, 0)]
    assert all(m + p + g <= 1000 and p <= 100 and g <= 100 for m, p, g in sizes)
    data = t.inner.client.get_run(run).data
    assert len(data.params) == 250 and sum(k.startswith("t") for k in data.tags) == 150
    assert len(_history(t, "a", "m9")) == 200


def test_two_runs_are_written_at_once_each_in_its_order(tracker):
    t, client = tracker(workers=2)
    runs = {key: t.start_run(key, key, {}) for key in ("a", "b")}
    t.flush()
    client.calls.clear()
    client.gate = threading.Barrier(2, timeout=120)  # a lone writer breaks it: refused
    for key in runs:
        for epoch in (1, 2, 3):
            t.log_metrics(key, {"val/acc": epoch / 10}, epoch)
        t.log_artifact_bytes(key, "result.json", b'{"ok": true}')
        t.log_metrics(key, {"val/acc": 0.4}, 4)
        t.end_run(key, "FINISHED", {"outcome": "completed"})
    t.close()  # raises if any write was refused (a broken barrier would be)
    assert not client.gate.broken
    for key, run in runs.items():
        # the epochs and the end tags overtake the artifact, never the end of the run
        assert [(c[0], c[2]) for c in client.calls if c[1] == run] == [
            ("log_batch", (4, 0, 1)),
            ("log_artifact", (0, 0, 0)),
            ("set_terminated", (0, 0, 0)),
        ]
        assert [s for s, _ in _history(t, key, "val/acc")] == [1, 2, 3, 4]


def test_a_child_run_is_created_after_its_parent(tracker):
    t, client = tracker(workers=4)
    t.ensure_run("study", "study", {"stage": "tune"})  # queued, not waited for
    for i in range(6):
        t.ensure_run(f"trial-{i}", f"trial-{i}", {"stage": "tune"}, parent="study")
        t.log_metrics(f"trial-{i}", {"val/acc": 0.5}, 1)
    t.close()
    parent = t.inner.runs["study"]
    for i in range(6):
        run = t.inner.client.get_run(t.inner.runs[f"trial-{i}"])
        assert run.data.tags[PARENT_RUN_TAG] == parent
    assert len(client.made("create_run")) == 7
    with pytest.raises(KeyError):
        t.ensure_run("orphan", "orphan", {}, parent="no-such-study")


def test_an_outage_with_merging_on_loses_nothing(tracker):
    t, client = tracker(workers=2)
    runs = {key: t.start_run(key, key, {}) for key in ("a", "b")}
    for epoch in (1, 2, 3):
        for key in runs:
            t.log_metrics(key, {"val/acc": epoch / 10}, epoch)
        t.flush()
    assert len(client.made("log_batch")) == 6
    client.down = True
    for epoch in range(4, 11):
        for key in runs:
            t.log_metrics(key, {"val/acc": epoch / 10}, epoch)
    for key in runs:
        t.end_run(key, "FINISHED")
    assert t.status() == {"pending": 16, "down": True, "outages": 1, "fatal": ""}
    assert (t.journal / "journal.jsonl").read_text().count("\n") == 16
    client.down = False
    t.close(timeout=600)
    assert t.status() == {"pending": 0, "down": False, "outages": 1, "fatal": ""}
    for key, run in runs.items():
        # epochs 4-10, queued during the outage, in one call per run on replay
        assert [c[2] for c in client.made("log_batch", run)][3:] == [(7, 0, 0)]
        assert len(client.made("set_terminated", run)) == 1
        assert [s for s, _ in _history(t, key, "val/acc")] == list(range(1, 11))
        assert t.inner.client.get_run(run).info.status == "FINISHED"
    assert not (t.journal / "journal.jsonl").exists()


def test_a_refused_write_leaves_the_rest_of_its_batch_in_and_close_says_so(tracker):
    t, _ = tracker()
    t.start_run("a", "a", {}, params={"lr": 0.1})
    t.flush()
    t.log_metrics("a", {"val/acc": 0.1}, 1)
    t.log_params("a", {"lr": 0.2})  # MLflow refuses a changed param (400)
    t.log_metrics("a", {"val/acc": 0.2}, 2)
    with pytest.raises(TrackingError, match=r"refused 1 tracking writes.*log_params a"):
        t.close()
    assert [s for s, _ in _history(t, "a", "val/acc")] == [1, 2]
    assert t.status()["pending"] == 0


def test_a_dataset_shared_by_two_runs_is_logged_one_run_at_a_time(tracker):
    """Studies of one task log the same dataset (an experiment-wide entity): two writers
    creating it at once make MLflow refuse one (a unique-key race on PostgreSQL)."""
    t, client = tracker(workers=2)
    for key in ("a", "b"):
        t.start_run(key, key, {})
    t.flush()
    inside, peak, second, lock = [0], [0], threading.Event(), threading.Lock()
    real = client.client.log_inputs

    def log_inputs(*args, **kwargs):
        with lock:
            inside[0] += 1
            peak[0] = max(peak[0], inside[0])
        if inside[0] == 1:
            second.wait(timeout=2)  # a second writer let in now would be seen above
        else:
            second.set()
        try:
            return real(*args, **kwargs)
        finally:
            with lock:
                inside[0] -= 1

    client.client.log_inputs = log_inputs
    record = {"name": "synth/count", "digest": "abc123", "splits": {"train": 800}}
    for key in ("a", "b"):
        t.log_dataset(key, record, "tune")
    t.close()  # raises if MLflow refused either
    assert peak[0] == 1
    for key in ("a", "b"):
        (dataset,) = t.inner.client.get_run(t.inner.runs[key]).inputs.dataset_inputs
        assert dataset.dataset.digest == "abc123"


def test_a_run_created_here_uploads_without_asking_where_its_artifacts_live(tmp_path):
    """``create_run``'s answer carries the run's artifact location, so an upload (a JSON
    dict, bytes, a file's URI) needs no ``get_run`` first; a run adopted from another driver
    is looked up once, for all its uploads."""
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    service = TrackingService(uri, "artifacts", artifact_root=str(tmp_path / "store"))
    service.client = counting = Counting(service.client)
    run_id = service.start_run("trial", "trial", {"stage": "tune"})
    service.log_dict("trial", {"best": 0.75, "trials": [1, 2]}, "summary.json")
    service.log_artifact_bytes("trial", "error.txt", b"CUDA OOM", "logs")
    location = service.artifact_uri("trial", "logs/error.txt")
    assert [c[0] for c in counting.calls] == ["create_run"]  # no get_run, no client upload
    assert fetch_artifact(location, tmp_path / "got" / "error.txt").read_bytes() == b"CUDA OOM"
    assert service.load_dict(run_id, "summary.json") == {"best": 0.75, "trials": [1, 2]}

    adopting = TrackingService(uri, "artifacts")
    adopting.client = counted = Counting(adopting.client)
    adopting.adopt("trial", run_id)
    adopting.log_artifact_bytes("trial", "more.txt", b"resumed")
    adopting.log_dict("trial", {"resumed": True}, "logs/resumed.json")
    assert [c[0] for c in counted.calls] == ["get_run"]  # once, then straight to the store
    names = {a.path for a in service.client.list_artifacts(run_id)}
    assert names == {"summary.json", "logs", "more.txt"}
    assert adopting.load_dict(run_id, "logs/resumed.json") == {"resumed": True}
