"""Predict a list of image files with a delivered classifier, skipping what is not an image.

Bad inputs are the norm in a folder someone points at (a README, a truncated download):
each is named, skipped and counted, and the caller decides whether that is an error
(``--strict``). Images are decoded and predicted in batches, with a progress bar on long
lists.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch
from rich.console import Console
from rich.progress import Progress

from tuner.deliver.images import ImageError, Inputs
from tuner.deliver.package import Classifier

#: Lists longer than this get a progress bar.
PROGRESS_FROM = 64


@dataclass
class Predictions:
    """One row per predicted image (``path``, ``label``, ``label_name``?, ``prob``, and
    ``true_label`` where the input listed it), and what was skipped, with why."""

    table: pd.DataFrame
    skipped: list[str] = field(default_factory=list)

    @property
    def accuracy(self) -> float | None:
        if "true_label" not in self.table or self.table.empty:
            return None
        return float((self.table["label"] == self.table["true_label"]).mean())


def predict_files(
    classifier: Classifier, inputs: Inputs, batch: int = 64, console: Console | None = None
) -> Predictions:
    """Predict every image of ``inputs``; undecodable files are skipped and listed."""
    rows: list[pd.DataFrame] = []
    skipped: list[str] = []
    total = len(inputs.paths)
    show = console is not None and total > PROGRESS_FROM
    with Progress(console=console, disable=not show, transient=True) as progress:
        task = progress.add_task("predicting", total=total)
        for start in range(0, total, batch):
            images, kept, labels = [], [], []
            for path, label in zip(
                inputs.paths[start : start + batch],
                inputs.labels[start : start + batch],
                strict=True,
            ):
                try:
                    images.append(classifier.decode(path))
                except ImageError as err:
                    skipped.append(str(err))
                    continue
                kept.append(str(path))
                labels.append(label)
            if images:
                frame = classifier.frame(classifier.logits(torch.stack(images)))
                frame.insert(0, "path", kept)
                frame["true_label"] = labels
                rows.append(frame)
            progress.advance(task, min(batch, total - start))
    table = (
        pd.concat(rows, ignore_index=True)
        if rows
        else pd.DataFrame({"path": [], "label": [], "prob": [], "true_label": []})
    )
    if not (table["true_label"] >= 0).any():
        table = table.drop(columns="true_label")
    return Predictions(table, skipped)


def write_csv(predictions: Predictions, out: Path) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    predictions.table.to_csv(out, index=False)
    return out
