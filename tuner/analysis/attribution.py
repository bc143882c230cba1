"""``analyze attribution``: where two tuned models look, side by side, on the same images.

Study 001 compares visual prompt tuning and full fine-tuning through attribution maps.
For each task with final runs of both methods (``-o a=... -o b=...``, default the first two
methods present in registry order; the first seed of each), the first model's and the
second's Grad-CAM maps on ``-o n=8`` test images (evenly spaced through the test split), for
the true class (``-o target=label``) or each model's own prediction (``target=pred``).

Grad-CAM comes from the maintained ``grad-cam`` package (``pytorch_grad_cam``), which works
with timm ViTs given a ``reshape_transform`` from tokens to a patch grid. The layer is the
last block's ``norm1`` (the input of its attention), as that package's ViT recipe: after the
last block only the class token reaches the head, so patch tokens there have no gradient.
The transform keeps the *last* grid-many tokens, which drops the class token and any prompt
tokens VPT splices in before the patches. The package rescales each map to [0, 1] and
resizes it to the input's spatial size. The table holds each image's labels, predictions and
the Pearson correlation between the two models' maps; ``attribution-maps.npz`` holds the
maps (``<task>|<method>`` → n × H × W).
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from torch import nn

from tuner import methods
from tuner.analysis.figures import save_figure
from tuner.analysis.models import FinalModel, load_final_model, model_input
from tuner.analysis.run import AnalysisError, Output, analysis
from tuner.data.tasks import task_order
from tuner.tracking.client import TrackingService

REGISTRY = methods.list_methods()


def _tokens_to_grid(grid: tuple[int, int]) -> Any:
    """``reshape_transform``: B × T × C tokens → B × C × H × W from the last H·W tokens."""
    height, width = grid

    def reshape(tokens: torch.Tensor) -> torch.Tensor:
        patches = tokens[:, -height * width :, :]
        return patches.reshape(len(tokens), height, width, -1).permute(0, 3, 1, 2)

    return reshape


def gradcam_maps(model: nn.Module, x: torch.Tensor, targets: list[int]) -> np.ndarray:
    """Grad-CAM of a timm ViT (any PETL method applied) for ``targets``: N × H × W in
    [0, 1], at the spatial size of ``x``. Every parameter is set to require gradients, so
    frozen backbones (linear probing) still pass gradients to the layer."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    for param in model.parameters():
        param.requires_grad_(True)
    grid = tuple(model.patch_embed.grid_size)  # type: ignore[union-attr]
    layer = model.blocks[-1].norm1  # type: ignore[index]
    with GradCAM(
        model=model, target_layers=[layer], reshape_transform=_tokens_to_grid(grid)
    ) as cam:
        maps = cam(input_tensor=x, targets=[ClassifierOutputTarget(int(t)) for t in targets])
    return np.asarray(maps, dtype=np.float32)


def map_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two maps (nan when either is constant)."""
    a, b = a.ravel() - a.mean(), b.ravel() - b.mean()
    denom = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / denom) if denom > 0 else float("nan")


def pick_pair(by_method: dict[str, Any], options: dict[str, str]) -> tuple[str, str]:
    """``-o a`` / ``-o b``, or the first two methods present in registry order."""
    present = sorted(by_method, key=lambda m: (REGISTRY.index(m) if m in REGISTRY else 99, m))
    a = options.get("a", present[0] if present else "")
    b = options.get("b", next((m for m in present if m != a), ""))
    if not a or not b or a == b:
        raise AnalysisError(f"need two different methods with final runs; present: {present}")
    return a, b


def final_pairs(
    trackers: list[TrackingService], options: dict[str, str]
) -> tuple[str, str, dict[str, tuple[Any, dict, dict]]]:
    """Methods a, b and per task the first-seed final runs of both (with their tracker)."""
    runs: dict[str, dict[str, list[tuple[Any, dict]]]] = defaultdict(lambda: defaultdict(list))
    for tracker in trackers:
        for run in tracker.find({"stage": "final"}):
            tags = run["tags"]
            if "task" in tags and "method" in tags:
                runs[tags["task"]][tags["method"]].append((tracker, run))
    if not runs:
        names = ", ".join(t.experiment for t in trackers)
        raise AnalysisError(f"no finished final runs in experiment(s) {names}")
    a, b = pick_pair({m: 1 for per in runs.values() for m in per}, options)
    pairs = {}
    for task, by_method in runs.items():
        if a in by_method and b in by_method:
            first = {m: min(by_method[m], key=lambda tr: int(tr[1]["tags"].get("seed", 0)))
                     for m in (a, b)}  # fmt: skip
            pairs[task] = (first[a][0], first[a][1], first[b][1])
    if not pairs:
        raise AnalysisError(f"no task has final runs of both {a} and {b}")
    return a, b, pairs


def explain(model: FinalModel, index: np.ndarray, target: str) -> dict[str, np.ndarray]:
    """Predictions and maps of one model on the chosen test images."""
    x_all, y_all = model.test
    x = model_input(model.spec, x_all[torch.from_numpy(index)])
    with torch.no_grad():
        pred = model.model(x).argmax(1).numpy()
    labels = y_all[torch.from_numpy(index)].numpy()
    maps = gradcam_maps(model.model, x, list(labels if target == "label" else pred))
    return {"pred": pred, "label": labels, "maps": maps}


def grid_plot(
    task: str, images: np.ndarray, a: str, b: str, res: dict[str, dict], path: Path
) -> Path:
    """One row per image: input, method a's map, method b's map (overlaid on the input)."""
    n = len(images)
    fig, axes = plt.subplots(n, 3, figsize=(5.4, 1.8 * n + 0.5), squeeze=False)
    for i in range(n):
        img = images[i].transpose(1, 2, 0)
        axes[i, 0].imshow(img)
        axes[i, 0].set_title(f"label {res[a]['label'][i]}", fontsize=7)
        for col, method in ((1, a), (2, b)):
            ax = axes[i, col]
            ax.imshow(img)
            ax.imshow(res[method]["maps"][i], cmap="jet", alpha=0.5, vmin=0, vmax=1)
            ax.set_title(f"{method}: pred {res[method]['pred'][i]}", fontsize=7)
        for ax in axes[i]:
            ax.axis("off")
    return save_figure(fig, path, f"{task}: Grad-CAM, last block", fontsize=9, dpi=110)


def _option_n(options: dict[str, str]) -> int:
    try:
        n = int(options.get("n", 8))
    except ValueError:
        raise AnalysisError(f"-o n= must be an integer, got {options['n']!r}") from None
    if n < 1:
        raise AnalysisError(f"-o n= must be >= 1, got {n}")
    return n


@analysis("attribution")
def attribution(trackers: list[TrackingService], out: Path, options: dict[str, str]) -> Output:
    """Grad-CAM maps of two methods' final models on the same test images, per task."""
    n, target = _option_n(options), options.get("target", "label")
    if target not in ("label", "pred"):
        raise AnalysisError(f"-o target= must be label or pred, got {target!r}")
    a, b, pairs = final_pairs(trackers, options)
    rows, plots, arrays = [], [], {}
    for task in task_order(list(pairs)):
        tracker, run_a, run_b = pairs[task]
        models = {m: load_final_model(tracker, r, options.get("data_root"))
                  for m, r in ((a, run_a), (b, run_b))}  # fmt: skip
        x_all = models[a].test[0]
        index = np.unique(np.linspace(0, len(x_all) - 1, min(n, len(x_all))).round().astype(int))
        res = {m: explain(model, index, target) for m, model in models.items()}
        for m in (a, b):
            arrays[f"{task}|{m}"] = res[m]["maps"]
        for i, idx in enumerate(index):
            rows.append(
                {
                    "task": task,
                    "test_index": int(idx),
                    "label": int(res[a]["label"][i]),
                    "method_a": a,
                    "method_b": b,
                    "pred_a": int(res[a]["pred"][i]),
                    "pred_b": int(res[b]["pred"][i]),
                    "map_correlation": map_correlation(res[a]["maps"][i], res[b]["maps"][i]),
                    "height": res[a]["maps"].shape[1],
                    "width": res[a]["maps"].shape[2],
                }
            )
        images = x_all[torch.from_numpy(index)].numpy()
        plots.append(grid_plot(task, images, a, b, res, out / f"attribution-{_slug(task)}.png"))
    table = pd.DataFrame(rows)
    table["correct_a"] = table["pred_a"] == table["label"]
    table["correct_b"] = table["pred_b"] == table["label"]
    summary = (
        table.groupby("task", sort=False)
        .agg(images=("test_index", "size"), correct_a=("correct_a", "mean"),
             correct_b=("correct_b", "mean"), map_correlation=("map_correlation", "mean"))
        .reset_index()
    )  # fmt: skip
    npz = out / "attribution-maps.npz"
    np.savez_compressed(npz, **arrays)
    return Output(
        table,
        plots,
        summary,
        f"Attribution (Grad-CAM, target {target}): {a} vs {b} on {n} test images per task",
        extra=[npz],
    )


def _slug(task: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.@#-]+", "_", task)
