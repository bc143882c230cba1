"""The tracker's write journal, without a server: an outage is planted in the client."""

from __future__ import annotations

import pytest

from tuner.tracking.buffered import BufferedTracker, TrackingError, outage_news, transient


class Outage:
    """Makes the tracker's MlflowClient raise like an unreachable server while ``down``."""

    def __init__(self, client) -> None:
        self.client, self.down = client, False

    def __getattr__(self, name):
        real = getattr(self.client, name)

        def call(*args, **kwargs):
            if self.down:
                raise ConnectionError("Max retries exceeded: connection refused")
            return real(*args, **kwargs)

        return call


@pytest.fixture
def tracker(tmp_path):
    now = [0.0]
    t = BufferedTracker(
        f"sqlite:///{tmp_path / 'm.db'}", "buf", journal=tmp_path / "journal",
        read_timeout=0.0, clock=lambda: now[0],
    )  # fmt: skip
    t.inner.client = outage = Outage(t.inner.client)
    return t, outage, now


def test_writes_during_an_outage_arrive_in_order_afterwards(tracker):
    t, outage, now = tracker
    t.start_run("a", "a", {"stage": "tune"})
    outage.down = True
    t.log_metrics("a", {"val/acc": 0.5}, 1)
    t.start_run("b", "b", {"stage": "final"}, start_time=100.0)  # created while down
    t.log_artifact_bytes("b", "x.bin", b"payload")
    t.end_run("b", "FINISHED", None, end_time=112.5)
    assert t.status() == {"pending": 4, "down": True, "outages": 1, "fatal": ""}
    assert (t.journal / "journal.jsonl").read_text().count("\n") == 4
    now[0] += 60
    t.log_metrics("a", {"val/acc": 0.6}, 2)  # still down: queued behind the others
    assert t.status()["pending"] == 5
    outage.down = False
    t.close(timeout=1)
    assert t.status() == {"pending": 0, "down": False, "outages": 1, "fatal": ""}
    client = t.inner.client.client
    history = client.get_metric_history(t.inner.runs["a"], "val/acc")
    assert [(m.step, m.value) for m in history] == [(1, 0.5), (2, 0.6)]
    run_b = client.get_run(t.inner.runs["b"])
    assert (run_b.info.end_time - run_b.info.start_time) == 12_500
    (artifact,) = client.list_artifacts(t.inner.runs["b"])
    assert artifact.path == "x.bin"
    assert not (t.journal / "journal.jsonl").exists()


def test_close_fails_loudly_when_mlflow_never_comes_back(tracker):
    t, outage, _ = tracker
    t.start_run("a", "a", {})
    outage.down = True
    t.log_metrics("a", {"val/acc": 0.5}, 1)
    with pytest.raises(TrackingError, match="1 tracking writes could not reach MLflow"):
        t.close(timeout=0)


def test_only_transport_failures_are_buffered(tracker):
    t, _, _ = tracker
    with pytest.raises(KeyError):
        t.log_metrics("no-such-run", {"x": 1.0}, 0)  # a bug, not an outage: raised
    assert transient(ConnectionError("refused")) and not transient(ValueError("bad param"))


def test_what_is_transient_is_read_from_the_http_status_not_the_message():
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import (
        INVALID_PARAMETER_VALUE,
        REQUEST_LIMIT_EXCEEDED,
        RESOURCE_DOES_NOT_EXIST,
        TEMPORARILY_UNAVAILABLE,
    )

    assert transient(MlflowException("busy", error_code=TEMPORARILY_UNAVAILABLE))  # 503
    assert transient(MlflowException("slow down", error_code=REQUEST_LIMIT_EXCEEDED))  # 429
    assert transient(MlflowException("API request failed with exception: refused"))  # 500
    # the words of an outage in a 4xx message do not make it one
    timed_out = MlflowException("Connection timed out", error_code=INVALID_PARAMETER_VALUE)
    assert not transient(timed_out)
    assert not transient(MlflowException("no run", error_code=RESOURCE_DOES_NOT_EXIST))


def test_an_outage_between_two_checks_is_still_reported():
    """The driver polls every few seconds; a short outage must not vanish between polls."""
    lines, seen, down = outage_news({"down": False, "outages": 1}, 0, False)
    assert [line.split(":")[0] for line in lines] == [
        "MLflow is unreachable", "MLflow is reachable again"
    ]  # fmt: skip
    assert (seen, down) == (1, False)
    lines, seen, down = outage_news({"down": True, "outages": 2}, seen, down)
    assert len(lines) == 1 and "unreachable" in lines[0] and (seen, down) == (2, True)
    assert outage_news({"down": True, "outages": 2}, seen, down) == ([], 2, True)  # said once
    lines, seen, down = outage_news({"down": False, "outages": 2}, seen, down)
    assert len(lines) == 1 and "reachable again" in lines[0] and not down
