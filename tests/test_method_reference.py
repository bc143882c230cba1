"""Our methods against the first study's own code (PETL_Vision 245d262), all 17 cases.

``tests/fixtures/petl_vision_245d262.*`` holds what *their* code built (written by hand with
``tools/petl_reference_fixture.py`` in a scratch venv with their timm 0.9.12): a small ViT
(width 192, 3 blocks, image 96) per method at study settings, every tensor noised, the
eval-mode float64 logits of one batch, their trainable counts and each PETL tensor as built
before the noise. Here each case is loaded into our model (timm 1.0) with the options the
``petl_vision_vtab1k`` preset sets, and must give the same logits (≤ 1e-6), the same
trainable counts and the same initial distributions (all-zero or not, std, mean). The last
tests switch each option off and check the fixture notices: this is what pins the options.
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import timm
import torch
from safetensors.torch import load_file

from tuner import methods
from tuner.methods.base import count_trainable, head_parameters
from tuner.presets import preset_data

FIXTURE = Path(__file__).parent / "fixtures" / "petl_vision_245d262"
TOLERANCE = 1e-6
STUDY_PRESETS = ("petl_vision_vtab1k", "petl_vision_vtab1k_tpe_asha", "many_shot",
                 "many_shot_large")  # fmt: skip


@cache
def _fixture() -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    meta = json.loads(FIXTURE.with_suffix(".json").read_text())
    return meta, load_file(str(FIXTURE.with_suffix(".safetensors")))


def _prefixed(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v.double() for k, v in tensors.items() if k.startswith(prefix)}


CASES = list(_fixture()[0]["cases"])
SSF_SITES = {"attn.ssf_%s_qkv": "attn_qkv", "attn.ssf_%s_linear": "attn_proj",
             "mlp.ssf_%s_hidden": "mlp_fc1", "mlp.ssf_%s_out": "mlp_fc2",
             "ssf_%s_1": "norm1", "ssf_%s_2": "norm2"}  # fmt: skip


def to_ours(method: str, ref: dict[str, torch.Tensor], depth: int) -> dict[str, torch.Tensor]:
    """The study's PETL tensors under our names and layouts (the test's one translation)."""
    if method.startswith("fact"):  # their FacT module is shared by every block: strip the path
        ref = {re.sub(r"^.*\bfact\.", "fact.", k): v for k, v in ref.items()}
    out: dict[str, torch.Tensor] = {}
    for i in range(depth):
        b, branch = f"blocks.{i}", f"petl_branches.blocks_{i}"
        for site, module in (("attn", "ft_attn_module"), ("mlp", "ft_mlp_module")):
            names = {"down_proj": "down", "up_proj": "up", "adapter_down": "down",
                     "adapter_up": "up", "adapter_conv": "conv", "conv_A": "down",
                     "conv_B": "up"}  # fmt: skip
            for theirs, mine in names.items():
                for leaf in ("weight", "bias"):
                    key = f"{b}.{module}.{theirs}.{leaf}"
                    if key in ref:
                        value = ref[key]
                        if theirs == "conv_A" and leaf == "weight":  # Conv1d(k=1) → our Linear
                            value = value[:, :, 0]
                        out[f"{branch}_{site}.{mine}.{leaf}"] = value
        for n, site in (("1", "attn"), ("2", "mlp")):
            if f"{b}.difffit_gamma{n}" in ref:
                out[f"{branch}_{site}_gamma.gamma"] = ref[f"{b}.difffit_gamma{n}"]
        for theirs, site in SSF_SITES.items():
            if f"{b}.{theirs % 'scale'}" in ref:
                out[f"{branch}_{site}.gamma"] = ref[f"{b}.{theirs % 'scale'}"]
                out[f"{branch}_{site}.beta"] = ref[f"{b}.{theirs % 'shift'}"]
        for leaf in ("a", "b"):
            if f"{b}.attn.lora.lora_{leaf}.weight" in ref:
                out[f"{b}.attn.qkv.lora_{leaf}"] = ref[f"{b}.attn.lora.lora_{leaf}.weight"]
    if "patch_embed.ssf_scale_1" in ref:
        out["petl_branches.patch_embed.gamma"] = ref["patch_embed.ssf_scale_1"]
        out["petl_branches.patch_embed.beta"] = ref["patch_embed.ssf_shift_1"]
        out["petl_branches.norm.gamma"], out["petl_branches.norm.beta"] = (
            ref["ssf_scale"], ref["ssf_shift"])  # fmt: skip
    if "vpt.prompt_embeddings" in ref:
        out["petl_prompts.prompts"] = ref["vpt.prompt_embeddings"]
    if "fact.FacTu.weight" in ref:
        out["petl_fact.u"], out["petl_fact.v"] = ref["fact.FacTu.weight"], ref["fact.FacTv.weight"]
    if "fact.FacTc" in ref:  # TK: Σ_s[a, b] = Σ_k C[b, a, k] P[k, s]
        out["petl_fact.core"] = ref["fact.FacTc"].permute(1, 0, 2)
        out["petl_fact.loadings"] = ref["fact.FacTp"].t()
    if "fact.per_block_para.0.attn.0.weight" in ref:  # TT: 12 r×r cores per block
        cores = []
        for i in range(depth):
            p = f"fact.per_block_para.{i}"
            cores += [ref[f"{p}.attn.{s}.weight"] for s in range(4)]
            fc1, fc2 = ref[f"{p}.mlp.0.weight"], ref[f"{p}.mlp.1.weight"]
            r = fc1.shape[1]
            cores += [fc1[c * r : (c + 1) * r] for c in range(4)]
            cores += [fc2[:, c * r : (c + 1) * r] for c in range(4)]
        out["petl_fact.cores"] = torch.stack(cores)
    return out


def study_options(method: str) -> dict[str, Any]:
    return preset_data("petl_vision_vtab1k")["search"].get("fixed", {}).get(method, {})


def build(case: str, **override: Any) -> dict[str, Any]:
    """Our model for ``case`` with the preset's options (``override`` laid over them)."""
    meta, tensors = _fixture()
    info, arch = meta["cases"][case], meta["arch"]
    torch.manual_seed(0)
    model = timm.create_model("vit_base_patch16_224", pretrained=False,
                              num_classes=meta["num_classes"], **arch)  # fmt: skip
    model.load_state_dict({k: v.float() for k, v in _prefixed(tensors, "backbone/").items()})
    hp = {**info["hp"], **study_options(info["method"]), **override}
    method = methods.get(info["method"], **hp)
    method.apply(model)
    model = model.double().eval()
    params = dict(model.named_parameters())
    built = {n: p.detach().clone() for n, p in params.items() if n.startswith("petl_")
             or ".lora_" in n}  # fmt: skip
    state = to_ours(info["method"], _prefixed(tensors, f"{case}/state/"), arch["depth"])
    assert set(state) == set(built), (sorted(set(state) ^ set(built)))[:6]
    with torch.no_grad():
        for name, value in state.items():
            params[name].copy_(value)
        logits = model(tensors["input"].double())
    total, without_head = count_trainable(model, method)
    return {"logits": logits, "reference": tensors[f"{case}/logits"], "built": built,
            "reference_built": to_ours(info["method"], _prefixed(tensors, f"{case}/built/"),
                                       arch["depth"]),
            "counts": (total, without_head),
            "reference_counts": (info["trainable_total"], info["trainable_without_head"]),
            "head": {n for n, _ in head_parameters(model)}}  # fmt: skip


def init_mismatches(ours: dict[str, torch.Tensor], ref: dict[str, torch.Tensor]) -> list[str]:
    """Tensors whose initial distribution differs: zero vs non-zero, std beyond 25 %, mean
    beyond a quarter std (sample noise of the smallest tensors here is far below that)."""
    bad = []
    for name, r in ref.items():
        o = ours[name].double()
        zero_r, zero_o = not r.any(), not o.any()
        if zero_r or zero_o:
            if zero_r != zero_o:
                bad.append(f"{name}: zero {zero_o} vs study {zero_r}")
            continue
        so, sr = float(o.std()) if o.numel() > 1 else 0.0, float(r.std()) if r.numel() > 1 else 0.0
        if abs(so - sr) > 0.25 * max(so, sr):
            bad.append(f"{name}: std {so:.4g} vs study {sr:.4g}")
        if abs(float(o.mean() - r.mean())) > 0.25 * max(so, sr) + 1e-9:
            bad.append(f"{name}: mean {float(o.mean()):.4g} vs study {float(r.mean()):.4g}")
    return bad


@pytest.mark.parametrize("case", CASES)
def test_logits_and_trainable_counts_match_the_studys_code(case):
    out = build(case)
    delta = float((out["logits"] - out["reference"]).abs().max())
    assert delta <= TOLERANCE, f"{case}: max |Δlogits| {delta:.3g}"
    assert out["counts"] == out["reference_counts"]


@pytest.mark.parametrize("case", CASES)
def test_initial_tensors_are_distributed_as_the_study_built_them(case):
    out = build(case)
    bad = init_mismatches(out["built"], out["reference_built"])
    assert not bad, bad[:4]


def test_there_are_seventeen_cases_covering_every_study_method():
    meta, _ = _fixture()
    assert len(CASES) == 17
    study = set(preset_data("petl_vision_vtab1k")["methods"])
    assert {c["method"] for c in meta["cases"].values()} == study


def test_every_study_preset_sets_the_study_options():
    for name in STUDY_PRESETS:
        data = preset_data(name)
        fixed = data["search"].get("fixed", {})
        for method in data["methods"]:
            assert fixed.get(method, {}) == study_options(method), (name, method)


@pytest.mark.parametrize(
    "case, option",
    [("vpt_shallow", {"prompt_scope": "all_blocks"}), ("fact_tk", {"mlp_layout": "per_slice"})],
)
def test_the_fixture_catches_each_forward_option_switched_off(case, option):
    out = build(case, **option)
    assert float((out["logits"] - out["reference"]).abs().max()) > 1e-3


INIT_DEFAULTS = {"lora": "lora_kaiming", "adapter_houlsby": "xavier",
                 "adapter_pfeiffer": "lora_xavier", "adaptformer": "lora_kaiming",
                 "convpass_xavier": "lora_xavier", "convpass_identity": "lora_xavier",
                 "fact_tt": "xavier_zero", "fact_tk": "xavier_zero"}  # fmt: skip


@pytest.mark.parametrize("case", sorted(INIT_DEFAULTS))
def test_the_fixture_catches_the_declared_init_in_place_of_the_built_one(case):
    out = build(case, init=INIT_DEFAULTS[case])
    assert init_mismatches(out["built"], out["reference_built"])
