"""Everything MLflow: naming, tags, nested runs, batched metrics, artifacts.

Nothing else in the project imports mlflow. One experiment per sweep; a parent run per
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
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME

_MAX_PARAMS_PER_BATCH = 100
# Artifact downloads (leaderboard rebuilds) should not draw progress bars into sweep logs.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


#: Tag holding our key of a run (``task:method``, ``task:method/trial_id``): resume finds it.
RUN_KEY = "petl.key"


def default_tracking_uri(out_dir: Path) -> str:
    """SQLite database under the sweep's output directory (absolute: workers may cd)."""
    return f"sqlite:///{(Path(out_dir).resolve() / 'mlflow.db')}"


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


def _now_ms() -> int:
    return int(time.time() * 1000)


class TrackingService:
    """A thin, stateful MLflow client for one sweep (one experiment)."""

    def __init__(
        self,
        tracking_uri: str,
        experiment: str,
        artifact_root: str | None = None,
        create: bool = True,
        resume: bool = False,
    ):
        self.client = MlflowClient(tracking_uri=tracking_uri)
        self.tracking_uri = tracking_uri
        found = self.client.get_experiment_by_name(experiment)
        if found is None and not create:
            raise ValueError(f"no MLflow experiment {experiment!r} at {tracking_uri}")
        if found is None:
            self.experiment_id = self.client.create_experiment(
                experiment, artifact_location=artifact_root
            )
        else:
            self.experiment_id = found.experiment_id
        self.runs: dict[str, str] = {}
        #: Resuming: ``start_run`` continues a RUNNING run with the same key (crash leftover).
        self.resume = resume

    # -- runs -----------------------------------------------------------------------------
    def start_run(
        self,
        key: str,
        name: str,
        tags: Mapping[str, Any],
        params: Mapping[str, Any] | None = None,
        parent: str | None = None,
    ) -> str:
        """Create a run under our ``key``; ``parent`` is another key (nesting)."""
        all_tags = {MLFLOW_RUN_NAME: name, RUN_KEY: key, **{k: str(v) for k, v in tags.items()}}
        if self.resume:
            left = self.find({RUN_KEY: key}, status="RUNNING")
            if left:
                self.runs[key] = left[0]["run_id"]
                return left[0]["run_id"]
        if parent is not None:
            all_tags[MLFLOW_PARENT_RUN_ID] = self.runs[parent]
        run = self.client.create_run(self.experiment_id, tags=all_tags, run_name=name)
        self.runs[key] = run.info.run_id
        if params:
            self.log_params(key, params)
        return run.info.run_id

    def log_params(self, key: str, params: Mapping[str, Any]) -> None:
        flat = [Param(k, str(v)) for k, v in flatten(params).items()]
        for i in range(0, len(flat), _MAX_PARAMS_PER_BATCH):
            self.client.log_batch(self.runs[key], params=flat[i : i + _MAX_PARAMS_PER_BATCH])

    def log_metrics(self, key: str, metrics: Mapping[str, float], step: int) -> None:
        """All numeric metrics of one step in a single ``log_batch`` call."""
        ts = _now_ms()
        batch = [
            Metric(k, float(v), ts, step)
            for k, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)
        ]
        # MLflow stores NaN, but keep inf out: it breaks the UI's charts.
        batch = [m for m in batch if not math.isinf(m.value)]
        if batch:
            self.client.log_batch(self.runs[key], metrics=batch)

    def set_tags(self, key: str, tags: Mapping[str, Any]) -> None:
        self.client.log_batch(self.runs[key], tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def end_run(self, key: str, status: str = "FINISHED", tags: Mapping[str, Any] | None = None):
        if tags:
            self.set_tags(key, tags)
        self.client.set_terminated(self.runs[key], status=status)

    def log_artifact(self, key: str, path: Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.runs[key], str(path), artifact_path)

    def log_artifact_bytes(
        self, key: str, filename: str, data: bytes, artifact_path: str | None = None
    ) -> None:
        """Log in-memory content as a file: callers on other nodes have no shared disk."""
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / filename
            path.write_bytes(data)
            self.client.log_artifact(self.runs[key], str(path), artifact_path)

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
        self.client.log_dict(self.runs[key], dict(data), filename)

    def artifact_uri(self, key: str, path: str) -> str:
        """The full URI of an artifact of the run ``key`` (downloadable from any node)."""
        return f"{self.client.get_run(self.runs[key]).info.artifact_uri}/{path}"

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

    def mark_stale(self, tags: Mapping[str, str]) -> int:
        """End RUNNING runs with these tags (left by a crashed sweep) as KILLED."""
        stale = self.find(tags, status="RUNNING")
        for run in stale:
            self.client.set_terminated(run["run_id"], status="KILLED")
        return len(stale)

    def end_lost_trials(self, study: str, kept: set[str]) -> int:
        """After a resume: end trial runs the restored experiment does not know (a trial
        started just before the crash, before Ray Tune saved its state) as KILLED/lost."""
        lost = [
            run
            for run in self.find({"study": study, "stage": "tune"}, status="RUNNING")
            if run["tags"].get("trial_id") and run["tags"]["trial_id"] not in kept
        ]
        for run in lost:
            self.client.set_tag(run["run_id"], "outcome", "lost")
            self.client.set_terminated(run["run_id"], status="KILLED")
        return len(lost)

    def metric_history(self, run_id: str, name: str) -> list[tuple[int, float]]:
        return [(m.step, m.value) for m in self.client.get_metric_history(run_id, name)]
