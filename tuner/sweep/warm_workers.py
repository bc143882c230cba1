"""Ray workers that have already imported the training stack when a trial lands on them.

A trial actor is a fresh Ray worker process, and each study's Tuner starts new ones: on a
slow machine importing torch, timm and the tuner takes seconds, paid before the first epoch
and counted against the trial's slot. Ray runs ``worker_process_setup_hook`` in every worker
it starts, including the idle ones it starts ahead of demand, so with this hook the imports
happen while a worker waits in the pool, not while a trial waits for it.
"""

from __future__ import annotations

#: The ``runtime_env`` entry that installs the hook (local Ray and submitted jobs).
HOOK = "tuner.sweep.warm_workers.preload"


def preload() -> None:
    """Import what every trial imports (the cost moves to the worker's idle time)."""
    import timm  # noqa: F401
    import torch  # noqa: F401
    from ray import tune  # noqa: F401

    import tuner.methods
    import tuner.sweep.trainable
    import tuner.training.trainer  # noqa: F401


def runtime_env() -> dict[str, str]:
    return {"worker_process_setup_hook": HOOK}
