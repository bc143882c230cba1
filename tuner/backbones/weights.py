"""Turn a weights reference (path or fsspec URL) into weights loaded in a timm backbone.

Offline clusters cannot reach the model hub, so ``backbone_weights`` names a file instead:
``.safetensors``, ``.pth``/``.pt``/``.bin`` (read with ``weights_only=True``: a checkpoint is
data, never code) or Google's ``.npz`` ViT format (timm's own JAX loader). Remote URLs
(``s3://``, ``gs://``, ``memory://`` ...) are copied once into a local cache keyed by URL and
the remote etag/size, so concurrent trials on a node share one download.

State dicts go through the architecture's timm ``checkpoint_filter_fn`` (CLIP/DINOv2 name
mapping, position-embedding resizing), the classifier is dropped when its shape differs (the
task gets a fresh head), and anything else that does not fit is an error naming the file,
the backbone and the first offending keys: a silent partial load would look like a bad method.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tuner.util import atomic_write, content_hash

STATE_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")
NPZ_SUFFIX = ".npz"
#: Keys that wrap the real state dict in common training checkpoints, tried in order.
WRAPPERS = ("state_dict", "model", "model_state_dict", "module", "teacher")
SHOWN = 5


class WeightsMismatchError(ValueError):
    """A weights file that does not fit the backbone (names file, backbone, offending keys)."""


def cache_dir() -> Path:
    """Where remote weights are cached: ``$PETL_WEIGHTS_CACHE`` or ``~/.cache/petl-sweep``."""
    default = Path.home() / ".cache" / "petl-sweep" / "weights"
    return Path(os.environ.get("PETL_WEIGHTS_CACHE", default))


def _is_local(ref: str) -> bool:
    return "://" not in ref or ref.startswith("file://")


def _local_path(ref: str) -> Path:
    return Path(ref.removeprefix("file://")).expanduser()


def _remote_identity(ref: str) -> tuple[Any, str, str]:
    """(filesystem, path, identity): identity changes when the remote object changes."""
    import fsspec

    fs, path = fsspec.core.url_to_fs(ref)
    info = fs.info(path)
    version = [info.get(k) for k in ("ETag", "etag", "size", "LastModified", "mtime", "created")]
    return fs, path, f"{ref}|{version}"


def fetch(ref: str, cache: Path | None = None) -> Path:
    """A local path holding the file ``ref`` names, downloading remote URLs once."""
    if _is_local(ref):
        path = _local_path(ref)
        if not path.is_file():
            raise FileNotFoundError(f"backbone weights file not found: {ref}")
        return path
    fs, path, identity = _remote_identity(ref)
    key = content_hash(identity)
    target = Path(cache or cache_dir()) / key / Path(path).name
    if not target.exists():
        with atomic_write(target) as partial:  # a concurrent reader never sees half a file
            fs.get_file(path, str(partial))
    return target


@functools.lru_cache(maxsize=64)
def fingerprint(ref: str) -> str:
    """Identity of the weights' content for the study hash (content hash for local files)."""
    if not _is_local(ref):
        return content_hash(_remote_identity(ref)[2])
    digest = hashlib.sha256()
    with fetch(ref).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:16]


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors``/``.pth``/``.pt``/``.bin`` file, wrappers removed."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        obj: Any = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # UnpicklingError and friends: the file holds more than tensors
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
        reason = f"it pickles {found.group(1)}" if found else str(err).splitlines()[0]
        raise ValueError(
            f"{path}: refused to load (weights_only=True allows tensors and plain containers "
            f"only; {reason})"
        ) from err
    while isinstance(obj, dict) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
        inner = next((obj[k] for k in WRAPPERS if isinstance(obj.get(k), dict)), None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a state dict, got {type(obj).__name__}")
    from timm.models import clean_state_dict  # strips DDP's "module." prefix

    return clean_state_dict({k: v for k, v in obj.items() if isinstance(v, torch.Tensor)})


def _filter_fn(model: nn.Module) -> Callable[..., dict[str, torch.Tensor]] | None:
    """timm's ``checkpoint_filter_fn`` of the module that defines the model's class."""
    return getattr(sys.modules.get(type(model).__module__), "checkpoint_filter_fn", None)


def _head_prefixes(model: nn.Module) -> tuple[str, ...]:
    classifier = getattr(model, "pretrained_cfg", {}).get("classifier") or "head"
    names = classifier if isinstance(classifier, (list, tuple)) else (classifier,)
    return tuple(f"{n}." for n in names)


def _first(items: list[str]) -> str:
    more = f" ... ({len(items)} in all)" if len(items) > SHOWN else ""
    return ", ".join(items[:SHOWN]) + more


def _mismatch(source: str, name: str, problems: list[str]) -> WeightsMismatchError:
    return WeightsMismatchError(
        f"weights {source} do not fit backbone {name}: " + "; ".join(problems)
    )


def load_state_dict_into(
    model: nn.Module, state: dict[str, torch.Tensor], source: str, name: str
) -> None:
    """Filter ``state`` like timm does, drop a differing head, load; raise if anything else
    is missing, unexpected or of the wrong shape."""
    filter_fn, note = _filter_fn(model), []
    if filter_fn is not None:
        try:
            state = filter_fn(state, model)
        except Exception as err:  # a foreign layout can break the filter: still report keys
            note = [f"timm checkpoint filter failed: {err}"]
    own = model.state_dict()
    heads = _head_prefixes(model)
    state = {
        k: v
        for k, v in state.items()
        if not (k.startswith(heads) and (k not in own or own[k].shape != v.shape))
    }
    missing = [k for k in own if k not in state and not k.startswith(heads)]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k} {tuple(state[k].shape)} vs model {tuple(v.shape)}"
        for k, v in own.items()
        if k in state and state[k].shape != v.shape
    ]
    problems = [
        f"{label} ({len(keys)}): {_first(keys)}"
        for label, keys in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("shape mismatches", shapes),
        )
        if keys
    ]
    if problems:
        raise _mismatch(source, name, problems + note)
    model.load_state_dict(state, strict=False)


def load_npz_into(model: nn.Module, path: Path, source: str, name: str) -> None:
    """Google's JAX ``.npz`` ViT through timm's loader, with a readable error when it fails."""
    import numpy as np

    load = getattr(model, "load_pretrained", None)
    if load is None:
        raise ValueError(f"{source}: .npz weights need a timm VisionTransformer, not {name}")
    with np.load(path, allow_pickle=False) as npz:
        found = {int(m) for k in npz.files for m in re.findall(r"encoderblock_(\d+)/", k)}
    depth = len(getattr(model, "blocks", []))
    problems = []
    if found and found != set(range(depth)):
        missing = sorted(set(range(depth)) - found)
        extra = sorted(found - set(range(depth)))
        problems.append(f"model has {depth} blocks, file has {len(found)}")
        problems += [f"missing blocks {missing}"] * bool(missing)
        problems += [f"unexpected blocks {extra}"] * bool(extra)
    if not problems:
        try:
            with torch.no_grad():
                load(str(path))
            return
        except KeyError as err:
            problems.append(f"missing keys (1+): {err.args[0]}")
        except (RuntimeError, ValueError) as err:
            problems.append(f"shape mismatches: {str(err).splitlines()[0]}")
    raise _mismatch(source, name, problems)


def load_weights(model: nn.Module, ref: str, name: str, cache: Path | None = None) -> nn.Module:
    """Load the weights ``ref`` names into ``model`` (a timm model called ``name``)."""
    path = fetch(ref, cache)
    suffix = Path(ref).suffix.lower() or path.suffix.lower()
    if suffix == NPZ_SUFFIX:
        load_npz_into(model, path, ref, name)
    elif suffix in STATE_SUFFIXES:
        load_state_dict_into(model, read_state_dict(path), ref, name)
    else:
        raise ValueError(
            f"{ref}: unknown weights format {suffix!r}; use one of "
            f"{', '.join((*STATE_SUFFIXES, NPZ_SUFFIX))}"
        )
    return model
