"""Everything MLflow: naming, tags, nested runs, batched metrics, artifacts.

Only the tracking layer imports mlflow. One experiment per sweep; a parent run per
study (task × method) with a child run per trial; final runs and a ``leaderboard`` run.
Each epoch's metrics go out in one ``log_batch`` call (Ray's ``MLflowLoggerCallback`` makes
one call per metric and flat runs). ``TrackingService`` holds run ids by our own keys, so a
single instance (in Ray: one actor) can serve every study of a sweep.

The embedded default store is SQLite under the output directory (MLflow 3 refuses a
plain file store unless told otherwise), with artifacts beside it.
"""

from __future__ import annotations

import math
import os
import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME

from tuner.tracking.names import PARENT_RUN_TAG, RUN_KEY
from tuner.tracking.store import ensure_store

# MLflow's log_batch limits (mlflow.utils.validation)
_MAX_PARAMS_PER_BATCH = _MAX_TAGS_PER_BATCH = 100
_MAX_ENTITIES_PER_BATCH = 1000
assert PARENT_RUN_TAG == MLFLOW_PARENT_RUN_ID, "MLflow renamed its nesting tag"
# Artifact downloads (leaderboard rebuilds) should not draw progress bars into sweep logs.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


#: The experiment tag from which MLflow's UI picks its view. Without it MLflow 3 opens a
#: sweep's experiment on the GenAI overview (traces, token usage); model training opens it
#: on the runs table, where the studies and trials are.
EXPERIMENT_KIND = "mlflow.experimentKind"
MODEL_TRAINING = "custom_model_development"


def fetch_artifact(uri: str, dest: Path) -> Path | None:
    """Download one artifact by its full URI to ``dest``; None when it cannot be had.

    Trials on a node without a shared cache file (SPT's sensitivity scores) use it; any
    failure means the caller recomputes, so errors are not raised.
    """
    from mlflow.artifacts import download_artifacts

    try:
        local = Path(download_artifacts(artifact_uri=uri, dst_path=str(dest.parent)))
    except Exception:
        return None
    if local != dest and local.exists():
        os.replace(local, dest)
    return dest if dest.exists() else None


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts to dotted keys: ``{"hp": {"lr": 1}}`` -> ``{"hp.lr": 1}``."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def now_ms() -> int:
    """MLflow's timestamps: integer milliseconds since the epoch."""
    return int(time.time() * 1000)


def numeric_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """What MLflow can chart: numbers, not bools; NaN kept, inf dropped (it breaks the UI's
    charts). The one filter of both the direct and the buffered tracker."""
    return {
        k: float(v)
        for k, v in metrics.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isinf(v)
    }


class TrackingService:
    """A thin, stateful MLflow client for one sweep (one experiment)."""

    def __init__(
        self,
        tracking_uri: str,
        experiment: str,
        artifact_root: str | None = None,
        create: bool = True,
    ):
        if create:
            ensure_store(tracking_uri)  # a new SQLite store: the migrated template, once
        self.client = MlflowClient(tracking_uri=tracking_uri)
        self.tracking_uri, self.experiment = tracking_uri, experiment
        found = self.client.get_experiment_by_name(experiment)
        if found is None and not create:
            raise ValueError(f"no MLflow experiment {experiment!r} at {tracking_uri}")
        if found is None:
            self.experiment_id = self.client.create_experiment(
                experiment, artifact_location=artifact_root, tags={EXPERIMENT_KIND: MODEL_TRAINING}
            )
        else:
            self.experiment_id = found.experiment_id
            if EXPERIMENT_KIND not in found.tags:  # older sweeps: open on the runs table too
                self.client.set_experiment_tag(self.experiment_id, EXPERIMENT_KIND, MODEL_TRAINING)
        self.runs: dict[str, str] = {}
        #: Keys of runs this client started or adopted and has not ended (for ``end_open``)
        self.open: set[str] = set()
        #: artifact URI of each run: from ``create_run``'s answer for a run created here (an
        #: upload then needs no ``get_run`` first), looked up once for an adopted one
        self.artifact_uris: dict[str, str] = {}

    # -- runs -----------------------------------------------------------------------------
    def start_run(
        self,
        key: str,
        name: str,
        tags: Mapping[str, Any],
        params: Mapping[str, Any] | None = None,
        parent: str | None = None,
        start_time: float | None = None,
    ) -> str:
        """Create a run under our ``key``; ``parent`` is another key (nesting).

        ``start_time`` (epoch seconds) backdates a run logged after the fact (a final
        retrain), so MLflow's Duration column and time axes show when it really ran.
        """
        all_tags = {MLFLOW_RUN_NAME: name, RUN_KEY: key, **{k: str(v) for k, v in tags.items()}}
        if parent is not None:
            all_tags[MLFLOW_PARENT_RUN_ID] = self.runs[parent]
        start_ms = None if start_time is None else int(start_time * 1000)
        run = self.client.create_run(
            self.experiment_id, start_time=start_ms, tags=all_tags, run_name=name
        )
        self.runs[key] = run.info.run_id
        self.artifact_uris[key] = run.info.artifact_uri
        self.open.add(key)
        if params:
            self.log_params(key, params)
        return run.info.run_id

    def ensure_run(
        self,
        key: str,
        name: str,
        tags: Mapping[str, Any],
        params: Mapping[str, Any] | None = None,
        parent: str | None = None,
    ) -> str:
        """The run ``key`` if this client already addresses it (adopted after a crash, or
        started earlier in this sweep), else a new one: a resumed trial continues its run."""
        if key in self.runs:
            return self.runs[key]
        return self.start_run(key, name, tags, params=params, parent=parent)

    def log_params(self, key: str, params: Mapping[str, Any]) -> None:
        flat = [Param(k, str(v)) for k, v in flatten(params).items()]
        for i in range(0, len(flat), _MAX_PARAMS_PER_BATCH):
            self.client.log_batch(self.runs[key], params=flat[i : i + _MAX_PARAMS_PER_BATCH])

    def log_metrics(self, key: str, metrics: Mapping[str, float], step: int) -> None:
        """All numeric metrics of one step in a single ``log_batch`` call."""
        ts = now_ms()
        batch = [Metric(k, v, ts, step) for k, v in numeric_metrics(metrics).items()]
        if batch:
            self.client.log_batch(self.runs[key], metrics=batch)

    def write_batch(
        self,
        key: str,
        metrics: Sequence[tuple[str, float, int, int]],
        params: Mapping[str, Any],
        tags: Mapping[str, Any],
    ) -> int:
        """A run's queued writes (metrics as ``(name, value, epoch ms, step)``, flat params,
        tags) in as few ``log_batch`` calls as MLflow takes: 1000 entities a call, of them at
        most 100 params and 100 tags. Returns the calls made."""
        left_m = [Metric(k, v, ts, step) for k, v, ts, step in metrics]
        left_p = [Param(k, str(v)) for k, v in params.items()]
        left_t = [RunTag(k, str(v)) for k, v in tags.items()]
        calls = 0
        while left_m or left_p or left_t:
            p, left_p = left_p[:_MAX_PARAMS_PER_BATCH], left_p[_MAX_PARAMS_PER_BATCH:]
            t, left_t = left_t[:_MAX_TAGS_PER_BATCH], left_t[_MAX_TAGS_PER_BATCH:]
            room = _MAX_ENTITIES_PER_BATCH - len(p) - len(t)
            m, left_m = left_m[:room], left_m[room:]
            self.client.log_batch(self.runs[key], metrics=m, params=p, tags=t)
            calls += 1
        return calls

    def set_tags(self, key: str, tags: Mapping[str, Any]) -> None:
        self.client.log_batch(self.runs[key], tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def end_run(
        self,
        key: str,
        status: str = "FINISHED",
        tags: Mapping[str, Any] | None = None,
        end_time: float | None = None,
    ) -> None:
        """End the run ``key``; ``end_time`` (epoch seconds) as for ``start_run``."""
        if tags:
            self.set_tags(key, tags)
        end_ms = None if end_time is None else int(end_time * 1000)
        self.client.set_terminated(self.runs[key], status=status, end_time=end_ms)
        self.open.discard(key)

    def adopt(self, key: str, run_id: str, status: str = "RUNNING") -> None:
        """Address an existing run (found by a search) by ``key`` from now on; a run that an
        interruption ended (``KILLED``) is set RUNNING again, since it continues."""
        self.runs[key] = run_id
        self.open.add(key)
        if status != "RUNNING":
            self.client.update_run(run_id, status="RUNNING")

    def end_open(self, status: str, tags: Mapping[str, Any]) -> int:
        """End every run this client started or adopted and has not ended (an interrupted
        sweep: ``KILLED``, ``outcome=interrupted``); returns how many."""
        ended = sorted(self.open)
        for key in ended:
            self.end_run(key, status, tags)
        return len(ended)

    def end_runs(self, run_ids: list[str], status: str, tags: Mapping[str, Any]) -> int:
        """End runs by id (leftovers of an earlier driver, found by a search)."""
        for run_id in run_ids:
            self.client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])
            self.client.set_terminated(run_id, status=status)
        return len(run_ids)

    def log_artifact(self, key: str, path: Path, artifact_path: str | None = None) -> None:
        """Upload one file straight to the run's artifact store: at the end of a wide sweep
        every trial uploads in the same second, and MLflow's client would first ask the
        server for each run's artifact location (one request in four of a trial's last
        writes)."""
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

        repo = get_artifact_repository(self._artifact_root(key), tracking_uri=self.tracking_uri)
        repo.log_artifact(str(path), artifact_path)

    def _artifact_root(self, key: str) -> str:
        if key not in self.artifact_uris:  # adopted: asked for once
            self.artifact_uris[key] = self.client.get_run(self.runs[key]).info.artifact_uri
        return self.artifact_uris[key]

    def log_artifact_bytes(
        self, key: str, filename: str, data: bytes, artifact_path: str | None = None
    ) -> None:
        """Log in-memory content as a file: callers on other nodes have no shared disk."""
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / filename
            path.write_bytes(data)
            self.log_artifact(key, path, artifact_path)

    def log_dataset(self, key: str, record: Mapping[str, Any], context: str) -> None:
        """The task data as an MLflow dataset input (name, digest, split sizes)."""
        import json

        from mlflow.entities import Dataset, DatasetInput, InputTag

        dataset = Dataset(
            name=str(record["name"]),
            digest=str(record["digest"]),
            source_type="local",
            source=json.dumps({"uri": record.get("source", "")}),
            profile=json.dumps(record.get("splits", {})),
        )
        tag = InputTag(key="mlflow.data.context", value=context)
        self.client.log_inputs(self.runs[key], [DatasetInput(dataset, tags=[tag])])

    def log_dict(self, key: str, data: Mapping[str, Any], filename: str) -> None:
        """``data`` as a JSON file (MLflow's ``log_dict`` writes the same, indent 2)."""
        import json

        folder, _, name = filename.rpartition("/")
        body = json.dumps(dict(data), indent=2).encode()
        self.log_artifact_bytes(key, name, body, folder or None)

    def artifact_uri(self, key: str, path: str) -> str:
        """The full URI of an artifact of the run ``key`` (downloadable from any node)."""
        return f"{self._artifact_root(key)}/{path}"

    def run_id(self, key: str) -> str:
        return self.runs[key]

    # -- reading back ---------------------------------------------------------------------
    def search(self, filter_string: str = "") -> list[dict[str, Any]]:
        """Runs of this experiment as plain dicts (tags, params, latest metrics)."""
        rows, token = [], None
        while True:
            page = self.client.search_runs(
                [self.experiment_id], filter_string, max_results=1000, page_token=token
            )
            for run in page:
                rows.append(
                    {
                        "run_id": run.info.run_id,
                        "status": run.info.status,
                        # epoch milliseconds; end_time is None while the run is RUNNING
                        "start_time": run.info.start_time,
                        "end_time": run.info.end_time,
                        "tags": dict(run.data.tags),
                        "params": dict(run.data.params),
                        "metrics": dict(run.data.metrics),
                    }
                )
            token = page.token
            if not token:
                return rows

    def find(
        self, tags: Mapping[str, str], status: str | None = "FINISHED"
    ) -> list[dict[str, Any]]:
        """Runs whose tags all match (and, by default, that finished), newest first."""
        clauses = [f"tags.`{k}` = '{v}'" for k, v in tags.items()]
        if status:
            clauses.append(f"attributes.status = '{status}'")
        return self.search(" and ".join(clauses))

    def download(self, run_id: str, artifact_path: str, dst: Path) -> Path:
        """Fetch one artifact of a run into ``dst`` (works for local and server stores)."""
        from mlflow.artifacts import download_artifacts

        dst.mkdir(parents=True, exist_ok=True)
        return Path(
            download_artifacts(
                run_id=run_id,
                artifact_path=artifact_path,
                dst_path=str(dst),
                tracking_uri=self.tracking_uri,
            )
        )

    def load_dict(self, run_id: str, artifact_path: str) -> dict[str, Any]:
        import json
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            return json.loads(self.download(run_id, artifact_path, Path(tmp)).read_text())

    def fail_run(
        self, key: str, name: str, tags: Mapping[str, Any], error: str, detail: str
    ) -> str:
        """End the run ``key`` as FAILED with its error: the first line as the ``error`` tag
        (visible in the runs table), the whole traceback as ``error.txt``. Creates the run if
        the failure came before it existed."""
        if key not in self.runs:
            self.start_run(key, name, tags)
        self.set_tags(key, {"error": error[:500], "outcome": "failed"})
        self.log_artifact_bytes(key, "error.txt", detail.encode())
        self.end_run(key, "FAILED")
        return self.runs[key]

    def metric_history(self, run_id: str, name: str) -> list[tuple[int, float]]:
        return [(m.step, m.value) for m in self.client.get_metric_history(run_id, name)]


def check_access(tracking_uri: str) -> None:
    """Fail before the sweep, with what to do, when MLflow refuses our credentials.

    An MLflow server with basic auth answers 401/403; inside the sweep that would surface as a
    dead tracker actor. Transport failures are left to the tracker, which buffers them."""
    from tuner.tracking.buffered import TrackingError

    try:
        MlflowClient(tracking_uri=tracking_uri).search_experiments(max_results=1)
    except MlflowException as err:
        code = re.search(r"error code (401|403)", str(err))
        if not code:
            raise
        who = os.environ.get("MLFLOW_TRACKING_USERNAME")
        hint = (
            f"the credentials of user {who!r} (MLFLOW_TRACKING_USERNAME/PASSWORD) were refused"
            if who
            else "it requires sign-in: set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"
        )
        raise TrackingError(
            f"MLflow at {tracking_uri} answered HTTP {code.group(1)}: {hint}"
        ) from None
