"""Requests the cluster can never run: refused before the first trial, or reported.

Ray Tune keeps a trial that no node can hold PENDING forever; its only word is a warning
every 60 s in a worker log the sweep does not show (``log_to_driver=False``). So a sweep
asking ``resources.gpus_per_trial: 1`` on a CPU machine, or 4 CPUs per trial on 2 cores,
printed nothing after ``Started a local Ray instance`` until someone killed it.

``check_resources`` compares one trial's request with every alive node before anything
is scheduled. On a fixed cluster (the local Ray a sweep starts, or one that cannot add
nodes) a request no node can hold is a ``ConfigError`` naming the field, the request and
the largest node. On an autoscaling cluster a node may yet come, so it only says what is
waiting; ``PendingWatch`` then repeats "what is pending and why" every 60 s while no
trial runs, and gives up after ``resources.pending_timeout_s`` with the autoscaler's
last report.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tuner.config import ConfigError, SweepConfig

#: Ray resource name → the config field that asks for it
FIELDS = {"CPU": "resources.cpus_per_trial", "GPU": "resources.gpus_per_trial"}
#: Seconds between two "still pending" messages
EVERY_S = 60.0
#: Where Ray's autoscaler publishes its status in the GCS key-value store
AUTOSCALER_KEY = "__autoscaling_status"


@dataclass(frozen=True)
class Node:
    """An alive node: its name (address) and total resources."""

    name: str
    resources: dict[str, float]

    def show(self) -> str:
        cpus, gpus = self.resources.get("CPU", 0.0), self.resources.get("GPU", 0.0)
        return f"{self.name} ({cpus:g} CPUs, {gpus:g} GPUs)"


def as_nodes(nodes: Iterable[Mapping[str, Any]]) -> list[Node]:
    """Nodes from ``ray.nodes()`` entries (dead ones dropped) or plain resource dicts."""
    out = []
    for i, entry in enumerate(nodes):
        if "Resources" in entry:
            if not entry.get("Alive", True):
                continue
            resources, name = dict(entry["Resources"]), str(entry.get("NodeManagerAddress", ""))
        else:
            resources, name = dict(entry), ""
        ips = [k.removeprefix("node:") for k in resources if k.startswith("node:")]
        ips = [ip for ip in ips if not ip.startswith("__")]  # node:__internal_head__
        out.append(Node(name or (ips[0] if ips else f"node {i}"), resources))
    return out


def trial_request(cfg: SweepConfig) -> dict[str, float]:
    """What one trial asks Ray for (``tune.with_resources``)."""
    request = {"CPU": cfg.resources.cpus_per_trial, "GPU": cfg.resources.gpus_per_trial}
    return {k: v for k, v in request.items() if v > 0}


def fits(request: Mapping[str, float], node: Node) -> bool:
    return all(node.resources.get(k, 0.0) >= v for k, v in request.items())


def _shown(request: Mapping[str, float]) -> str:
    return " and ".join(f"{v:g} {k}s" for k, v in request.items())


def unplaceable(cfg: SweepConfig, nodes: list[Node]) -> str | None:
    """Why no node can hold one trial (fields, request, largest node), or None."""
    request = trial_request(cfg)
    if any(fits(request, node) for node in nodes):
        return None
    short = [k for k, v in request.items() if all(n.resources.get(k, 0.0) < v for n in nodes)]
    names = short or list(request)  # each fits somewhere, never together: name both
    asked = ", ".join(f"{FIELDS[k]} = {request[k]:g}" for k in names)
    key = names[0]
    largest = max(nodes, key=lambda n: (n.resources.get(key, 0.0), n.resources.get("CPU", 0.0)),
                  default=None)  # fmt: skip
    biggest = largest.show() if largest else "none (no alive node)"
    together = "" if short else " on one node"
    return (
        f"{asked}: each trial asks for {_shown(request)}{together}, but no node has that; "
        f"the largest node is {biggest} of {len(nodes)} alive"
    )


def check_resources(
    cfg: SweepConfig, nodes: Iterable[Mapping[str, Any]], autoscaling: bool | None = None
) -> str | None:
    """Before the first trial: raise ``ConfigError`` when no node of a fixed cluster can
    hold one trial; on an autoscaling cluster return what will wait (None when it fits).

    ``nodes``: ``ray.nodes()`` or alive nodes' ``Resources`` dicts. ``autoscaling``: the
    cluster kind (``cluster_autoscales``); default ``resources.autoscaling``, else fixed."""
    found = as_nodes(nodes)
    why = unplaceable(cfg, found)
    if why is None:
        return None
    scaling = cfg.resources.autoscaling if autoscaling is None else autoscaling
    if not scaling:
        raise ConfigError(
            f"{why}. Lower the request, or run on a cluster that has such a node "
            "(resources.autoscaling: true if it can add one)"
        )
    return (
        f"waiting for the autoscaler: {why}; giving up after "
        f"{cfg.resources.pending_timeout_s:.0f} s (resources.pending_timeout_s)"
    )


def autoscaler_report() -> dict[str, Any] | None:
    """The autoscaler's last status from Ray's GCS (None: no autoscaler runs, or no Ray)."""
    try:
        from ray.experimental.internal_kv import _internal_kv_get, _internal_kv_initialized

        if not _internal_kv_initialized():
            return None
        raw = _internal_kv_get(AUTOSCALER_KEY)
    except Exception:  # no Ray, or a Ray without the key-value store
        return None
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


def cluster_autoscales(cfg: SweepConfig) -> bool:
    """``resources.autoscaling`` when set; else: a joined cluster (``ray.address`` or
    ``RAY_ADDRESS``) whose autoscaler has published a status. A local Ray never scales."""
    if cfg.resources.autoscaling is not None:
        return cfg.resources.autoscaling
    if not (cfg.ray.address or os.environ.get("RAY_ADDRESS")):
        return False
    return autoscaler_report() is not None


def autoscaler_reason(report: Mapping[str, Any] | None) -> str:
    """The autoscaler's side of a wait, in one clause: launches, failures, infeasible."""
    if not report:
        return "autoscaler: no report yet"
    inner = report.get("autoscaler_report", report)
    parts = []
    launching = inner.get("pending_launches") or {}
    if launching:
        parts.append("launching " + ", ".join(f"{n} × {t}" for t, n in launching.items()))
    pending = inner.get("pending_nodes") or []
    if pending:
        parts.append(f"{len(pending)} node(s) starting")
    failed = inner.get("failed_nodes") or []
    if failed:
        kinds = sorted({str(f[1]) if isinstance(f, list | tuple) else str(f) for f in failed})
        parts.append(f"{len(failed)} launch(es) failed ({', '.join(kinds)})")
    load = report.get("load_metrics_report", {})
    infeasible = load.get("infeasible_bundles") or inner.get("infeasible_bundles") or []
    if infeasible:
        parts.append(f"infeasible for every node type: {json.dumps(infeasible)[:200]}")
    return "autoscaler: " + ("; ".join(parts) if parts else "no launch under way")


def pending_message(
    cfg: SweepConfig,
    nodes: Iterable[Mapping[str, Any]],
    pending: int,
    waited_s: float,
    report: Mapping[str, Any] | None = None,
) -> str:
    """``3 trial(s) pending for 120 s: ...; autoscaler: ...`` for the periodic line."""
    found = as_nodes(nodes)
    why = unplaceable(cfg, found) or (
        f"each asks for {_shown(trial_request(cfg))}; the cluster has room for none right now"
    )
    return f"{pending} trial(s) pending for {waited_s:.0f} s, none running: {why}; " + (
        autoscaler_reason(report)
    )


class PendingTimeout(RuntimeError):
    """No trial could start for ``resources.pending_timeout_s``."""


@dataclass
class PendingWatch:
    """Call ``tick`` from the driver loop: a line every ``every_s`` while trials are
    pending and none runs, ``PendingTimeout`` after ``resources.pending_timeout_s``."""

    cfg: SweepConfig
    every_s: float = EVERY_S
    since: float | None = None
    said: float = field(default=0.0)

    def tick(
        self,
        pending: int,
        running: int,
        nodes: Iterable[Mapping[str, Any]],
        report: Mapping[str, Any] | None = None,
        now: float | None = None,
    ) -> str | None:
        now = time.time() if now is None else now
        if running or not pending:
            self.since = None
            return None
        if self.since is None:
            self.since, self.said = now, now
            return None
        waited = now - self.since
        if waited >= self.cfg.resources.pending_timeout_s:
            raise PendingTimeout(
                pending_message(self.cfg, nodes, pending, waited, report)
                + f"; gave up after resources.pending_timeout_s = "
                f"{self.cfg.resources.pending_timeout_s:g} s"
            )
        if now - self.said >= self.every_s:
            self.said = now
            return pending_message(self.cfg, nodes, pending, waited, report)
        return None
