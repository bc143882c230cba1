"""``analyze domain-gap``: how far each task's images are from the backbone's upstream data.

Study 001 explains when visual prompt tuning beats full fine-tuning partly by the distance
between the upstream and downstream data distributions, measured as a Fréchet distance
between feature distributions. Here, per task of the experiment and per backbone:

* **layer**: the *pre-logits* features of the frozen pretrained backbone, no PETL method and
  no head: timm's ``forward_head(forward_features(x), pre_logits=True)``, i.e. for these ViTs
  the class token after the final LayerNorm (what a linear probe reads). Images are prepared
  with the backbone's own resize filter and mean/std, the same for both sets.
* **upstream**: for the shipped tiny ViT, fresh draws of its synthetic glyph pretraining
  task (:mod:`tuner.data.upstream`, the same 64 classes); for any other backbone a folder of
  images the user gives (``-o upstream=PATH``, e.g. an ImageNet sample), searched recursively.
* **task**: its training images. A Fréchet estimate is biased upwards by about 1/n, so by
  default (``-o per=base``) the subsets ``T@n`` of one task are measured on the base task's
  train split (they are samples of that distribution); ``-o per=task`` uses each task's own
  training images. Both sets are capped at ``-o sample=800`` images (a seeded random
  sample; not ``n``, which ``analyze all`` passes to ``attribution`` as its image count).
* **error bars**: ``-o bootstrap=20`` resamples of both feature sets (with replacement).
  Plots draw ± their std around the point estimate. A resample repeats images, which biases
  a Fréchet estimate upwards, so the resamples' mean sits above the point estimate
  (``boot_bias``) and their 2.5/97.5 % percentiles (``ci_low``/``ci_high``) are shifted with
  it: kept in the table, not drawn.

Tasks, backbone, weights and data root come from the experiment's runs (final runs'
``config.json``; tags of studies otherwise); ``-o data_root=PATH`` overrides the latter.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from tuner.analysis.figures import save_figure
from tuner.analysis.frechet import bootstrap_frechet, frechet_between
from tuner.analysis.models import final_spec, frozen_backbone, pre_logits
from tuner.analysis.run import AnalysisError, Output, analysis
from tuner.backbones import TINY_NAME, input_spec, resolve_backbone
from tuner.data import DataError, load_task
from tuner.data.subsets import parse_task
from tuner.data.tasks import task_group, task_order
from tuner.tracking.client import TrackingService
from tuner.tracking.names import PARENT_RUN_TAG

LAYER = "pre-logits (final-norm class token) of the frozen pretrained backbone"
#: Seed of the fresh glyph draws standing in for the tiny ViT's pretraining images.
UPSTREAM_SEED = 20_240_601
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
GROUP_COLOURS = {
    "natural": "tab:green",
    "specialized": "tab:orange",
    "structured": "tab:blue",
    "fgvc": "tab:purple",
    "custom": "tab:gray",
}


@dataclass(frozen=True)
class TaskSource:
    """One (task, backbone) of the experiment and where its data and weights are."""

    task: str
    backbone: str
    weights: str | None
    pretrained: bool
    data_root: str


def experiment_tasks(trackers: list[TrackingService], data_root: str | None) -> list[TaskSource]:
    """Every (task, backbone) the experiments hold finished final or study runs of."""
    found: dict[tuple[str, str], TaskSource] = {}
    configs: dict[str, tuple[str | None, bool, str]] = {}
    for tracker in trackers:
        runs = tracker.find({"stage": "final"}) + [
            r for r in tracker.find({"stage": "tune"}) if PARENT_RUN_TAG not in r["tags"]
        ]
        for run in runs:
            tags = run["tags"]
            if "task" not in tags or "backbone" not in tags:
                continue
            backbone = tags["backbone"]
            if backbone not in configs and tags.get("stage") == "final":
                spec = final_spec(tracker, run, data_root)
                configs[backbone] = (spec.weights, spec.train.pretrained, spec.data_root)
            where = configs.get(backbone, (None, True, data_root or "data"))
            found.setdefault((tags["task"], backbone), TaskSource(tags["task"], backbone, *where))
    if not found:
        names = ", ".join(t.experiment for t in trackers)
        raise AnalysisError(f"no finished study or final runs with task tags in {names}")
    order = task_order([task for task, _ in found])
    return sorted(found.values(), key=lambda s: (s.backbone, order.index(s.task)))


def _sample(x: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """At most ``n`` rows of ``x``, a seeded random sample without replacement."""
    if len(x) <= n:
        return x
    keep = np.sort(np.random.default_rng(seed).choice(len(x), n, replace=False))
    return x[torch.from_numpy(keep)]


def upstream_images(source: TaskSource, upstream: str | None, n: int) -> tuple[torch.Tensor, str]:
    """The upstream sample (uint8 N×3×S×S) and a description of where it came from."""
    spec = input_spec(source.backbone)
    if upstream is None:
        from tuner.data.upstream import generate_upstream

        images, _ = generate_upstream(n, UPSTREAM_SEED)
        x = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
        return x, f"synthetic glyph pretraining task ({n} fresh draws)"
    from tuner.data.cache import load_arrays

    root = Path(upstream).expanduser()
    if not root.is_dir():
        raise AnalysisError(f"upstream folder {upstream} does not exist")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise AnalysisError(
            f"upstream folder {upstream} holds no {'/'.join(IMAGE_SUFFIXES)} images"
        )
    keep = np.sort(np.random.default_rng(UPSTREAM_SEED).permutation(len(files))[:n])
    items = [(files[i], 0, str(files[i])) for i in keep]
    cache = Path(source.data_root) / ".cache"
    arrays = load_arrays(items, spec.size, cache, "upstream", spec.interpolation)
    return torch.from_numpy(np.array(arrays.x)), f"{upstream} ({len(items)} images)"


def task_images(source: TaskSource, task: str) -> torch.Tensor:
    """The task's training images as the backbone decodes them (uint8 N×3×S×S)."""
    spec = input_spec(source.backbone)
    try:
        data = load_task(task, Path(source.data_root), spec.size, interpolation=spec.interpolation)
    except (DataError, OSError, KeyError) as err:
        raise AnalysisError(
            f"cannot load {task} under data_root {source.data_root!r} "
            f"(-o data_root=PATH sets another): {str(err).splitlines()[0]}"
        ) from err
    return data.train[0]


def features(model: torch.nn.Module, backbone: str, x: torch.Tensor) -> np.ndarray:
    """Pre-logits features of uint8 images under the backbone's own normalisation."""
    spec = input_spec(backbone)
    mean = torch.tensor(spec.mean).view(1, -1, 1, 1)
    std = torch.tensor(spec.std).view(1, -1, 1, 1)
    return pre_logits(model, (x.float() / 255.0 - mean) / std).double().numpy()


def gap_row(up: np.ndarray, task: np.ndarray, rounds: int, seed: int) -> dict[str, float]:
    """The distance, its bootstrap spread and percentiles."""
    boot = bootstrap_frechet(up, task, rounds, seed) if rounds > 0 else np.array([np.nan])
    point = frechet_between(up, task)
    return {
        "frechet": point,
        "boot_mean": float(np.mean(boot)),
        "boot_bias": float(np.mean(boot)) - point,
        "boot_std": float(np.std(boot, ddof=1)) if rounds > 1 else float("nan"),
        "ci_low": float(np.percentile(boot, 2.5)),
        "ci_high": float(np.percentile(boot, 97.5)),
    }


def _option_int(options: dict[str, str], key: str, default: int) -> int:
    try:
        value = int(options.get(key, default))
    except ValueError:
        raise AnalysisError(f"-o {key}= must be an integer, got {options[key]!r}") from None
    if value < 0:
        raise AnalysisError(f"-o {key}= must be >= 0, got {value}")
    return value


def gap_table(trackers: list[TrackingService], options: dict[str, str]) -> pd.DataFrame:
    """One row per (task, backbone): the Fréchet distance to the upstream data."""
    n = max(2, _option_int(options, "sample", 800))
    rounds = _option_int(options, "bootstrap", 20)
    per = options.get("per", "base")
    if per not in ("base", "task"):
        raise AnalysisError(f"-o per= must be base or task, got {per!r}")
    upstream = options.get("upstream")
    sources = experiment_tasks(trackers, options.get("data_root"))
    for source in sources:
        if upstream is None and resolve_backbone(source.backbone) != TINY_NAME:
            raise AnalysisError(
                f"backbone {source.backbone}: give its upstream images with -o upstream=PATH "
                "(a folder, e.g. an ImageNet sample); only the tiny ViT's is built in"
            )
    rows: list[dict[str, Any]] = []
    models: dict[str, Any] = {}
    measured: dict[tuple[str, str], dict[str, Any]] = {}
    for source in sources:
        if source.backbone not in models:
            model = frozen_backbone(source.backbone, source.weights, source.pretrained)
            up_x, where = upstream_images(source, upstream, n)
            models[source.backbone] = (model, features(model, source.backbone, up_x), where)
        model, up_feats, where = models[source.backbone]
        own = task_images(source, source.task)
        measured_on = parse_task(source.task).base if per == "base" else source.task
        key = (source.backbone, measured_on)
        if key not in measured:
            x = own if measured_on == source.task else task_images(source, measured_on)
            feats = features(model, source.backbone, _sample(x, n, 0))
            measured[key] = {"n_task": len(feats), **gap_row(up_feats, feats, rounds, 0)}
        rows.append(
            {
                "task": source.task,
                "measured_on": measured_on,
                "group": task_group(source.task),
                "train_size": len(own),
                "backbone": source.backbone,
                "layer": LAYER,
                "upstream": where,
                "n_upstream": len(up_feats),
                **measured[key],
                "bootstrap": rounds,
            }
        )
    return pd.DataFrame(rows)


def gap_plot(table: pd.DataFrame, path: Path) -> Path:
    """Horizontal bars per task with ± bootstrap std, coloured by group."""
    fig, ax = plt.subplots(figsize=(6.5, 0.45 * len(table) + 1.4))
    labels = [f"{r.task} [{r.backbone}]" if table["backbone"].nunique() > 1 else r.task
              for r in table.itertuples()]  # fmt: skip
    y = np.arange(len(table))
    colours = [GROUP_COLOURS.get(g, "tab:gray") for g in table["group"]]
    ax.barh(y, table["frechet"], xerr=table["boot_std"].fillna(0), color=colours, capsize=3)
    ax.set_yticks(y, labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("Fréchet distance to upstream features (± bootstrap std)")
    for group in dict.fromkeys(table["group"]):
        ax.bar(0, 0, color=GROUP_COLOURS.get(group, "tab:gray"), label=group)
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title("domain gap: " + LAYER, fontsize=8)
    return save_figure(fig, path, dpi=120)


@analysis("domain-gap")
def domain_gap(trackers: list[TrackingService], out: Path, options: dict[str, str]) -> Output:
    """Fréchet distance between upstream and task features, per task, with error bars."""
    table = gap_table(trackers, options)
    several = table["backbone"].nunique() > 1
    columns = ["task", "group", "train_size", *(["backbone"] if several else []), "frechet"]
    summary = table[[*columns, "boot_std"]]
    return Output(
        table,
        [gap_plot(table, out / "domain-gap.png")],
        summary,
        f"Domain gap: Fréchet distance of {LAYER} features, upstream vs task "
        f"({table['task'].nunique()} task(s))",
    )
