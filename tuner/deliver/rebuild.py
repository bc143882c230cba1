"""A final run's trained model, rebuilt from what MLflow stores (config + trained tensors).

The ``Trainer`` builds it, as in ``tuner.analysis.models``, so every method (SPT's prepare
pass included) is rebuilt exactly as it trained; here the method object and the task's label
names are kept too, since a package needs the method to merge and the names to answer with.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from tuner.deliver import DeliverError
from tuner.methods import Method
from tuner.training.spec import TrialSpec


@dataclass
class Rebuilt:
    """A final run's model (CPU, eval mode) with what packaging it needs."""

    run: dict[str, Any]
    spec: TrialSpec
    model: nn.Module
    method: Method
    num_classes: int
    #: label names where the task's layout has them
    classes: tuple[str, ...] | None
    test: tuple[torch.Tensor, torch.Tensor]


def rebuild_final(tracker: Any, run: dict[str, Any], data_root: str | None = None) -> Rebuilt:
    """Rebuild ``run`` (a final run dict); ``data_root`` replaces the stored one."""
    from tuner.analysis.models import rebuild_trainer
    from tuner.analysis.run import AnalysisError

    try:
        spec, trainer, model = rebuild_trainer(
            tracker, run, data_root, hint="--data-root sets another"
        )
    except AnalysisError as err:
        raise DeliverError(str(err)) from None
    return Rebuilt(
        run=run,
        spec=spec,
        model=model,
        method=trainer.method,
        num_classes=trainer.data.info.num_classes,
        classes=trainer.data.classes,
        test=trainer.data.test,
    )
