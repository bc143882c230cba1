"""The sweep's place on Ray: the cluster it joins (or the local Ray it starts), the node its
bookkeeping is pinned to, and the tracker actor every MLflow write goes through."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from tuner.config import SweepConfig
from tuner.sweep.events import actor_name
from tuner.sweep.ray_internals import loopback_only
from tuner.tracking.buffered import BufferedTracker


def init_ray(cfg: SweepConfig) -> bool:
    """Join the configured cluster, or start a local Ray on loopback; True if started here."""
    if ray.is_initialized():
        return False
    # Inside a Ray job (``ray job submit`` / RayJob) RAY_ADDRESS names the cluster to join.
    address = cfg.ray.address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=False)
        return False
    # "local": a new Ray of its own, never a ``ray start`` cluster that happens to run here
    # (a plain ``ray.init()`` joins the newest one it finds under /tmp/ray).
    with loopback_only():
        ray.init(
            address="local", num_cpus=cfg.ray.num_cpus, include_dashboard=False, log_to_driver=False
        )
    return True


def alive_nodes() -> list[dict[str, Any]]:
    """Every alive node's total resources, as ``tuner.sweep.preflight`` reads them."""
    return [n for n in ray.nodes() if n.get("Alive")]


def on_driver_node() -> NodeAffinitySchedulingStrategy:
    """Pin to the driver's node: the tracker, the board, the event queue and the tuning task
    hold a sweep's bookkeeping, and on a worker node they would die with it. Trials and final
    retrains run anywhere and are retried from their checkpoints when a node is lost."""
    return NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)


def start_tracker(cfg: SweepConfig, **options: Any) -> Any:
    """The sweep's one tracker actor (every MLflow write goes through it), on the driver's
    node, journaling to ``out_dir/.tracking-journal/<name>`` while MLflow is away.

    One call at a time (no ``max_concurrency``): Ray runs a plain actor's calls in each
    caller's order, which is each run's write order; the tracker writes on its own threads.
    ``options`` go to ``BufferedTracker`` (``workers``, ``flush_every``: the load bench)."""
    return (
        ray.remote(num_cpus=0)(BufferedTracker)
        .options(name=actor_name(cfg.name, "tracker"), scheduling_strategy=on_driver_node())
        .remote(
            cfg.tracking_uri,
            cfg.experiment,
            cfg.artifact_root,
            journal=Path(cfg.out_dir).resolve() / ".tracking-journal" / cfg.name,
            **options,
        )
    )
