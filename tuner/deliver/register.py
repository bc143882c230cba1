"""Put each task's champion in the MLflow Model Registry, with the alias ``champion``.

The champion's final run (first seed) is rebuilt, packaged (``export``) and logged as a
``python_function`` model; that model becomes a version of ``<sweep>-<suite>-<task>``,
tagged with what it is and how it scored. The alias moves to it only when it is better on
*validation* than the version the alias holds, under the same protocol (a different protocol
is another experiment, not a better model); the user's own aliases are never touched. Every
step reuses what a previous call made, so registering a sweep twice changes nothing.
"""

from __future__ import annotations

import base64
import io
import re
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from PIL import Image

from tuner.deliver import DeliverError
from tuner.deliver.champion import Candidate, candidates, select
from tuner.deliver.export import PACKAGE_FORMAT, export_model, project_version
from tuner.deliver.rebuild import Rebuilt, rebuild_final

ALIAS = "champion"
#: How MLflow loads a packaged model: this module's loader, named (not imported) by tracking.
LOADER = "tuner.deliver.package:load_package"
REQUIREMENTS = ("torch", "timm", "safetensors", "pillow", "pandas")


def model_name(sweep: str, task: str) -> str:
    """``<sweep>-<suite>-<task>`` (``quickstart-synth-objects``), in registry-safe letters."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{sweep}-{task}").strip("-")


def open_experiment(tracking_uri: str, experiment: str) -> Any:
    """The sweep's tracker; an unknown experiment is a ``DeliverError``."""
    from tuner.tracking.client import TrackingService

    try:
        return TrackingService(tracking_uri, experiment, create=False)
    except ValueError as err:
        raise DeliverError(str(err)) from None


def sweep_candidates(tracker: Any) -> tuple[list[Candidate], dict[str, dict[str, Any]]]:
    """Every study with final runs, and the final runs by id."""
    finals = tracker.find({"stage": "final"})
    found = candidates(tracker.find({"stage": "tune"}), finals)
    sweep = tracker.experiment
    found = [c if c.sweep else _with_sweep(c, sweep) for c in found]
    return found, {r["run_id"]: r for r in finals}


def _with_sweep(c: Candidate, sweep: str) -> Candidate:
    return replace(c, sweep=sweep)


def data_uri(image: torch.Tensor) -> str:
    """A ``3 × H × W`` uint8 image as a PNG ``data:`` URI (the model's input example)."""
    buffer = io.BytesIO()
    Image.fromarray(image.permute(1, 2, 0).numpy()).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def about(c: Candidate, rebuilt: Rebuilt) -> dict[str, Any]:
    """What a package records of where it came from (config.json ``petl`` section)."""
    return {
        "sweep": c.sweep,
        "study": c.study,
        "run_id": c.run_id,
        "protocol": c.protocol,
        "val_acc": c.val_acc,
        "test_acc": c.test_acc,
        "trainable_params": c.trainable_params,
        "total_params": sum(p.numel() for p in rebuilt.model.parameters()),
    }


def package_candidate(
    tracker: Any,
    c: Candidate,
    runs: dict[str, dict[str, Any]],
    out: Path,
    data_root: str | None = None,
) -> tuple[Any, Rebuilt]:
    """Rebuild ``c``'s final run and export it into ``out``."""
    rebuilt = rebuild_final(tracker, runs[c.run_id], data_root)
    facts = about(c, rebuilt)
    return export_model(rebuilt, out, facts), rebuilt


def log_candidate(
    tracker: Any, c: Candidate, runs: dict[str, dict[str, Any]], data_root: str | None
) -> tuple[str, dict[str, Any]]:
    """The logged model of ``c``'s run (made now if missing) and the package's config."""
    from tuner.tracking import registry

    uri = tracker.tracking_uri
    existing = registry.packaged_model(uri, c.run_id)
    if existing:
        return existing, {}
    with tempfile.TemporaryDirectory() as tmp:
        exported, rebuilt = package_candidate(tracker, c, runs, Path(tmp) / "package", data_root)
        example = pd.DataFrame({"image": [data_uri(rebuilt.test[0][0])]})
        model_id, _ = registry.log_package(
            uri,
            c.run_id,
            exported.path,
            LOADER,
            example,
            bool(exported.config["label_names"]),
            PACKAGE_FORMAT,
            [*REQUIREMENTS, f"petl-sweep=={project_version()}"],
        )
    return model_id, exported.config


@dataclass
class Delivered:
    """A champion in the registry: where it is and what the alias did."""

    champion: Candidate
    name: str
    version: str
    uri: str
    #: the version the alias points at after this call
    alias_version: str
    #: whether this call set the alias (first version, or a better one)
    moved: bool
    #: whether this call created the version (False: it was registered before)
    created: bool


def _better(c: Candidate, current: Any) -> bool:
    """Whether ``c`` should take the alias from the version ``current`` holds."""
    if current is None:
        return True
    if current.tags.get("protocol") != c.protocol:
        return False
    try:
        held = float(current.tags.get("val_acc", "nan"))
    except ValueError:
        return False
    return not held >= c.val_acc  # strictly better (a NaN-tagged holder loses)


def register_candidate(
    tracker: Any, c: Candidate, runs: dict[str, dict[str, Any]], data_root: str | None = None
) -> Delivered:
    """Log, register and (if better on validation) alias ``c``."""
    from tuner.tracking import registry

    uri = tracker.tracking_uri
    model_id, config = log_candidate(tracker, c, runs, data_root)
    name = model_name(c.sweep, c.task)
    tags = {
        "task": c.task, "method": c.method, "backbone": c.backbone, "protocol": c.protocol,
        "val_acc": c.val_acc, "test_acc": c.test_acc, "test_acc_mean": c.test_acc_mean,
        "sweep": c.sweep, "study": c.study, "trainable_params": c.trainable_params,
        **({"variant": c.variant} if c.variant else {}),
        **({"plain_timm": config["plain_timm"], "merged": config["merged"],
            "total_params": config["petl"]["total_params"]} if config else {}),
    }  # fmt: skip
    version, created = registry.register_version(uri, name, model_id, c.run_id, tags)
    current = registry.alias_version(uri, name, ALIAS)
    moved = current is None or (current.version != version.version and _better(c, current))
    if moved:
        registry.set_alias(uri, name, ALIAS, version.version)
    held = version.version if moved else current.version  # type: ignore[union-attr]
    return Delivered(
        c,
        name,
        version.version,
        registry.model_uri(name, ALIAS),
        held,
        moved,
        created,
    )


def register_experiment(
    tracking_uri: str, experiment: str, data_root: str | None = None, every_run: bool = False
) -> list[Delivered]:
    """Register every task's champion of ``experiment``; ``every_run``: also give every
    other final run its MLflow model (not registered: about 330 MB each at ViT-B size)."""
    tracker = open_experiment(tracking_uri, experiment)
    found, runs = sweep_candidates(tracker)
    chosen = select(found)
    done = [register_candidate(tracker, c, runs, data_root) for c in chosen]
    if every_run:  # every seed of every study (the shipped ones reuse their model)
        for c in found:
            for run in runs.values():
                if run["tags"].get("study") == c.study:
                    test = float(run["metrics"]["test/acc"])
                    log_candidate(tracker, replace(c, run_id=run["run_id"], test_acc=test),
                                  runs, data_root)  # fmt: skip
    return done
