"""Write a final run's model as a deliverable folder: weights, config, README.

Where the method merges (``Method.merge``: LoRA, SSF, RepAdapter, FacT, SPT-LoRA) or never
added a module (linear, full, BitFit, LayerNorm), the folder is a plain timm checkpoint:
``model.safetensors`` holds exactly the state dict of a timm architecture, and
``config.json`` names that architecture, its keyword arguments and the ``pretrained_cfg``
(input size, mean/std as the model saw them in training, resize filter, no crop), so
``timm.create_model(arch, pretrained=True, pretrained_cfg_overlay=...)`` loads it through
timm's own path. The claim is checked before it is written: the plain model is built and
must reproduce the tuned model's logits on a probe batch. Otherwise the folder holds the
backbone with the method's modules (and, for SPT, its sensitivity scores), and says that
``petl-sweep`` is needed to load it. Safetensors only: a checkpoint is data, never code.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import timm
import torch
from safetensors.torch import save_file
from torch import nn

from tuner.backbones import TINY_NAME, input_spec, resolve_backbone
from tuner.backbones.timm_models import TINY_ARGS
from tuner.deliver.rebuild import Rebuilt

#: Bump when the folder's layout or meaning changes; a reader refuses other formats.
PACKAGE_FORMAT = 1
WEIGHTS, CONFIG, README = "model.safetensors", "config.json", "README.md"
#: SPT's sensitivity scores, kept where the allocation cannot be merged away
SCORES = "scores.safetensors"
#: Backbones this project registers with timm, as the plain timm architecture that builds
#: them (same module tree, so the same state dict) and the keyword arguments that size it.
PLAIN_ARCHITECTURES: dict[str, tuple[str, dict[str, Any]]] = {
    TINY_NAME: ("vit_tiny_patch16_224", dict(TINY_ARGS)),
}
#: How close the plain model's logits must be to the tuned model's (relative to their scale).
PLAIN_TOLERANCE = 1e-4


def project_version() -> str:
    try:
        return metadata.version("petl-sweep")
    except metadata.PackageNotFoundError:
        return "unknown"


def plain_architecture(backbone: str) -> tuple[str, dict[str, Any]]:
    """(timm architecture name, model kwargs) that plain timm builds ``backbone`` with."""
    name = resolve_backbone(backbone)
    return PLAIN_ARCHITECTURES.get(name, (name, {}))


def pretrained_cfg(rebuilt: Rebuilt) -> dict[str, Any]:
    """The timm ``pretrained_cfg`` overlay describing the model as trained (without ``file``,
    which the loader sets): training's resize (``squash``, no crop) and normalisation."""
    spec, inputs = rebuilt.spec, input_spec(rebuilt.spec.backbone)
    mean, std = (inputs.mean, inputs.std) if spec.train.normalize else ((0.0,) * 3, (1.0,) * 3)
    return {
        "num_classes": rebuilt.num_classes,
        "input_size": [3, inputs.size, inputs.size],
        "interpolation": inputs.interpolation,
        "crop_pct": 1.0,
        "crop_mode": "squash",
        "mean": list(mean),
        "std": list(std),
        "classifier": "head",
    }


def _plain_state(
    model: nn.Module,
    arch: str,
    kwargs: dict[str, Any],
    num_classes: int,
    probe: torch.Tensor,
    reference: torch.Tensor,
) -> dict[str, torch.Tensor] | None:
    """``model``'s state dict if a plain timm ``arch`` loads it strictly and reproduces
    ``reference`` on ``probe``; else None."""
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    plain = timm.create_model(arch, pretrained=False, num_classes=num_classes, **kwargs).eval()
    try:
        plain.load_state_dict(state, strict=True)
    except RuntimeError:
        return None
    with torch.no_grad():
        out = plain(probe)
    scale = max(1.0, float(reference.abs().max()))
    return state if float((out - reference).abs().max()) <= PLAIN_TOLERANCE * scale else None


@dataclass
class Exported:
    """What was written: the folder, its config, and whether plain timm loads it."""

    path: Path
    config: dict[str, Any]

    @property
    def plain(self) -> bool:
        return bool(self.config["plain_timm"])


def export_model(rebuilt: Rebuilt, out: Path, about: dict[str, Any] | None = None) -> Exported:
    """Write ``rebuilt`` into ``out`` (created; existing files replaced). ``about``: what the
    config records beside the model (task, sweep, run, val/test accuracy ...). The rebuilt
    model is merged in place: rebuild again to use it unmerged."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model, method, spec = rebuilt.model.cpu().eval(), rebuilt.method, rebuilt.spec
    arch, kwargs = plain_architecture(spec.backbone)
    cfg = pretrained_cfg(rebuilt)
    size = cfg["input_size"][-1]
    probe = torch.randn(4, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        reference = model(probe)
    petl_state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    scores = getattr(method, "scores", None) if method.needs_prepare() else None
    how = "nothing to merge: the method only changes backbone tensors"
    if method.reparameterisable:
        method.merge(model)
        how = f"{method.name}'s modules merged into the backbone weights"
    state = _plain_state(model, arch, kwargs, rebuilt.num_classes, probe, reference)
    if state is None:
        how = f"not merged: {method.name} adds modules plain timm does not have"
        state = petl_state
        if scores:
            save_file({k: v.contiguous() for k, v in scores.items()}, str(out / SCORES))
    save_file(state, str(out / WEIGHTS))
    names = rebuilt.classes
    config = {
        "format": PACKAGE_FORMAT,
        "petl_sweep_version": project_version(),
        "architecture": arch,
        "model_kwargs": kwargs,
        "num_classes": rebuilt.num_classes,
        "pretrained_cfg": cfg,
        "label_map": {str(i): (names[i] if names else str(i)) for i in range(rebuilt.num_classes)},
        "label_names": names is not None,
        "plain_timm": state is not petl_state,
        "merged": how,
        "petl": {
            "method": method.name,
            "hp": dict(spec.hp),
            "backbone": spec.backbone,
            "task": spec.task,
            "normalize": spec.train.normalize,
            "sensitivity_scores": bool(scores) and state is petl_state,
            **(about or {}),
        },
    }
    (out / CONFIG).write_text(json.dumps(config, indent=1, default=str))
    (out / README).write_text(readme(config))
    return Exported(out, config)


def readme(config: dict[str, Any]) -> str:
    """The folder's README: what it is and the lines that load it."""
    petl = config["petl"]
    head = (
        f"# {petl['task']}: {petl['method']} on {petl['backbone']}\n\n"
        f"Exported by petl-sweep {config['petl_sweep_version']} (package format "
        f"{config['format']}). {config['num_classes']} classes; {config['merged']}.\n"
    )
    facts = {k: petl[k] for k in ("sweep", "run_id", "val_acc", "test_acc") if k in petl}
    if facts:
        head += "\n" + "\n".join(f"- {k}: {v}" for k, v in facts.items()) + "\n"
    if not config["plain_timm"]:
        return head + (
            "\nThis method adds modules plain timm does not have: loading it needs petl-sweep\n"
            f"(the same package format, {config['format']}):\n\n"
            "```\npetl-sweep predict THIS_FOLDER images/ --out preds.csv\n```\n"
        )
    cfg = dict(config["pretrained_cfg"], file="model.safetensors")
    kwargs = "".join(f", {k}={v!r}" for k, v in config["model_kwargs"].items())
    return head + (
        "\nPlain timm loads it (run from this folder, or give the file's full path):\n\n"
        "```python\nimport timm\n"
        f"model = timm.create_model({config['architecture']!r}, pretrained=True, "
        f"num_classes={config['num_classes']}, pretrained_cfg_overlay={cfg!r}{kwargs}).eval()\n"
        "transform = timm.data.create_transform(**timm.data.resolve_data_config(model=model))\n"
        "```\n\n`transform(PIL_image.convert('RGB'))` prepares an image exactly as training did "
        "(resize to the input size, no crop, the trained mean/std); `config.json`'s "
        "`label_map` maps a class id to its name.\n"
    )
