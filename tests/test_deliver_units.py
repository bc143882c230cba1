"""Delivery without a sweep: the champion rule, image decoding, packages of both kinds.

Tiny seeded models stand in for trained ones (a LoRA whose B is non-zero, so merging
really changes the weights); the sweep-based checks are in ``test_deliver_e2e``.
"""

from __future__ import annotations

import base64
import json
import math

import pytest
import torch
from PIL import Image

from tests.conftest import give_sensitivity
from tuner import methods
from tuner.data.cache import _decode_image
from tuner.deliver import DeliverError
from tuner.deliver.champion import candidates, champions, select
from tuner.deliver.export import PACKAGE_FORMAT, export_model, project_version
from tuner.deliver.images import ImageError, collect, decode
from tuner.deliver.package import load_package
from tuner.deliver.rebuild import Rebuilt
from tuner.deliver.register import _better, model_name
from tuner.tracking.names import PARENT_RUN_TAG
from tuner.training.spec import TrialSpec


def _study(task, method, val, start=0):
    tags = {"stage": "tune", "study": f"{task}:{method}", "task": task, "method": method,
            "protocol": "p1", "backbone": "b", "sweep": "s"}  # fmt: skip
    return {"run_id": f"s-{task}-{method}", "status": "FINISHED", "start_time": start,
            "tags": tags, "metrics": {"best_val_acc": val}, "params": {}}  # fmt: skip


def _final(task, method, test, params, seed=1000):
    tags = {"stage": "final", "study": f"{task}:{method}", "task": task, "method": method,
            "seed": str(seed)}  # fmt: skip
    return {"run_id": f"f-{task}-{method}-{seed}", "status": "FINISHED", "start_time": 1,
            "tags": tags, "metrics": {"test/acc": test, "trainable_params": params},
            "params": {"lr": "0.01", "rank": "4", "seed": str(seed)}}  # fmt: skip


def test_champion_is_best_validation_never_test():
    studies = [_study("t/a", "linear", 0.80), _study("t/a", "lora", 0.70)]
    finals = [_final("t/a", "linear", 0.10, 50), _final("t/a", "lora", 0.99, 10)]
    best = champions(candidates(studies, finals))["t/a"]
    assert (best.method, best.val_acc, best.test_acc) == ("linear", 0.80, 0.10)


def test_champion_ties_fewer_params_then_registry_order():
    order = methods.list_methods()
    first, later = sorted(["lora", "bitfit"], key=order.index)
    studies = [_study("t/a", m, 0.5) for m in ("lora", "bitfit", "linear")]
    finals = [_final("t/a", "lora", 0.5, 20), _final("t/a", "bitfit", 0.5, 20),
              _final("t/a", "linear", 0.5, 30)]  # fmt: skip
    assert champions(candidates(studies, finals))["t/a"].method == first
    finals[0 if first == "lora" else 1]["metrics"]["trainable_params"] = 25
    assert champions(candidates(studies, finals))["t/a"].method == later


def test_champion_skips_failed_and_unfinished_and_uses_first_seed():
    studies = [_study("t/a", "lora", 0.9), _study("t/a", "linear", math.nan),
               _study("t/a", "bitfit", 0.95)]  # fmt: skip
    studies[2]["status"] = "FAILED"
    finals = [_final("t/a", "lora", 0.6, 10, seed=1001), _final("t/a", "lora", 0.4, 10, 1000),
              _final("t/a", "linear", 0.9, 5)]  # fmt: skip
    trial = {**studies[0], "tags": {**studies[0]["tags"], PARENT_RUN_TAG: "x"}}
    found = candidates([*studies, trial], finals)
    assert [c.method for c in found] == ["lora"]
    c = found[0]
    assert (c.run_id, c.test_acc, c.seeds) == ("f-t/a-lora-1000", 0.4, 2)
    assert c.test_acc_mean == pytest.approx(0.5)
    assert c.hp == {"rank": "4"}


def test_select_errors_name_what_is_valid():
    found = candidates([_study("t/a", "lora", 0.9)], [_final("t/a", "lora", 0.5, 1)])
    with pytest.raises(DeliverError, match="no finished final runs"):
        select([])
    with pytest.raises(DeliverError, match=r"unknown task 't/b'.*t/a"):
        select(found, task="t/b")
    with pytest.raises(DeliverError, match="unknown method 'nope'"):
        select(found, method="nope")
    with pytest.raises(DeliverError, match="'linear' has no final runs"):
        select(found, method="linear")
    assert select(found, "t/a", "lora")[0].run_id == "f-t/a-lora-1000"


def test_alias_rule_same_protocol_strictly_better():
    c = candidates([_study("t/a", "lora", 0.7)], [_final("t/a", "lora", 0.5, 1)])[0]

    class Held:
        def __init__(self, val, protocol="p1"):
            self.tags = {"val_acc": str(val), "protocol": protocol}

    assert _better(c, None)
    assert _better(c, Held(0.6)) and not _better(c, Held(0.7)) and not _better(c, Held(0.8))
    assert not _better(c, Held(0.1, protocol="other"))
    assert model_name("quickstart", "synth/objects") == "quickstart-synth-objects"
    assert model_name("s", "folder:/data/my pets@100#1") == "s-folder-data-my-pets-100-1"


@pytest.fixture
def png(tmp_path):
    """A 50×37 grayscale PNG (odd size, one channel) and its bytes."""
    g = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 256, (37, 50), dtype=torch.uint8, generator=g).numpy()
    path = tmp_path / "gray.png"
    Image.fromarray(pixels, mode="L").save(path)
    return path


def test_decode_matches_training_for_gray_odd_sized_bytes_and_data_uri(png):
    train = torch.from_numpy(_decode_image(png, 32, "bicubic").copy())
    assert torch.equal(decode(png, 32, "bicubic"), train)
    data = png.read_bytes()
    assert torch.equal(decode(data, 32, "bicubic"), train)
    uri = "data:image/png;base64," + base64.b64encode(data).decode()
    assert torch.equal(decode(uri, 32, "bicubic"), train)
    assert decode(png, 32, "bicubic").shape == (3, 32, 32)


def test_decode_and_collect_name_bad_inputs(png, tmp_path):
    (tmp_path / "notes.txt").write_text("not an image\n")
    (tmp_path / "cut.png").write_bytes(png.read_bytes()[:60])
    for bad in ("notes.txt", "cut.png"):
        with pytest.raises(ImageError, match=bad):
            decode(tmp_path / bad, 32, "bilinear")
    folder = tmp_path / "imgs"
    folder.mkdir()
    (folder / "a.png").write_bytes(png.read_bytes())
    (folder / ".hidden").write_text("x")
    split = tmp_path / "split.txt"
    split.write_text("imgs/a.png 3\n")
    got = collect([folder, split])
    assert got.paths == [folder / "a.png", tmp_path / "imgs/a.png"] and got.labels == [-1, 3]
    with pytest.raises(ImageError, match="no such file"):
        collect([tmp_path / "missing"])


def _rebuilt(method_name: str, **hp) -> Rebuilt:
    """A tiny ViT with ``method_name`` applied and every trainable tensor randomised."""
    from tuner.backbones import TINY_NAME, create_backbone

    torch.manual_seed(0)
    model = create_backbone(TINY_NAME, 5, pretrained=False)
    method = give_sensitivity(methods.get(method_name, **hp), model)
    method.apply(model)
    with torch.no_grad():
        for _, p in method.trainable_parameters(model):
            p.add_(torch.randn_like(p) * 0.05)
    spec = TrialSpec(task="synth/objects", method=method_name, hp=dict(hp))
    x = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8)
    return Rebuilt({}, spec, model.eval(), method, 5, ("a", "b", "c", "d", "e"),
                   (x, torch.zeros(6, dtype=torch.long)))  # fmt: skip


#: Methods that merge (or add nothing) give plain timm folders; the others need petl-sweep.
PLAIN = ("linear", "full", "bitfit", "layernorm", "ssf", "lora", "repadapter", "fact_tt",
         "fact_tk", "spt_lora")  # fmt: skip


@pytest.mark.parametrize("name", methods.list_methods())
def test_package_round_trip(tmp_path, name):
    plain = name in PLAIN
    rebuilt = _rebuilt(name)
    x = rebuilt.test[0]
    with torch.no_grad():
        want = rebuilt.model((x.float() / 255 - 0.5) / 0.5)
    exported = export_model(rebuilt, tmp_path / "pkg", {"run_id": "r1"})
    assert exported.plain is plain
    names = {p.name for p in (tmp_path / "pkg").iterdir()}
    scores = {"scores.safetensors"} if rebuilt.method.needs_prepare() and not plain else set()
    assert names == {"README.md", "config.json", "model.safetensors"} | scores
    readme = (tmp_path / "pkg" / "README.md").read_text()
    assert ("timm.create_model(" in readme) is plain and ("needs petl-sweep" in readme) is not plain
    classifier = load_package(tmp_path / "pkg")
    assert (classifier.logits(x) - want).abs().max() < 1e-4
    frame = classifier.frame(classifier.logits(x))
    assert list(frame.columns) == ["label", "label_name", "prob"]
    assert frame["label_name"].tolist() == [rebuilt.classes[i] for i in want.argmax(1).tolist()]


def test_package_from_another_format_names_both_versions(tmp_path):
    export_model(_rebuilt("linear"), tmp_path / "pkg")
    path = tmp_path / "pkg" / "config.json"
    config = json.loads(path.read_text())
    path.write_text(json.dumps({**config, "format": PACKAGE_FORMAT + 1,
                                "petl_sweep_version": "9.9.9"}))  # fmt: skip
    with pytest.raises(DeliverError, match=rf"petl-sweep 9\.9\.9 .*installed petl-sweep "
                       rf"{project_version()}"):  # fmt: skip
        load_package(tmp_path / "pkg")
    path.write_text("{}")
    with pytest.raises(DeliverError, match="not a petl-sweep model folder"):
        load_package(tmp_path / "pkg")
