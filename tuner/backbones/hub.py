"""Can this backbone's pretrained weights be had? Answered in seconds, before any trial.

Without ``backbone_weights``, timm loads a real backbone from the Hugging Face hub (or an
old URL). Offline, every trial then spends about 47 s in hub retries before it fails, the
errors (``LocalEntryNotFoundError``) land in worker logs only, and a sweep of many trials
looks hung for many minutes. ``check_pretrained_weights`` asks the same question once,
the way timm would load them (``_resolve_pretrained_source``: hub first when
``huggingface_hub`` is installed, else the URL, or a file the model's config names):

1. already in the local cache (the hub's, or torch hub's ``checkpoints/``): fine;
2. offline mode (``HF_HUB_OFFLINE``) or the source does not answer one metadata request
   within ``timeout_s`` (in a daemon thread, so a resolver that hangs cannot hold the
   check longer): ``WeightsUnavailableError`` naming ``backbone_weights``;
3. the source answers: fine (the trials download them).
"""

from __future__ import annotations

import os
import threading
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

#: Seconds the one reachability probe may take (a reachable hub answers in well under 1 s)
PROBE_TIMEOUT_S = 8.0
#: The files timm's hub loader looks for, in its order (``hf_hub_filename`` overrides)
HUB_FILES = ("model.safetensors", "open_clip_model.safetensors", "pytorch_model.bin",
             "open_clip_pytorch_model.bin")  # fmt: skip


class WeightsUnavailableError(RuntimeError):
    """The backbone's pretrained weights are neither cached nor downloadable."""


def weights_source(name: str) -> tuple[str, Any]:
    """Where timm would load ``name``'s pretrained weights from: ``("hf-hub", repo or
    (repo, file))``, ``("url", url)``, ``("file", path)``, or ``("", None)`` when timm has
    no pretrained weights for it."""
    from timm.models import get_pretrained_cfg
    from timm.models._builder import _resolve_pretrained_source

    cfg = get_pretrained_cfg(name)
    if cfg is None:
        return "", None
    return _resolve_pretrained_source(cfg.to_dict())


def cached(kind: str, location: Any) -> Path | None:
    """The local copy of the weights, if there is one (nothing touches the network)."""
    if kind == "file":
        return Path(location) if Path(location).is_file() else None
    if kind == "url":
        import torch

        path = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(location).path).name
        return path if path.is_file() else None
    if kind == "hf-hub":
        from huggingface_hub import try_to_load_from_cache

        repo, files = (location, HUB_FILES) if isinstance(location, str) else (
            location[0], (location[1],)
        )  # fmt: skip
        for filename in files:
            found = try_to_load_from_cache(repo, filename)
            if isinstance(found, str):
                return Path(found)
    return None


def _probe(kind: str, location: Any, timeout_s: float) -> str | None:
    """One metadata request to the source; None when it answers, else why not."""
    from huggingface_hub import constants

    if kind == "hf-hub" and constants.HF_HUB_OFFLINE:
        return "HF_HUB_OFFLINE is set"
    outcome: list[str | None] = []

    def ask() -> None:
        try:
            if kind == "hf-hub":
                from huggingface_hub import get_hf_file_metadata, hf_hub_url

                repo, filename = (location, HUB_FILES[0]) if isinstance(location, str) else location
                get_hf_file_metadata(hf_hub_url(repo, filename), timeout=timeout_s)
            else:
                request = urllib.request.Request(location, method="HEAD")
                urllib.request.urlopen(request, timeout=timeout_s).close()
            outcome.append(None)
        except Exception as err:  # any failure: offline, DNS, refused, 404, auth
            outcome.append(f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}")

    thread = threading.Thread(target=ask, name="weights-probe", daemon=True)
    thread.start()
    thread.join(timeout_s + 1)
    return outcome[0] if outcome else f"no answer within {timeout_s:.0f} s"


def check_pretrained_weights(name: str, timeout_s: float = PROBE_TIMEOUT_S) -> Path | None:
    """Raise ``WeightsUnavailableError`` (naming ``backbone_weights``) unless timm can load
    ``name`` pretrained; returns the cached file when there is one."""
    kind, location = weights_source(name)
    fix = (
        "set backbone_weights to a local file or fsspec URL (.safetensors/.pth/.npz), put "
        "them in the hub cache (HF_HOME) on a machine with access, or set "
        "train.pretrained: false"
    )
    if not kind:
        raise WeightsUnavailableError(f"backbone {name}: timm has no pretrained weights; {fix}")
    if kind == "state_dict":
        return None
    found = cached(kind, location)
    if found is not None:
        return found
    if kind == "file":
        raise WeightsUnavailableError(f"backbone {name}: weights file {location} is missing; {fix}")
    where = location if isinstance(location, str) else "/".join(location)
    why = _probe(kind, location, timeout_s)
    if why is None:
        return None
    cache = os.environ.get("HF_HOME", "~/.cache/huggingface") if kind == "hf-hub" else "torch hub"
    raise WeightsUnavailableError(
        f"backbone {name}: pretrained weights ({kind} {where}) are not in the local cache "
        f"({cache}) and cannot be downloaded ({why}); {fix}"
    )
