"""The seed study's protocol, grids and method details, pinned to its public code.

Every expected value below is read off OSU-MLB/PETL_Vision (commit 245d262):
``experiment/config/method/*.yml`` and ``lr_wd_vtab_processed.yml`` for the grids,
``default_vtab_processed.yml`` for the protocol, ``model/{adapter,lora,convpass,fact,
repadapter,block}.py`` and ``engine/trainer.py`` for the method and schedule details.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tuner import methods
from tuner.backbones.timm_models import TINY_NAME, create_backbone
from tuner.data import load_task
from tuner.optim import warmup_cosine
from tuner.sweep.spaces import grid_points, load_space
from tuner.training.settings import TrainSettings
from tuner.training.spec import TrialSpec
from tuner.training.trainer import Trainer

#: PETL_Vision's method grids in our hyper-parameter names (their adapter_bottleneck,
#: adapter_scaler, convpass_*, fact_dim/fact_scaler, lora_bottleneck, repadapter_*, vpt_num).
STUDY_GRIDS: dict[str, dict[str, list]] = {
    "adaptformer": {"bottleneck": [4, 16, 32], "scale": [0.05, 0.1, 0.2]},
    "adapter_houlsby": {"bottleneck": [4, 8, 16, 32], "scale": [0.01, 0.1, 1, 10]},
    # lora_p_adapter.yml: the Pfeiffer variant the study reports on VTAB-1k
    "adapter_pfeiffer": {"bottleneck": [4, 8, 16, 32, 64], "scale": [0.01, 0.1, 1, 10]},
    "convpass": {
        "scale": [0.01, 0.1, 1, 10, 100],
        "bottleneck": [8, 16],
        "xavier_init": [True, False],
    },
    "fact_tk": {"dim": [16, 32, 64], "scale": [0.01, 0.1, 1, 10, 100]},
    "fact_tt": {"dim": [8, 16, 32], "scale": [0.01, 0.1, 1, 10, 100]},
    "lora": {"rank": [1, 8, 16, 32]},
    "repadapter": {"bottleneck": [8, 16, 32], "scale": [0.1, 0.5, 1, 5, 10]},
    "vpt_deep": {"prompt_length": [5, 10, 50, 100]},
    "vpt_shallow": {"prompt_length": [5, 10, 50, 100, 200]},
    "bitfit": {},
    "difffit": {},
    "full": {},
    "layernorm": {},
    "linear": {},
    "ssf": {},
}
#: lr_wd_vtab_processed.yml: one lr x wd grid for every method, full fine-tuning included.
STUDY_LR_WD = {"lr": [0.001, 0.01], "weight_decay": [0.0001, 0.001]}


@pytest.mark.parametrize("method", sorted(STUDY_GRIDS))
def test_published_grid_is_the_studys(method):
    space = load_space(method, "published_grid")
    expanded = {k: list(d.args) for k, d in space.items()}
    assert expanded == {**STUDY_LR_WD, **STUDY_GRIDS[method]}
    sizes = [len(v) for v in expanded.values()]
    assert len(grid_points(space)) == math.prod(sizes)


def _model(name: str, **hp):
    torch.manual_seed(0)
    model = create_backbone(TINY_NAME, 5, pretrained=False).eval()
    method = methods.get(name, **hp)
    return method.apply(model), method


def _x(n: int = 2) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def test_adaptformer_reads_the_residual_stream_not_norm2():
    """ft_mlp_ln: before: the branch is fed the block's x, the MLP norm2(x)."""
    model, _ = _model("adaptformer")
    seen: dict[str, torch.Tensor] = {}
    block = model.blocks[0]
    block.norm2.register_forward_pre_hook(lambda _m, a: seen.__setitem__("x", a[0]))
    block.norm2.register_forward_hook(lambda _m, _a, out: seen.__setitem__("norm2", out))
    branch = model.petl_branches["blocks_0_mlp"]
    branch.register_forward_pre_hook(lambda _m, a: seen.__setitem__("branch", a[0]))
    model(_x())
    torch.testing.assert_close(seen["branch"], seen["x"], rtol=0, atol=0)
    assert not torch.allclose(seen["branch"], seen["norm2"])


def test_adapters_are_relu_dropout_with_the_studys_inits():
    """model/adapter.py: down -> ReLU -> dropout 0.1 -> up; AdaptFormer lora_kaiming (up = 0,
    biases 0), the Houlsby/Pfeiffer "rand" adapters xavier (random up)."""
    model, method = _model("adaptformer")
    branch = model.petl_branches["blocks_0_mlp"]
    assert isinstance(branch.act, nn.ReLU) and branch.dropout.p == 0.1
    assert not branch.up.weight.any() and not branch.down.bias.any()
    assert method.preserves_init
    model, method = _model("adapter_houlsby")
    branch = model.petl_branches["blocks_0_attn"]
    assert branch.up.weight.abs().sum() > 0 and branch.dropout.p == 0.1
    assert not method.preserves_init
    bound = math.sqrt(6 / sum(branch.up.weight.shape))  # xavier_uniform's bound
    assert branch.up.weight.abs().max() <= bound


@pytest.mark.parametrize(
    "name, module_path",
    [
        ("lora", "blocks.0.attn.qkv"),
        ("adaptformer", "petl_branches.blocks_0_mlp"),
        ("convpass", "petl_branches.blocks_0_attn"),
        ("repadapter", "petl_branches.blocks_0_attn"),
        ("fact_tt", "petl_fact"),
    ],
)
def test_dropout_inside_the_update_in_training_only(name, module_path):
    """The study's dropout 0.1 (lora.py, adapter.py, convpass.py, repadapter.py, fact.py):
    two training passes differ, eval passes agree. Zero-initialised branches are given a
    random up-projection first so the dropout is visible in the output."""
    model, _ = _model(name)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.startswith(module_path) and not p.any():
                p.normal_(0, 0.5)
    module = model.get_submodule(module_path)
    assert any(isinstance(m, nn.Dropout) and m.p == 0.1 for m in module.modules())
    x = _x()
    model.train()
    torch.manual_seed(0)
    a = model(x)
    torch.manual_seed(1)
    b = model(x)
    assert not torch.allclose(a, b)
    model.eval()
    torch.testing.assert_close(model(x), model(x), rtol=0, atol=0)


def test_convpass_kernel_starts_as_the_identity_unless_xavier():
    model, _ = _model("convpass", bottleneck=4)
    conv = model.petl_branches["blocks_0_attn"].conv.weight
    torch.testing.assert_close(conv[:, :, 1, 1], torch.eye(4))
    assert conv[:, :, 0, 0].abs().sum() == 0
    model, _ = _model("convpass", bottleneck=4, xavier_init=True)
    assert model.petl_branches["blocks_0_attn"].conv.weight[:, :, 0, 0].abs().sum() > 0


def test_step_schedule_starts_at_warmup_lr_init_and_ends_at_the_floor():
    lr, start, floor = 1e-3, 1e-6, 1e-5
    factor = warmup_cosine(100, 10, start / lr, floor / lr)
    assert factor(0) * lr == pytest.approx(start)
    assert factor(10) == pytest.approx(1.0)
    assert factor(100) * lr == pytest.approx(floor)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    load_task("synth/count", root, 32)
    return root


def _spec(data_root: Path, epochs: int = 6, **train) -> TrialSpec:
    """The bitfit run of these tests; keywords are ``TrainSettings`` fields."""
    return TrialSpec(task="synth/count", method="bitfit", hp={"lr": 1e-2, "weight_decay": 1e-3},
                     epochs=epochs, data_root=str(data_root), threads=1, seed=0,
                     train=TrainSettings(**{"batch_size": 256, **train}))  # fmt: skip


def test_epoch_schedule_is_the_studys_loop(data_root):
    """engine/trainer.py: timm's CosineLRScheduler(t_initial=epochs, warmup_t, lr_min,
    warmup_lr_init), stepped after epoch e with e, so epoch 0 and 1 both run at the warm-up
    start and epoch e >= 1 runs at f(e - 1); f is the cosine over the whole run."""
    epochs, warmup, lr, lr_min, start = 6, 2, 1e-2, 1e-5, 1e-6

    def f(t: int) -> float:
        if t < warmup:
            return start + t * (lr - start) / warmup
        return lr_min + 0.5 * (lr - lr_min) * (1 + math.cos(math.pi * t / epochs))

    spec = _spec(data_root, epochs=epochs, warmup_epochs=warmup, lr_min=lr_min,
                 warmup_lr_init=start, lr_schedule="epoch")  # fmt: skip
    used = [m["lr"] for m in Trainer(spec).epochs()]
    assert used == pytest.approx([f(0)] + [f(e - 1) for e in range(1, epochs)], rel=1e-9)


def test_weight_decay_reaches_every_tuned_tensor_under_the_studys_policy(data_root):
    """engine/optimizer.py passes every tuned tensor to one AdamW with weight decay: bitfit's
    biases decay too. The default policy exempts vectors (kept as an option)."""
    study = Trainer(_spec(data_root, weight_decay_on="all"))
    assert [g["weight_decay"] for g in study.optimizer.param_groups] == [1e-3]
    default = Trainer(_spec(data_root))
    decayed = sum(p.numel() for g in default.optimizer.param_groups if g["weight_decay"] > 0
                  for p in g["params"])  # fmt: skip
    head = default.model.get_classifier().weight.numel()
    assert decayed == head  # only the head's matrix: every bias is exempt


def test_protocol_drop_path_and_per_epoch_val_loss(data_root):
    """drop_path_rate 0.1 (timm's stochastic depth, linear over depth), and val loss logged
    every tuning epoch beside val accuracy (study 001 reads overfitting from it)."""
    trainer = Trainer(_spec(data_root, drop_path=0.1, epochs=2))
    assert trainer.model.blocks[-1].drop_path1.drop_prob == pytest.approx(0.1)
    history = list(trainer.epochs())
    for metrics in history:
        logits, labels = trainer.predict("val") if metrics is history[-1] else (None, None)
        assert metrics["val/loss"] > 0 and 0 <= metrics["val/acc"] <= 1
    assert history[-1]["val/loss"] == pytest.approx(float(F.cross_entropy(logits, labels)))
