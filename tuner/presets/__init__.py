"""The seed studies' protocols as presets: ``petl-sweep run --preset NAME [sweep.yaml]``.

A preset is a sweep config shipped with the package (``tuner/presets/<name>.yaml``): the
study's tasks, methods, backbone, epochs, schedule, regularisation and grids, with the source
of every value in its header comment. ``extends: OTHER`` makes a variant (the ``*_tpe_asha``
ones change only the search). A user's sweep file is laid over the preset, key by key, so
``--preset petl_vision_vtab1k`` with a file holding ``data_root`` and ``tasks`` runs the
study's protocol on the user's data. Relative ``search.spaces_dir`` paths in a preset are
relative to this folder.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from tuner.util import unknown_message

PRESET_DIR = Path(__file__).parent


def list_presets() -> dict[str, str]:
    """Preset name -> its one-paragraph description (the header comment's first lines)."""
    out = {}
    for path in sorted(PRESET_DIR.glob("*.yaml")):
        lines = []
        for line in path.read_text().splitlines():
            if not line.startswith("#") or line.strip() == "#":
                break
            lines.append(line.lstrip("# ").rstrip())
        out[path.stem] = " ".join(lines)
    return out


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` laid on ``base``: mappings merge key by key, anything else replaces."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def preset_data(name: str, _seen: tuple[str, ...] = ()) -> dict[str, Any]:
    """The resolved config mapping of preset ``name`` (``extends`` followed)."""
    path = PRESET_DIR / f"{name}.yaml"
    if not path.is_file():
        raise KeyError(unknown_message("preset", name, list(list_presets())))
    if name in _seen:
        raise ValueError(f"preset {name}: extends itself through {' -> '.join(_seen)}")
    data = yaml.safe_load(path.read_text()) or {}
    parent = data.pop("extends", None)
    if parent:
        data = deep_merge(preset_data(parent, (*_seen, name)), data)
    spaces = data.get("search", {}).get("spaces_dir")
    if spaces and not Path(spaces).is_absolute():
        data["search"]["spaces_dir"] = str(PRESET_DIR / spaces)
    return data
