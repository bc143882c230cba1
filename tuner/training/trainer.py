"""Plain-PyTorch training of one (task, method, hyper-parameters) configuration.

Knows nothing of Ray, Optuna or MLflow, nor of any one method: ``Trainer.epochs()`` yields a
metrics dict per epoch and ``state_dict``/``load_state_dict`` make it resumable, which is all
a tuner needs. A method that needs a pass over the data first (SPT) gets it through its own
``prepare`` hook. The
recipe follows the seed studies: AdamW, linear warm-up then cosine decay, no augmentation,
label smoothing off by default. The schedule steps per optimiser step
(``lr_schedule: step``) or, as the studies' timm scheduler does, once per epoch
(``lr_schedule: epoch``). On a GPU it trains in bf16 autocast.

A non-finite loss ends training as *diverged*: the epoch's metrics are still returned
(``diverged = 1``, ``val/acc = 0``) so a sweep records the trial instead of crashing.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from timm.scheduler import CosineLRScheduler

from tuner import methods
from tuner.backbones import create_backbone, input_spec
from tuner.data import TaskData, load_task
from tuner.methods.base import COMMON_HPARAMS, PrepareContext, count_trainable
from tuner.optim import adamw_groups, decay_everything, warmup_cosine
from tuner.records import REUSED_SUFFIX, Prepared
from tuner.training.spec import TrialSpec


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def pick_device() -> torch.device:
    """The trial's GPU when Ray gave it one (CUDA visible), else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class Trainer:
    """Builds backbone + method + data for a ``TrialSpec`` and trains it epoch by epoch."""

    def __init__(
        self,
        spec: TrialSpec,
        data: TaskData | None = None,
        fetch: Callable[[str, Path], Path | None] | None = None,
    ) -> None:
        """``fetch`` downloads a shared artifact (the study's prepare result) by URI; the
        sweep passes its tracking layer's, plain use needs none."""
        self.spec = spec
        if spec.threads:
            torch.set_num_threads(int(spec.threads))
        seed_everything(spec.seed)
        self.device = pick_device()
        method_hp = {k: v for k, v in spec.hp.items() if k not in COMMON_HPARAMS}
        self.method = methods.get(spec.method, **method_hp)
        self.data = data
        num_classes = self._num_classes()
        model = create_backbone(
            spec.backbone,
            num_classes,
            pretrained=spec.train.pretrained,
            drop_path=float(spec.common("drop_path")),
            weights=spec.weights,
        )
        self.inputs = input_spec(spec.backbone)  # the same one data preparation decoded with
        if self.data is None:
            self.data = load_task(
                spec.task,
                Path(spec.data_root),
                self.inputs.size,
                interpolation=self.inputs.interpolation,
                shifts=spec.shifts if spec.stage == "final" else None,
            )
        mean = torch.tensor(self.inputs.mean, device=self.device).view(1, -1, 1, 1)
        std = torch.tensor(self.inputs.std, device=self.device).view(1, -1, 1, 1)
        if not spec.train.normalize:  # seed-study protocol: raw [0, 1] pixels
            mean, std = torch.zeros_like(mean), torch.ones_like(std)
        self._mean, self._std = mean, std
        self.prepared: Prepared | None = self.method.prepare(
            model, self.data.train, self._prepare_context(num_classes, fetch)
        )
        self.model = self.method.apply(model).to(self.device)
        self.trainable, self.trainable_without_head = count_trainable(self.model, self.method)
        train_split = "train" if spec.stage == "tune" else "trainval"
        self.eval_split = "val" if spec.stage == "tune" else "test"
        self.x_train, self.y_train = getattr(self.data, train_split)
        if self.device.type == "cuda":
            # the training split lives on the GPU for the whole trial (VTAB-1k at 224 px is
            # ~150 MB of uint8): no host-to-device copy per step
            self.x_train = self.x_train.to(self.device)
            self.y_train = self.y_train.to(self.device)
        self.steps_per_epoch = math.ceil(len(self.y_train) / spec.train.batch_size)
        lr, wd = float(spec.common("lr")), float(spec.common("weight_decay"))
        groups = (
            adamw_groups(self.method.trainable_parameters(self.model), wd, decay_everything)
            if spec.train.weight_decay_on == "all"
            else self.method.param_groups(self.model, wd)
        )
        # fused: one kernel for every parameter's update on a GPU (not implemented on CPU)
        self.optimizer = torch.optim.AdamW(groups, lr=lr, fused=self.device.type == "cuda")
        self.scheduler, self.epoch_scheduler = self._schedules(lr)
        self.last_lr = self.optimizer.param_groups[0]["lr"]
        self.epoch = 0
        self.diverged = False

    def _schedules(self, lr: float) -> tuple[Any, CosineLRScheduler | None]:
        """(the scheduler, the same one when it steps per epoch, else None)."""
        spec, train = self.spec, self.spec.train
        total = self.steps_per_epoch * spec.epochs
        warmup = min(total, round(train.warmup_epochs * self.steps_per_epoch))
        start = None if train.warmup_lr_init is None else min(1.0, train.warmup_lr_init / lr)
        if train.lr_schedule == "epoch":
            # The seed studies' schedule exactly: timm's CosineLRScheduler over epochs
            # (cosine over the whole run, warm-up included), stepped once per epoch.
            per_epoch = CosineLRScheduler(
                self.optimizer,
                t_initial=spec.epochs,
                warmup_t=round(train.warmup_epochs),
                lr_min=train.lr_min,
                warmup_lr_init=lr if train.warmup_lr_init is None else train.warmup_lr_init,
            )
            return per_epoch, per_epoch
        per_step = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer,
            warmup_cosine(total, max(1, warmup), start, min(1.0, train.lr_min / lr)),
        )
        return per_step, None

    def _num_classes(self) -> int:
        from tuner.data.tasks import get_task

        return get_task(self.spec.task).num_classes

    def _prepare_context(
        self, num_classes: int, fetch: Callable[[str, Path], Path | None] | None
    ) -> PrepareContext:
        spec = self.spec
        return PrepareContext(
            task=spec.task,
            backbone=spec.backbone,
            num_classes=num_classes,
            seed=spec.seed if spec.prepare_seed is None else int(spec.prepare_seed),
            cache_dir=Path(spec.data_root) / ".cache",
            device=self.device,
            to_input=self._prepare,
            mean=self._mean,
            std=self._std,
            shared_uri=spec.prepared_uri,
            fetch=fetch,
        )

    # -- data -----------------------------------------------------------------------------
    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True).float().div_(255.0)
        return (x - self._mean) / self._std

    def _autocast(self) -> Any:
        return torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.device.type == "cuda")

    # -- one epoch ------------------------------------------------------------------------
    def train_epoch(self) -> dict[str, float]:
        """One pass over the training split; returns loss, accuracy, epoch time.

        No host synchronisation per step: loss and hits add up on the device and are read
        once per epoch (on a GPU a ViT-B/16 step is milliseconds, a ``.item()`` a stall). A
        non-finite loss is therefore seen at the epoch's end; the epoch is wasted either way.
        """
        self.model.train()
        start = time.perf_counter()
        order = torch.randperm(
            len(self.y_train),
            generator=torch.Generator().manual_seed(self.spec.seed * 1000 + self.epoch),
        ).to(self.x_train.device)
        total_loss = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device, dtype=torch.long)
        batch, smoothing = self.spec.train.batch_size, self.spec.train.label_smoothing
        for i in range(self.steps_per_epoch):
            idx = order[i * batch : (i + 1) * batch]
            x, y = self._prepare(self.x_train[idx]), self.y_train[idx].to(self.device)
            with self._autocast():
                logits = self.model(x)
                loss = F.cross_entropy(logits.float(), y, label_smoothing=smoothing)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.last_lr = self.optimizer.param_groups[0]["lr"]
            if self.epoch_scheduler is None:
                self.scheduler.step()
            total_loss += loss.detach() * len(y)
            correct += (logits.argmax(1) == y).sum()
        seen = len(self.y_train)
        mean_loss = float(total_loss) / seen
        self.diverged = not math.isfinite(mean_loss)
        self.epoch += 1
        if self.epoch_scheduler is not None:
            # the study's loop: timm steps once per epoch, with the epoch just finished
            self.epoch_scheduler.step(self.epoch - 1)
        return {
            "train/loss": float("nan") if self.diverged else mean_loss,
            "train/acc": int(correct) / seen,
            "epoch_time_s": time.perf_counter() - start,
        }

    @torch.no_grad()
    def predict(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits (float32, CPU) and labels for a split (or ``shift:<name>``), in order."""
        self.model.eval()
        if split.startswith("shift:"):
            x_all, y_all = self.data.shifts[split.removeprefix("shift:")]  # type: ignore[union-attr]
        else:
            x_all, y_all = getattr(self.data, split)
        outs = []
        for start in range(0, len(y_all), 256):
            with self._autocast():
                outs.append(self.model(self._prepare(x_all[start : start + 256])).float().cpu())
        return torch.cat(outs), y_all.clone()

    def evaluate(self, split: str) -> float:
        logits, labels = self.predict(split)
        return float((logits.argmax(1) == labels).float().mean())

    def epochs(self) -> Iterator[dict[str, float]]:
        """Train the remaining epochs, yielding metrics after each (stops if diverged)."""
        key = f"{self.eval_split}/acc"
        while self.epoch < self.spec.epochs and not self.diverged:
            metrics = self.train_epoch()
            # Tuning reads val every epoch (ASHA needs it); the final stage reads test once,
            # after the last epoch, so no epoch can ever be chosen on test.
            if self.spec.stage == "tune" or self.epoch == self.spec.epochs or self.diverged:
                if self.diverged:
                    metrics[key] = 0.0
                else:  # the loss too: overfitting shows in val loss before val accuracy
                    started = time.perf_counter()
                    logits, labels = self.predict(self.eval_split)
                    metrics["eval_time_s"] = time.perf_counter() - started
                    metrics[key] = float((logits.argmax(1) == labels).float().mean())
                    metrics[f"{self.eval_split}/loss"] = float(F.cross_entropy(logits, labels))
                    if self.spec.stage == "tune" and self.spec.train.record_test:
                        # for a replay table's test curve only: METRIC stays val/acc
                        metrics["test/acc"] = self.evaluate("test")
            metrics.update(
                epoch=self.epoch,
                diverged=float(self.diverged),
                trainable_params=float(self.trainable),
                trainable_params_without_head=float(self.trainable_without_head),
                lr=self.last_lr,
            )
            if self.prepared is not None:
                reused = float(self.prepared.source != "computed")
                metrics[f"{self.prepared.kind}{REUSED_SUFFIX}"] = reused
            yield metrics

    # -- resumability ---------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Trainable tensors, optimiser, schedule, epoch and RNG: enough to resume exactly."""
        return {
            "trainable": self.method.trainable_state_dict(self.model),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "epoch": self.epoch,
            "diverged": self.diverged,
            "torch_rng": torch.get_rng_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.method.load_trainable_state_dict(self.model, state["trainable"], "checkpoint")
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.epoch = int(state["epoch"])
        self.diverged = bool(state["diverged"])
        torch.set_rng_state(state["torch_rng"])

    def save(self, directory: Path) -> Path:
        path = Path(directory) / "trainer.pt"
        torch.save(self.state_dict(), path)
        return path

    def load(self, directory: Path) -> None:
        # weights_only: a checkpoint is data, never code.
        self.load_state_dict(torch.load(Path(directory) / "trainer.pt", weights_only=True))


def peak_memory_mb(device: torch.device) -> float:
    """Peak GPU memory of this process, or its peak resident set size on the CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def train_one(
    spec: TrialSpec,
    data: TaskData | None = None,
    fetch: Callable[[str, Path], Path | None] | None = None,
) -> dict[str, Any]:
    """Train to the end without any tuner; returns the last metrics and the history.

    A final-stage run also returns its test logits/labels and trainable tensors, which the
    sweep stores as artifacts (ensembles and bootstrap ties need them later).
    """
    trainer = Trainer(spec, data, fetch)
    history = list(trainer.epochs())
    result = dict(history[-1]) if history else {}
    result["history"] = history
    result["trainable_params"] = trainer.trainable
    result["trainable_params_without_head"] = trainer.trainable_without_head
    result["peak_memory_mb"] = peak_memory_mb(trainer.device)
    if spec.stage == "final":
        result["predictions"] = trainer.predict(trainer.eval_split)
        result["trainable_state"] = trainer.method.trainable_state_dict(trainer.model)
        for name in trainer.data.shifts:  # type: ignore[union-attr]
            result[f"shift/{name}/acc"] = trainer.evaluate(f"shift:{name}")
        result["report"] = trainer.method.report()
    return result
