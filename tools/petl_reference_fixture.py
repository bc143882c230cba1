"""Write ``tests/fixtures/petl_vision_245d262.*``: the first study's model, as its code builds it.

Run by hand, never in CI (it needs the study's code and its own timm pin, outside the repo).
For every method of the first seed study (Mai et al., PETL_Vision at commit 245d262) it
builds *their* ViT with *their* code on a small ViT (width 192, 3 blocks, 3 heads, patch 16,
image 96), through their ``experiment/build_model.get_model`` so the trainable tensors are
chosen by their rule; records each PETL tensor as built (before any noise: the test compares
our inits' distributions with these); adds non-zero random noise to every tensor (backbone
once, shared by all cases; each case's own tensors), rounds to float16 so the stored values
are exact, and writes the eval-mode float64 logits of one input batch. What is written is
the reference's output (data, not code): ``tests/test_method_reference.py`` loads it into our
model with the presets' options and checks logits, trainable counts and init statistics.

Setup (a scratch checkout and venv outside the repo; their code is imported from there, never
copied here)::

    git --git-dir /work/.mirror/OSU-MLB+PETL_Vision/repo archive 245d262 model experiment \\
        utils main.py | tar -x -C /tmp/petl_ref
    python3 -m venv /tmp/refvenv
    /tmp/refvenv/bin/pip install torch==2.14.1 torchvision==0.29.1 timm==0.9.12 \\
        termcolor tabulate iopath dotwiz pyyaml safetensors
    /tmp/refvenv/bin/python tools/petl_reference_fixture.py --ref /tmp/petl_ref

``--mirror`` does the archive step when ``--ref`` does not exist yet.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

COMMIT = "245d262"
DEFAULT_MIRROR = Path("/work/.mirror/OSU-MLB+PETL_Vision/repo")
OUT = Path(__file__).resolve().parents[1] / "tests" / "fixtures"
ARCH = {"embed_dim": 192, "depth": 3, "num_heads": 3, "patch_size": 16, "img_size": 96}
NUM_CLASSES = 10
BACKBONE_NOISE, METHOD_NOISE = 0.02, 0.05

#: case → (our method, our hyper-parameters at study settings, their command-line settings,
#: taken from experiment/config/method/<their name>.yml with one grid value each).
CASES: dict[str, tuple[str, dict[str, Any], dict[str, Any]]] = {
    "linear": ("linear", {}, {}),
    "full": ("full", {}, {"full": True}),
    "bitfit": ("bitfit", {}, {"bitfit": True}),
    "layernorm": ("layernorm", {}, {"ln": True}),
    "difffit": ("difffit", {}, {"difffit": True}),
    "ssf": ("ssf", {}, {"ssf": True}),
    "vpt_shallow": ("vpt_shallow", {"prompt_length": 5}, {"vpt_mode": "shallow", "vpt_num": 5}),
    "vpt_deep": ("vpt_deep", {"prompt_length": 5}, {"vpt_mode": "deep", "vpt_num": 5}),
    "lora": ("lora", {"rank": 8}, {"lora_bottleneck": 8}),
    "adapter_houlsby": (  # rand_h_adapter.yml
        "adapter_houlsby",
        {"bottleneck": 8, "scale": 0.1},
        {"ft_attn_module": "adapter", "ft_attn_mode": "sequential_after",
         "ft_mlp_module": "adapter", "ft_mlp_mode": "sequential_after",
         "adapter_init": "xavier", "adapter_bottleneck": 8, "adapter_scaler": 0.1},
    ),
    "adapter_pfeiffer": (  # lora_p_adapter.yml
        "adapter_pfeiffer",
        {"bottleneck": 8, "scale": 1.0},
        {"ft_mlp_module": "adapter", "ft_mlp_mode": "sequential_after",
         "adapter_init": "lora_xavier", "adapter_bottleneck": 8, "adapter_scaler": 1.0},
    ),
    "adaptformer": (
        "adaptformer",
        {"bottleneck": 16, "scale": 0.1},
        {"ft_mlp_module": "adapter", "ft_mlp_mode": "parallel", "ft_mlp_ln": "before",
         "adapter_init": "lora_kaiming", "adapter_bottleneck": 16, "adapter_scaler": 0.1},
    ),
    "convpass_xavier": (
        "convpass",
        {"bottleneck": 8, "scale": 1.0, "xavier_init": True},
        {"ft_attn_module": "convpass", "ft_attn_mode": "parallel", "ft_attn_ln": "after",
         "ft_mlp_module": "convpass", "ft_mlp_mode": "parallel", "ft_mlp_ln": "after",
         "convpass_bottleneck": 8, "convpass_scaler": 1.0, "convpass_xavier_init": True},
    ),
    "convpass_identity": (
        "convpass",
        {"bottleneck": 8, "scale": 0.1, "xavier_init": False},
        {"ft_attn_module": "convpass", "ft_attn_mode": "parallel", "ft_attn_ln": "after",
         "ft_mlp_module": "convpass", "ft_mlp_mode": "parallel", "ft_mlp_ln": "after",
         "convpass_bottleneck": 8, "convpass_scaler": 0.1, "convpass_xavier_init": False},
    ),
    "repadapter": (
        "repadapter",
        {"bottleneck": 8, "scale": 1.0},
        {"ft_attn_module": "repadapter", "ft_attn_mode": "sequential_before",
         "ft_mlp_module": "repadapter", "ft_mlp_mode": "sequential_before",
         "repadapter_bottleneck": 8, "repadapter_scaler": 1.0},
    ),
    "fact_tt": ("fact_tt", {"dim": 8, "scale": 1.0}, {"fact_type": "tt", "fact_dim": 8}),
    "fact_tk": ("fact_tk", {"dim": 16, "scale": 1.0}, {"fact_type": "tk", "fact_dim": 16}),
}  # fmt: skip


def _checkout(ref: Path, mirror: Path) -> None:
    """Their code at COMMIT in ``ref`` (a scratch folder outside the repo)."""
    if (ref / "model" / "vision_transformer.py").exists():
        return
    ref.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(
        ["git", "--git-dir", str(mirror), "archive", COMMIT, "model", "experiment", "utils",
         "main.py"], check=True, capture_output=True,
    ).stdout  # fmt: skip
    subprocess.run(["tar", "-x", "-C", str(ref)], input=archive, check=True)


def _import_study(ref: Path) -> tuple[Any, Any, Any]:
    """Their parser, ``get_model`` module and timm, imported from the scratch checkout.

    ``main`` imports the data pipeline (TensorFlow datasets) through ``experiment.run`` and
    ``build_model`` imports the CLIP zero-shot head; neither is used to build a ViT, so both
    are stubbed. ``get_model`` insists on a GPU: it is told there is one while it runs."""
    sys.path.insert(0, str(ref))
    run = types.ModuleType("experiment.run")
    run.basic_run = None  # type: ignore[attr-defined]
    sys.modules["experiment.run"] = run
    clip = types.ModuleType("experiment.build_clip_zs_classifier")
    clip.get_clip_proj = clip.init_imagenet_clip = None  # type: ignore[attr-defined]
    sys.modules["experiment.build_clip_zs_classifier"] = clip
    import main  # their entry point, for its argparse defaults
    import timm
    from experiment import build_model

    if timm.__version__ != "0.9.12":
        raise SystemExit(f"the study pins timm 0.9.12; this venv has {timm.__version__}")
    return main, build_model, timm


def _build(main: Any, build_model: Any, timm: Any, settings: dict[str, Any]):
    """Their model for one case through their ``get_model`` (trainable rule included)."""
    import torch

    params = main.setup_parser().parse_args([])
    small = {"crop_size": ARCH["img_size"], "class_num": NUM_CLASSES,
             "patch_size": ARCH["patch_size"], "drop_path_rate": 0.0}  # fmt: skip
    for key, value in {**settings, **small}.items():
        setattr(params, key, value)

    def small_base_model(p: Any) -> Any:
        # get_base_model's vit_base_patch16_224_in21k branch at width 192 / depth 3, without
        # the checkpoint (loading touches only backbone keys, which the noise replaces)
        model = timm.create_model(
            "vit_base_patch16_224_in21k_petl", drop_path_rate=p.drop_path_rate,
            pretrained=False, params=p, embed_dim=ARCH["embed_dim"], depth=ARCH["depth"],
            num_heads=ARCH["num_heads"], img_size=ARCH["img_size"],
        )  # fmt: skip
        model.reset_classifier(p.class_num)
        return model

    tune_modules = list(build_model.TUNE_MODULES)  # get_model appends to this global
    saved = (torch.cuda.is_available, torch.cuda.current_device, torch.nn.Module.cuda)
    build_model.get_base_model = small_base_model
    torch.cuda.is_available = lambda: True
    torch.cuda.current_device = lambda: "cpu"
    torch.nn.Module.cuda = lambda self, device=None: self
    try:
        model, tuned, without_head = build_model.get_model(params)
    finally:
        torch.cuda.is_available, torch.cuda.current_device, torch.nn.Module.cuda = saved
        build_model.TUNE_MODULES[:] = tune_modules
    return model, sum(p.numel() for p in tuned), int(without_head)


def _unique_tensors(model: Any) -> dict[str, Any]:
    """Every parameter and buffer once, under its first name in the state dict."""
    seen: set[int] = set()
    out = {}
    for name, tensor in model.state_dict(keep_vars=True).items():
        if id(tensor) not in seen:
            seen.add(id(tensor))
            out[name] = tensor
    return out


def main_(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ref", type=Path, default=Path("/tmp/petl_ref"))
    parser.add_argument("--mirror", type=Path, default=DEFAULT_MIRROR)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    _checkout(args.ref, args.mirror)
    study_main, build_model, timm = _import_study(args.ref)
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(0)
    plain, _, _ = _build(study_main, build_model, timm, {})
    g = torch.Generator().manual_seed(1)
    backbone = {k: (v.detach() + BACKBONE_NOISE * torch.randn(v.shape, generator=g)).half()
                for k, v in _unique_tensors(plain).items()}  # fmt: skip
    x = torch.randn(2, 3, ARCH["img_size"], ARCH["img_size"], generator=g).half()
    tensors: dict[str, torch.Tensor] = {f"backbone/{k}": v for k, v in backbone.items()}
    tensors["input"] = x
    meta: dict[str, Any] = {
        "source": {"repo": "https://github.com/OSU-MLB/PETL_Vision", "commit": COMMIT,
                   "timm": timm.__version__, "torch": torch.__version__,
                   "built_by": "tools/petl_reference_fixture.py"},
        "arch": ARCH, "num_classes": NUM_CLASSES, "cases": {},
    }  # fmt: skip
    for index, (case, (method, hp, settings)) in enumerate(CASES.items()):
        torch.manual_seed(100 + index)
        model, total, without_head = _build(study_main, build_model, timm, settings)
        model = model.double().eval()
        unique = _unique_tensors(model)  # FacT's module is held by every block: one name each
        own = {k: v.detach().clone() for k, v in unique.items() if k not in backbone}
        cg = torch.Generator().manual_seed(200 + index)
        noised = {k: (v + METHOD_NOISE * torch.randn(v.shape, generator=cg, dtype=v.dtype))
                  .half() for k, v in own.items()}  # fmt: skip
        with torch.no_grad():
            for k, v in {**backbone, **noised}.items():
                unique[k].copy_(v.double())
            logits = model(x.double())
        for k, v in own.items():
            tensors[f"{case}/built/{k}"] = v.detach().half().contiguous()
            tensors[f"{case}/state/{k}"] = noised[k].contiguous()
        tensors[f"{case}/logits"] = logits.contiguous()
        meta["cases"][case] = {
            "method": method, "hp": hp, "study_settings": settings,
            "trainable_total": total, "trainable_without_head": without_head,
            "keys": sorted(own),
        }  # fmt: skip
        print(f"{case}: {len(own)} own tensors, {without_head} trainable w/o head")
    args.out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(args.out / f"petl_vision_{COMMIT}.safetensors"))
    (args.out / f"petl_vision_{COMMIT}.json").write_text(json.dumps(meta, indent=1) + "\n")
    print(f"wrote {args.out}/petl_vision_{COMMIT}.{{safetensors,json}}")


if __name__ == "__main__":
    main_()
