"""Every layout people actually ship (VTAB-1k, VPT's FGVC JSON, image folders, CSV/Parquet
manifests) loads to the same tensors through one cache that decodes each image once."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
import torch
from _data_helpers import fgvc_task, image_folder, png, vtab_task
from PIL import Image

import tuner.data.cache as cache_mod
from tuner.config import parse_config
from tuner.data import get_task, load_eval_set, load_task
from tuner.data.subsets import subset_indices
from tuner.data.tasks import task_order


@pytest.fixture
def decodes(monkeypatch) -> list[Path]:
    """Every image path the cache decodes, in order."""
    calls: list[Path] = []
    real = cache_mod._decode_image

    def counting(path: Path, image_size: int, interpolation: str = "bilinear") -> np.ndarray:
        calls.append(Path(path))
        return real(path, image_size, interpolation)

    monkeypatch.setattr(cache_mod, "_decode_image", counting)
    return calls


def test_vtab_layout_loads_every_split_with_the_file_pixels(tmp_path):
    folder = vtab_task(tmp_path / "vtab1k" / "svhn")
    data = load_task("vtab1k/svhn", tmp_path, 16)
    assert [len(s[1]) for s in (data.train, data.val, data.trainval, data.test)] == [20, 10, 30, 10]
    assert data.train[0].dtype == torch.uint8 and data.train[0].shape == (20, 3, 16, 16)
    pixels = np.asarray(Image.open(folder / "images/val200_004.png")).transpose(2, 0, 1)
    np.testing.assert_array_equal(data.val[0][4].numpy(), pixels)
    assert data.val[1][4] == 4 and data.shifts == {} and data.classes is None


def test_fgvc_registry_and_vpt_conventions(tmp_path):
    assert get_task("fgvc/cub").num_classes == 200 and get_task("fgvc/nabirds").num_classes == 555
    assert get_task("fgvc/stanford_dogs").group == "fgvc"
    fgvc_task(tmp_path / "fgvc" / "cub", "images", first_label=1)  # CUB: 1-based, images/
    fgvc_task(tmp_path / "fgvc" / "stanford_dogs", "Images", first_label=0)
    fgvc_task(tmp_path / "fgvc" / "stanford_cars", "", first_label=5)
    for task in ("fgvc/cub", "fgvc/stanford_dogs", "fgvc/stanford_cars"):
        data = load_task(task, tmp_path, 16)
        assert sorted(set(data.train[1].tolist())) == [0, 1, 2]  # contiguous, sorted unique
        assert len(data.train[1]) == 9 and len(data.val[1]) == 3 and len(data.test[1]) == 6
        torch.testing.assert_close(data.trainval[0], torch.cat([data.train[0], data.val[0]]))
        torch.testing.assert_close(data.trainval[1], torch.cat([data.train[1], data.val[1]]))


def test_image_folder_task_takes_classes_from_sorted_train_folders(tmp_path):
    root = image_folder(tmp_path / "pets", classes=("dog", "cat"))
    task = f"folder:{root}"
    assert get_task(task).num_classes == 2 and get_task(task).group == "custom"
    data = load_task(task, tmp_path / "data", 16)
    assert data.classes == ("cat", "dog")
    assert data.train[1].tolist() == [0] * 6 + [1] * 6 and len(data.trainval[1]) == 16
    pixels = np.asarray(Image.open(root / "test/dog/1.png")).transpose(2, 0, 1)
    np.testing.assert_array_equal(data.test[0][3].numpy(), pixels)


def _manifest(tmp_path: Path, fmt: str, named: bool) -> Path:
    rows = {"path": [], "label": [], "split": []}
    for split, n in (("train", 8), ("val", 4), ("test", 4)):
        for i in range(n):
            rel = f"img/{split}{i}.png"
            png(tmp_path / rel, seed=len(rows["path"]))
            rows["path"].append(rel)
            rows["label"].append(("zebra", "ant")[i % 2] if named else i % 2)
            rows["split"].append(split)
    table = pa.table(rows)
    path = tmp_path / f"manifest.{fmt}"
    pacsv.write_csv(table, path) if fmt == "csv" else pq.write_table(table, path)
    return path


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
@pytest.mark.parametrize("named", [True, False])
def test_manifest_task_reads_csv_and_parquet(tmp_path, fmt, named):
    path = _manifest(tmp_path, fmt, named)
    data = load_task(f"folder:{path}", tmp_path / "data", 16)
    assert [len(s[1]) for s in (data.train, data.val, data.trainval, data.test)] == [8, 4, 12, 4]
    # named: sorted names, so "ant" = 0 and "zebra" = 1 (rows alternate zebra, ant)
    assert data.train[1][:2].tolist() == ([1, 0] if named else [0, 1])
    assert data.classes == (("ant", "zebra") if named else None)
    assert get_task(f"folder:{path}").num_classes == 2


def test_many_shot_subsets_are_seeded_stratified_and_fold_dependent(tmp_path):
    vtab_task(tmp_path / "vtab1k" / "svhn", num_classes=10, sizes=(60, 10, 10))
    full = load_task("vtab1k/svhn", tmp_path, 16)
    a = load_task("vtab1k/svhn@20", tmp_path, 16)
    again = load_task("vtab1k/svhn@20", tmp_path, 16)
    other = load_task("vtab1k/svhn@20#1", tmp_path, 16)
    half = load_task("vtab1k/svhn@0.5", tmp_path, 16)
    assert torch.equal(a.train[0], again.train[0]) and torch.equal(a.train[1], again.train[1])
    assert not torch.equal(a.train[0], other.train[0])
    assert a.train[1].bincount().tolist() == [2] * 10  # every class, evenly
    assert len(half.train[1]) == 30 and half.train[1].bincount().tolist() == [3] * 10
    torch.testing.assert_close(a.trainval[0], torch.cat([a.train[0], full.val[0]]))
    assert torch.equal(a.val[0], full.val[0]) and torch.equal(a.test[0], full.test[0])
    # every subset row is a train row with its label
    rows = {bytes(x.numpy().tobytes()): int(y) for x, y in zip(*full.train, strict=True)}
    assert all(rows[bytes(x.numpy().tobytes())] == y for x, y in zip(*a.train, strict=True))
    assert get_task("vtab1k/svhn@20#1").num_classes == 10


def test_subset_keeps_every_class_under_imbalance_and_orders_after_its_base():
    labels = np.array([0] * 50 + [1] * 5 + [2] * 2)
    idx = subset_indices("x/y@6", labels)
    assert len(idx) == 6 and set(labels[idx]) == {0, 1, 2}
    assert np.array_equal(idx, subset_indices("x/y@6", labels))
    ids = ["folder:/d", "synth/count@10", "synth/objects", "synth/count"]
    assert task_order(ids) == ["synth/objects", "synth/count@10", "synth/count", "folder:/d"]


def test_shift_sets_from_list_file_and_folder_share_the_label_space(tmp_path):
    root = image_folder(tmp_path / "pets")
    shifted = image_folder(tmp_path / "shift", sizes=(3, 0, 0)) / "train"  # <class>/*.png
    listing = tmp_path / "corrupt" / "list.txt"
    png(listing.parent / "a.png", 7)
    png(listing.parent / "b.png", 8)
    listing.write_text("a.png 1\nb.png 0\n")
    data = load_task(
        f"folder:{root}", tmp_path / "data", 16, shifts={"blur": listing, "new": shifted}
    )
    assert data.shifts["blur"][1].tolist() == [1, 0]
    assert data.shifts["new"][1].tolist() == [0, 0, 0, 1, 1, 1]
    x, y = load_eval_set(listing, 16, tmp_path / "cache", num_classes=2)
    assert x.shape == (2, 3, 16, 16) and y.tolist() == [1, 0]
    vtab_task(tmp_path / "vtab1k" / "svhn")
    digits = tmp_path / "digits"
    png(digits / "3" / "x.png", 9)
    assert load_eval_set(digits, 16, tmp_path / "cache", num_classes=10)[1].tolist() == [3]


def test_decode_once_second_load_only_maps(tmp_path, decodes):
    vtab_task(tmp_path / "vtab1k" / "svhn", sizes=(20, 10, 10))
    load_task("vtab1k/svhn", tmp_path, 16)
    assert len(decodes) == 40 == len(set(decodes))  # trainval copies train + val rows
    load_task("vtab1k/svhn", tmp_path, 16)
    load_task("vtab1k/svhn@10#3", tmp_path, 16)  # a subset copies rows of train
    assert len(decodes) == 40


def test_interpolation_is_part_of_the_cache_key(tmp_path, decodes):
    vtab_task(tmp_path / "vtab1k" / "svhn", sizes=(4, 2, 2), size=24)
    bilinear = load_task("vtab1k/svhn", tmp_path, 16)
    assert len(decodes) == 8
    bicubic = load_task("vtab1k/svhn", tmp_path, 16, interpolation="bicubic")
    assert len(decodes) == 16  # re-decoded, not served from the bilinear files
    assert not torch.equal(bilinear.train[0], bicubic.train[0])
    load_task("vtab1k/svhn", tmp_path, 16, interpolation="bicubic")
    assert len(decodes) == 16
    names = {p.name for p in (tmp_path / ".cache").glob("*.x.npy")}
    assert any("bicubic" in n for n in names) and any("bilinear" in n for n in names)


def test_config_accepts_folder_subset_and_shift_entries(tmp_path, monkeypatch):
    root = image_folder(tmp_path / "pets")
    listing = tmp_path / "list.txt"
    listing.write_text("a.png 0\n")
    monkeypatch.chdir(tmp_path)
    cfg = parse_config(
        {
            "name": "t",
            "methods": ["lora"],
            "tasks": ["folder:pets", "folder:pets@4#1", "synth/*@100", "fgvc/cub"],
            "shifts": {"fgvc/cub": {"corrupt": "list.txt"}},
        }
    )
    assert cfg.tasks[:2] == [f"folder:{root}", f"folder:{root}@4#1"]
    assert "synth/objects@100" in cfg.tasks and "fgvc/cub" in cfg.tasks
    assert cfg.shifts["fgvc/cub"]["corrupt"] == str(listing)


def test_train_one_runs_an_epoch_on_a_folder_task(tmp_path):
    from tuner.training.settings import TrainSettings
    from tuner.training.spec import TrialSpec
    from tuner.training.trainer import train_one

    root = image_folder(tmp_path / "pets", sizes=(8, 4, 4), size=32)
    spec = TrialSpec(
        task=f"folder:{root}",
        method="lora",
        hp={"lr": 3e-3},
        epochs=1,
        data_root=str(tmp_path / "data"),
        threads=1,
        train=TrainSettings(batch_size=8, pretrained=False),
    )
    result = train_one(spec)
    assert len(result["history"]) == 1 and 0.0 <= result["val/acc"] <= 1.0
