"""The plan of a sweep: one study per (task, method), each with its seed, space and hash.

Nothing here runs a trial. ``plan`` lays out the studies, ``prepare_data`` writes missing
synthetic tasks and decodes every task once (so trials do not race to decode), and
``study_hash`` names everything that decides a study's result, the key by which a re-run
reuses a study already finished in MLflow.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuner.backbones import create_backbone, input_spec, resolve_backbone
from tuner.backbones.hub import check_pretrained_weights
from tuner.backbones.weights import fingerprint as weights_fingerprint
from tuner.config import SweepConfig
from tuner.data.vtab import DataError
from tuner.sweep.spaces import Domain, load_space
from tuner.util import content_hash


def stable_seed(*parts: object) -> int:
    """A seed derived from names, identical across processes (unlike ``hash``)."""
    digest = hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()
    return int(digest[:8], 16)


@dataclass
class StudySpec:
    task: str
    method: str
    seed: int
    space: dict[str, Domain]
    fixed: dict[str, Any] = field(default_factory=dict)
    #: Content hash of everything that determines the study's result (resume key).
    hash: str = ""
    #: Name, digest and split sizes of the task data (logged as an MLflow dataset input).
    dataset: dict[str, Any] = field(default_factory=dict)
    #: The grid when it is not the space's product: a replay table's configurations
    points: list[dict[str, Any]] = field(default_factory=list)

    @property
    def key(self) -> str:
        return f"{self.task}:{self.method}"

    @property
    def dirname(self) -> str:
        return self.key.replace("/", "-").replace(":", "__")


def study_space(cfg: SweepConfig, method: str) -> dict[str, Domain]:
    """The method's search space, less what the protocol fixes (``train.drop_path``)."""
    space = load_space(method, cfg.search.space, cfg.search.spaces_dir)
    if cfg.train.drop_path is not None:
        space.pop("drop_path", None)
    return space


def plan(cfg: SweepConfig) -> list[StudySpec]:
    """One study per (task, method), tasks outermost so early results span methods."""
    if cfg.replay:  # the studies, spaces and grids of a replay table (tuner.replay.engine)
        from tuner.replay.engine import replay_plan

        return replay_plan(cfg)
    return [
        StudySpec(
            task=task,
            method=method,
            seed=stable_seed(cfg.seed, task, method),
            space=study_space(cfg, method),
            fixed=dict(cfg.search.fixed.get(method, {})),
        )
        for task in cfg.tasks
        for method in cfg.methods
    ]


#: Problems of one task listed in the pre-sweep message; ``data check`` shows the rest.
SHOWN_PROBLEMS = 10


def every_problem(task: str, data_root: Path, first: DataError) -> str:
    """All problems of a task whose loading failed, as ``data check`` finds them.

    Loading stops at the first bad file; a user fixing one image per sweep start would need
    as many starts as bad files. So on failure (only then: the successful path is the decode
    cache, keyed by every file's path, size and mtime) the task gets ``data check``'s walk,
    which reads the same layout."""
    from tuner.data.check import check_root

    try:
        (report,) = check_root(data_root, [task])
    except Exception:  # a layout data check does not read (folder:, manifests): first error
        return str(first)
    if not report.errors:
        return str(first)
    shown = report.errors[:SHOWN_PROBLEMS]
    more = len(report.errors) - len(shown)
    tail = [f"... and {more} more (petl-sweep data check {data_root})"] if more else []
    return f"{len(report.errors)} problem(s):\n    " + "\n    ".join(shown + tail)


def prepare_data(cfg: SweepConfig) -> dict[str, dict[str, Any]]:
    """Write missing synthetic tasks and decode every task once, before trials race for it.

    This is the sweep's data check: every image is decoded (a cache hit on a re-run: keyed by
    path, size and mtime, so only changed files are read again) and every label checked
    against the task's class count before any trial starts; a task that fails is walked by
    ``data check`` so the message lists all its problems at once.

    Decodes with the backbone's ``input_spec``, the one every ``Trainer`` reads, so trials
    hit this cache. Returns each task's dataset record (name, digest, split sizes).
    """
    from tuner.data import load_task
    from tuner.data.sources import task_digest
    from tuner.data.tasks import task_dir

    check_weights_source(cfg)  # seconds, before minutes of decoding for a sweep that can't run
    inputs = input_spec(cfg.backbone)
    records, problems = {}, []
    for task in cfg.tasks:
        try:
            data = load_task(
                task, Path(cfg.data_root), inputs.size, interpolation=inputs.interpolation
            )
        except DataError as err:  # collect them all: one message lists every bad task
            problems.append(f"{task}: {every_problem(task, Path(cfg.data_root), err)}")
            continue
        folder = task_dir(task, Path(cfg.data_root))
        records[task] = {
            "name": task,
            "digest": task_digest(task, Path(cfg.data_root)),
            "source": str(folder.resolve()),
            "splits": {
                "train800": len(data.train[1]),
                "val200": len(data.val[1]),
                "train800val200": len(data.trainval[1]),
                "test": len(data.test[1]),
            },
            "image_size": inputs.size,
        }
    if problems:
        raise DataError(
            f"{len(problems)} of {len(cfg.tasks)} tasks cannot be used "
            "(`petl-sweep data check ROOT` lists every file):\n  " + "\n  ".join(problems)
        )
    return records


def check_backbone(cfg: SweepConfig) -> None:
    """Load the backbone's weights once before any trial: a file that does not fit fails
    here, naming its keys, instead of in every trial's ``error.txt``."""
    if cfg.backbone_weights:
        create_backbone(cfg.backbone, 2, weights=cfg.backbone_weights)


def check_weights_source(cfg: SweepConfig) -> None:
    """Without ``backbone_weights``, timm's pretrained weights must be cached or
    downloadable: asked once, in seconds (``check_pretrained_weights``), not after every
    trial's hub retries; raises ``WeightsUnavailableError`` naming ``backbone_weights``.
    Cheap (a cache lookup, at most one bounded request), so it runs before data decoding."""
    if cfg.train.pretrained and not cfg.backbone_weights:
        check_pretrained_weights(resolve_backbone(cfg.backbone))


def study_hash(cfg: SweepConfig, study: StudySpec) -> str:
    """Everything that determines a study's outcome; equal hash = reusable result."""
    content = {
        "task": study.task,
        "method": study.method,
        "dataset": study.dataset.get("digest"),
        "backbone": resolve_backbone(cfg.backbone),
        "seed": cfg.seed,
        "study_seed": study.seed,
        "tune": cfg.tune.model_dump(exclude=cfg.tune.RESULT_NEUTRAL),
        "train": cfg.train.model_dump(exclude=cfg.train.RESULT_NEUTRAL),
        "space": cfg.search.space,
        "warm_start": cfg.search.warm_start,
        "domains": {k: [d.kind, list(d.args)] for k, d in sorted(study.space.items())},
        "fixed": study.fixed,
    }
    if cfg.search.sampler != "auto":  # (absent when auto: earlier hashes stay valid)
        content["sampler"] = cfg.search.sampler
    if cfg.backbone_weights:  # the file's content, not its name, decides the result
        content["backbone_weights"] = weights_fingerprint(cfg.backbone_weights)
    return content_hash(content, 20)


def planned_studies(cfg: SweepConfig, datasets: dict[str, dict[str, Any]]) -> list[StudySpec]:
    """The plan with each study's dataset record and content hash filled in."""
    studies = plan(cfg)
    for study in studies:
        study.dataset = datasets[study.task]
        study.hash = study_hash(cfg, study)
    return studies
