"""The registry matrix: every registered method is checked here automatically.

Adding a method to the registry without a parameter-count formula below fails
``test_every_method_has_a_formula`` — the formula is the method's contract.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from conftest import give_sensitivity
from torch import nn

from tuner import methods
from tuner.methods.base import MergeScaled, head_parameters, set_merge_factor
from tuner.tracking.artifacts import read_trainable, trainable_bytes

NUM_CLASSES = 5
ALL = methods.list_methods()


def _arch(model: nn.Module) -> tuple[int, int, int]:
    """(width d, depth L, MLP hidden width) of a timm ViT."""
    block = model.blocks[0]
    return model.embed_dim, len(model.blocks), block.mlp.fc1.out_features


def _backbone_params(model: nn.Module) -> int:
    head = {id(p) for _, p in head_parameters(model)}
    return sum(p.numel() for p in model.parameters() if id(p) not in head)


def _bias_count(model: nn.Module) -> int:
    d, depth, hidden = _arch(model)
    # per block: norm1, qkv (3d), proj, norm2, fc1 (hidden), fc2; plus final norm, patch embed
    return depth * (d + 3 * d + d + d + hidden + d) + d + d


def _norm_count(model: nn.Module) -> int:
    """LayerNorm affine parameters: two norms per block and the final norm."""
    d, depth, _ = _arch(model)
    return (2 * depth + 1) * 2 * d


def _adapter(d: int, r: int) -> int:
    """One bottleneck adapter: down (d·r + r) and up (r·d + d)."""
    return 2 * d * r + r + d


def _spt_eligible(m: nn.Module) -> int:
    """SPT's allocation pool: block matrices (q, k, v, proj, fc1, fc2), block vectors
    (norm affines, biases) and the final norm; no patch/position embedding, token or head."""
    d, depth, hidden = _arch(m)
    matrices = 3 * d * d + d * d + d * hidden + hidden * d
    vectors = 2 * d + 2 * d + 3 * d + d + hidden + d
    return depth * (matrices + vectors) + 2 * d


def _formula(name: str, m: nn.Module, hp: dict) -> int:
    d, depth, hidden = _arch(m)
    r = hp.get("bottleneck", hp.get("rank", hp.get("dim", 0)))
    return {
        "linear": lambda: 0,
        "full": lambda: _backbone_params(m),
        "bitfit": lambda: _bias_count(m),
        "layernorm": lambda: _norm_count(m),
        # biases + LayerNorm weights + per-block γ on attention and MLP branches
        "difffit": lambda: _bias_count(m) + _norm_count(m) // 2 + depth * 2 * d,
        # γ and β after qkv, proj, fc1, fc2, norm1, norm2; patch embedding; final norm
        "ssf": lambda: 2 * (depth * (3 * d + d + hidden + d + 2 * d) + d + d),
        "vpt_deep": lambda: depth * hp["prompt_length"] * d,
        "vpt_shallow": lambda: hp["prompt_length"] * d,
        "lora": lambda: depth * r * (d + 3 * d),
        "adapter_houlsby": lambda: depth * 2 * _adapter(d, r),
        "adapter_pfeiffer": lambda: depth * _adapter(d, r),
        "adaptformer": lambda: depth * _adapter(d, r),
        "convpass": lambda: depth * 2 * (2 * d * r + 9 * r * r + 2 * r + d),
        # down d·r + r, group-wise (2 groups) up d·r/2 + d, before attention and MLP
        "repadapter": lambda: depth * 2 * (d * r + r + d * r // 2 + d),
        # 12 d×d slices per block: q, k, v, proj, 4 of fc1, 4 of fc2
        "fact_tt": lambda: 2 * d * r + 12 * depth * r * r,
        "fact_tk": lambda: 2 * d * r + r**3 + 12 * depth * r,
        # exactly the budget (a fraction of the pool), plus the always-trained class token
        "spt_lora": lambda: round(hp["budget"] * _spt_eligible(m)) + d,
        "spt_adapter": lambda: round(hp["budget"] * _spt_eligible(m)) + d,
    }[name]()


#: Trainable parameters excluding the head, as each method's paper defines them.
FORMULAS: dict[str, Callable[[nn.Module, dict], int]] = {
    name: (lambda m, hp, name=name: _formula(name, m, hp))
    for name in [
        "linear",
        "full",
        "bitfit",
        "layernorm",
        "difffit",
        "ssf",
        "vpt_deep",
        "vpt_shallow",
        "lora",
        "adapter_houlsby",
        "adapter_pfeiffer",
        "adaptformer",
        "convpass",
        "repadapter",
        "fact_tt",
        "fact_tk",
        "spt_lora",
        "spt_adapter",
    ]
}


def _batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(8, 3, 32, 32, generator=g), torch.randint(0, NUM_CLASSES, (8,), generator=g)


def _applied(tiny_backbone, name: str, seed: int = 0):
    model = tiny_backbone(NUM_CLASSES, seed)
    method = give_sensitivity(methods.get(name), model, NUM_CLASSES)
    return method.apply(model), method


def _train_steps(model: nn.Module, method, steps: int, lr: float = 1e-2) -> list[float]:
    opt = torch.optim.AdamW(method.param_groups(model, 1e-4), lr=lr)
    x, y = _batch()
    model.train()
    losses = []
    for _ in range(steps):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def test_every_method_has_a_formula():
    assert set(ALL) == set(FORMULAS), "add a parameter-count formula for each new method"


def test_registry_rejects_duplicates_and_unknowns():
    with pytest.raises(ValueError, match="registered twice"):
        methods.register(type(methods.get("lora")))
    with pytest.raises(KeyError, match=r"valid: .*lora"):
        methods.get("lorra")
    with pytest.raises(ValueError, match="unknown hyper-parameter"):
        methods.get("lora", rnak=4)
    assert methods.list_methods("vpt_*") == [n for n in ALL if n.startswith("vpt_")]


@pytest.mark.parametrize("name", ALL)
def test_only_declared_tensors_get_gradients(tiny_backbone, name):
    model, method = _applied(tiny_backbone, name)
    declared = {id(p) for _, p in method.trainable_parameters(model)}
    x, y = _batch()
    F.cross_entropy(model.train()(x), y).backward()
    for pname, param in model.named_parameters():
        if id(param) in declared:
            assert param.requires_grad and param.grad is not None, pname
        else:
            assert not param.requires_grad and param.grad is None, pname
    for _, param in head_parameters(model):
        assert id(param) in declared and param.grad.abs().sum() > 0


@pytest.mark.parametrize("name", ALL)
def test_trainable_count_matches_formula(tiny_backbone, name):
    model, method = _applied(tiny_backbone, name)
    total, without_head = methods.count_trainable(model, method)
    assert without_head == FORMULAS[name](model, method.hp)
    d = model.embed_dim
    assert total - without_head == d * NUM_CLASSES + NUM_CLASSES


@pytest.mark.parametrize("name", ALL)
def test_weight_decay_policy_covers_exactly_the_trainable_tensors(tiny_backbone, name):
    model, method = _applied(tiny_backbone, name)
    groups = method.param_groups(model, 0.05)
    grouped = [id(p) for g in groups for p in g["params"]]
    assert sorted(grouped) == sorted(id(p) for _, p in method.trainable_parameters(model))
    names = {id(p): n for n, p in method.trainable_parameters(model)}
    for group in groups:
        for p in group["params"]:
            assert (group["weight_decay"] > 0) == method.decays(names[id(p)], p)
    head_w = model.get_classifier().weight
    decayed = {id(p) for g in groups if g["weight_decay"] > 0 for p in g["params"]}
    assert id(head_w) in decayed and id(model.get_classifier().bias) not in decayed


@pytest.mark.parametrize("name", ALL)
def test_init_equivalence_where_promised(tiny_backbone, name):
    x, _ = _batch()
    before = tiny_backbone(NUM_CLASSES)(x)
    model, method = _applied(tiny_backbone, name)
    after = model.eval()(x)
    if method.preserves_init:
        torch.testing.assert_close(after, before, rtol=0, atol=0)
    else:
        assert not torch.allclose(after, before)


@pytest.mark.parametrize("name", ALL)
def test_merge_factor_zero_is_the_pretrained_backbone(tiny_backbone, name):
    model, method = _applied(tiny_backbone, name)
    added = {id(p) for m in model.modules() if isinstance(m, MergeScaled) for p in m.parameters()}
    head = {id(p) for _, p in head_parameters(model)}
    tuned = {id(p) for _, p in method.trainable_parameters(model)} - head
    if not added:
        pytest.skip(f"{name} adds no branch to scale")
    if not tuned <= added:
        pytest.skip(f"{name} tunes backbone tensors in place: α interpolation is WiSE-FT's job")
    _train_steps(model, method, 3)
    reference = tiny_backbone(NUM_CLASSES)
    reference.get_classifier().load_state_dict(model.get_classifier().state_dict())
    x, _ = _batch(1)
    set_merge_factor(model, 0.0)
    torch.testing.assert_close(model.eval()(x), reference(x), rtol=1e-5, atol=1e-5)
    set_merge_factor(model, 1.0)
    assert not torch.allclose(model(x), reference(x), atol=1e-4)


@pytest.mark.parametrize("name", [n for n in ALL if methods.method_class(n).reparameterisable])
def test_merge_folds_into_plain_backbone(tiny_backbone, name):
    model, method = _applied(tiny_backbone, name)
    _train_steps(model, method, 3)
    x, _ = _batch(1)
    before = model.eval()(x)
    merged = method.merge(model)
    torch.testing.assert_close(merged(x), before, rtol=1e-5, atol=1e-5)
    plain_keys = set(tiny_backbone(NUM_CLASSES).state_dict())
    assert set(merged.state_dict()) == plain_keys, "merge must leave zero inference overhead"


@pytest.mark.parametrize("name", ALL)
def test_trainable_state_round_trip(tiny_backbone, name):
    model, method = _applied(tiny_backbone, name)
    _train_steps(model, method, 2)
    # the very bytes a sweep's final run logs as trainable.safetensors
    meta = {"method": name, "hp": method.hp, "backbone": "tiny", "task": "synth/count"}
    tensors, read_meta = read_trainable(trainable_bytes(method.trainable_state_dict(model), meta))
    assert read_meta == meta
    fresh = tiny_backbone(NUM_CLASSES)
    fresh_method = give_sensitivity(methods.get(name, **read_meta["hp"]), fresh, NUM_CLASSES)
    fresh = fresh_method.apply(fresh)
    fresh_method.load_trainable_state_dict(fresh, tensors)
    x, _ = _batch(2)
    torch.testing.assert_close(fresh.eval()(x), model.eval()(x), rtol=0, atol=0)


@pytest.mark.parametrize("name", ALL)
def test_a_few_steps_lower_the_loss(tiny_backbone, name):
    model, method = _applied(tiny_backbone, name)
    # full moves every weight, and convpass's identity-initialised kernel at scale 1 is a
    # high-gain bypass: both want a lower lr
    lr = {"full": 1e-3, "convpass": 3e-3}.get(name, 1e-2)
    x, y = _batch()
    with torch.no_grad():  # measured in eval mode: the methods' dropout makes train loss noisy
        before = F.cross_entropy(model.eval()(x), y).item()
    losses = _train_steps(model, method, 20, lr=lr)
    with torch.no_grad():
        after = F.cross_entropy(model.eval()(x), y).item()
    assert after < 0.85 * before, (before, after, losses)
