"""When a trial checkpoints: often enough to survive a lost node, rarely enough to be free.

Every epoch was the old rule. On a GPU a VTAB-1k epoch is well under a second while a
``full`` ViT-B/16 checkpoint (trainable tensors + AdamW moments) is about 1 GB, so writing
one per epoch could cost more than the training. A checkpoint only matters when a trial is
restarted (node loss, ``--resume``), and then what it saves is the training since the last
one; so the default is time-based: at most one per ``every_s`` (120) seconds of training, which
bounds both the loss on a failure (``every_s`` plus one epoch) and the overhead
(``save_s / every_s``). ``every_epochs`` adds the old epoch rule for those who want it.

A trial that ends (its last epoch, divergence, or ASHA's stop) writes none: nothing ever
resumes a finished trial.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CheckpointPolicy:
    #: epochs between checkpoints (0: no epoch rule)
    every_epochs: int = 0
    #: seconds of training between checkpoints (0: no time rule)
    every_s: float = 120.0

    def due(self, epoch: int, seconds_since_last: float, last_epoch: bool) -> bool:
        """Whether to checkpoint after ``epoch`` (1-based), ``seconds_since_last`` after the
        previous checkpoint (or the trial's start)."""
        if last_epoch:
            return False
        by_epoch = self.every_epochs > 0 and epoch % self.every_epochs == 0
        by_time = self.every_s > 0 and seconds_since_last >= self.every_s
        return by_epoch or by_time
