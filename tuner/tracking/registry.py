"""The MLflow side of delivery: log a delivered folder as a model, register it, aliases.

A final run gets a *logged model* (MLflow 3's model entity, linked to the run as its
output) holding a ``python_function`` model of the folder; a champion's logged model becomes
a version of the registered model ``<sweep>-<suite>-<task>``. Everything is idempotent: a
run that already has a packaged model reuses it, and a registered model that already has a
version of that logged model returns it. Only the alias this project owns is ever set.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import mlflow.pyfunc
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import LoggedModelOutput, LoggedModelStatus
from mlflow.exceptions import MlflowException
from mlflow.models import Model, ModelSignature
from mlflow.types import ColSpec, Schema

from tuner.tracking.pyfunc import IMAGE_COLUMN, PACKAGE

#: Tag of a logged model that holds a delivered folder (and the folder's format).
PACKAGE_TAG = "petl.package_format"
ENTRY = Path(__file__).with_name("pyfunc_entry.py")
# Model downloads (predict, serve) should not draw progress bars into the command's output.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def _client(tracking_uri: str) -> MlflowClient:
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def signature(label_names: bool) -> ModelSignature:
    """Input: one string column ``image`` (path, bytes or data URI); output: the class id,
    its name where the task has names, and its probability."""
    outputs = [ColSpec("long", "label")]
    outputs += [ColSpec("string", "label_name")] if label_names else []
    return ModelSignature(
        inputs=Schema([ColSpec("string", IMAGE_COLUMN)]),
        outputs=Schema([*outputs, ColSpec("double", "prob")]),
    )


def packaged_model(tracking_uri: str, run_id: str) -> str | None:
    """The id of the run's logged model that holds a delivered folder, if it has one."""
    client = _client(tracking_uri)
    run = client.get_run(run_id)
    for output in run.outputs.model_outputs if run.outputs else []:
        model = client.get_logged_model(output.model_id)
        if PACKAGE_TAG in model.tags and model.status == LoggedModelStatus.READY:
            return model.model_id
    return None


def log_package(
    tracking_uri: str,
    run_id: str,
    folder: Path,
    loader: str,
    example: pd.DataFrame,
    label_names: bool,
    package_format: int,
    requirements: list[str],
) -> tuple[str, bool]:
    """Log ``folder`` as the ``python_function`` model of run ``run_id``; (model id, whether
    it was created now). ``loader`` (``module:function``) builds the classifier from the
    folder when MLflow loads the model."""
    existing = packaged_model(tracking_uri, run_id)
    if existing:
        return existing, False
    client = _client(tracking_uri)
    run = client.get_run(run_id)
    logged = client.create_logged_model(
        experiment_id=run.info.experiment_id,
        name="model",
        source_run_id=run_id,
        tags={PACKAGE_TAG: str(package_format)},
    )
    quiet = logging.getLogger("mlflow.pyfunc")  # its "validating input example" line per model
    level = quiet.level
    quiet.setLevel(logging.WARNING)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(tmp) / "model"
            mlflow.pyfunc.save_model(
                str(local),
                python_model=str(ENTRY),
                artifacts={PACKAGE: str(folder)},
                model_config={"loader": loader},
                signature=signature(label_names),
                input_example=example,
                pip_requirements=requirements,
                mlflow_model=Model(model_id=logged.model_id, run_id=run_id),
            )
            client.log_model_artifacts(logged.model_id, str(local))
    except BaseException:
        client.finalize_logged_model(logged.model_id, LoggedModelStatus.FAILED)
        raise
    finally:
        quiet.setLevel(level)
    client.finalize_logged_model(logged.model_id, LoggedModelStatus.READY)
    client.log_outputs(run_id, [LoggedModelOutput(logged.model_id, step=0)])
    return logged.model_id, True


@dataclass(frozen=True)
class Version:
    """A registered model version as delivery reads it."""

    name: str
    version: str
    run_id: str
    model_id: str
    tags: dict[str, str]
    aliases: tuple[str, ...]


def _version(mv: Any) -> Version:
    return Version(
        mv.name,
        str(mv.version),
        mv.run_id or "",
        getattr(mv, "model_id", None) or "",
        dict(mv.tags or {}),
        tuple(mv.aliases or ()),
    )


def versions(tracking_uri: str, name: str) -> list[Version]:
    """Every version of registered model ``name`` (none if it does not exist)."""
    found = _client(tracking_uri).search_model_versions(f"name = '{name}'")
    return sorted((_version(v) for v in found), key=lambda v: int(v.version))


def register_version(
    tracking_uri: str, name: str, model_id: str, run_id: str, tags: dict[str, Any]
) -> tuple[Version, bool]:
    """A version of ``name`` for logged model ``model_id``: the existing one, or a new one
    with ``tags``; (version, whether it was created now)."""
    client = _client(tracking_uri)
    try:
        client.create_registered_model(name, description="petl-sweep: the champion of a task")
    except MlflowException as err:
        if err.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    for version in versions(tracking_uri, name):
        if version.model_id == model_id or version.tags.get("petl.model_id") == model_id:
            return version, False
    # the logged model's own location, not ``models:/<id>``: MLflow's SQL registry resolves
    # that URI through the process-global tracking URI, not this client's
    location = client.get_logged_model(model_id).artifact_location
    created = client.create_model_version(
        name,
        source=location,
        run_id=run_id,
        tags={"petl.model_id": model_id, **{k: str(v) for k, v in tags.items()}},
        model_id=model_id,
    )
    return _version(created), True


def alias_version(tracking_uri: str, name: str, alias: str) -> Version | None:
    """The version ``alias`` points at, or None."""
    try:
        return _version(_client(tracking_uri).get_model_version_by_alias(name, alias))
    except MlflowException:
        return None


def set_alias(tracking_uri: str, name: str, alias: str, version: str) -> None:
    _client(tracking_uri).set_registered_model_alias(name, alias, version)


def model_uri(name: str, alias: str) -> str:
    return f"models:/{name}@{alias}"


def download_model(tracking_uri: str, uri: str, dst: Path) -> Path:
    """A local copy of the MLflow model at ``uri`` (``models:/...``); returns its folder."""
    from mlflow.artifacts import download_artifacts

    dst.mkdir(parents=True, exist_ok=True)
    with global_uri(tracking_uri):  # ``models:/`` resolves through the global registry URI
        local = download_artifacts(artifact_uri=uri, dst_path=str(dst))
    return Path(local)


@contextmanager
def global_uri(tracking_uri: str) -> Iterator[None]:
    """MLflow's process-global tracking and registry URIs set to ``tracking_uri`` for the
    block, then restored (some MLflow paths read only the global ones)."""
    before = (mlflow.get_tracking_uri(), mlflow.get_registry_uri())
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(before[0])
        mlflow.set_registry_uri(before[1])


def package_folder(model_dir: Path) -> Path:
    """The delivered folder inside a downloaded MLflow model (``artifacts/package``)."""
    conf = Model.load(str(model_dir / "MLmodel")).flavors.get("python_function", {})
    artifacts = conf.get("artifacts", {})
    rel = artifacts.get(PACKAGE, {}).get("path", f"artifacts/{PACKAGE}")
    return model_dir / rel


def find_run(tracking_uri: str, run_id: str) -> tuple[str, dict[str, Any]] | None:
    """(experiment name, run as ``TrackingService.search`` gives it) of ``run_id``, or None."""
    client = _client(tracking_uri)
    try:
        run = client.get_run(run_id)
    except MlflowException:
        return None
    experiment = client.get_experiment(run.info.experiment_id).name
    return experiment, {
        "run_id": run.info.run_id,
        "status": run.info.status,
        "start_time": run.info.start_time,
        "tags": dict(run.data.tags),
        "params": dict(run.data.params),
        "metrics": dict(run.data.metrics),
    }
