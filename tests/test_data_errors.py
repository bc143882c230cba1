"""Bad data fails before training, with a message naming the file (and line for list files)
and what was expected. Each case builds its broken fixture on the fly."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pytest
from _data_helpers import fgvc_task, image_folder, png, vtab_task

from tuner.config import ConfigError, parse_config
from tuner.data import DataError, get_task, load_eval_set, load_task


def _svhn(tmp_path: Path, **kw) -> Path:
    return vtab_task(tmp_path / "vtab1k" / "svhn", sizes=(4, 2, 2), **kw)


def _raises(match: str, fn, *args, **kw) -> str:
    with pytest.raises(DataError) as err:
        fn(*args, **kw)
    assert re.search(match, str(err.value)), str(err.value)
    return str(err.value)


def test_missing_task_folder(tmp_path):
    _raises(r"task folder .*vtab1k/svhn does not exist", load_task, "vtab1k/svhn", tmp_path, 16)


def test_missing_split_file(tmp_path):
    (_svhn(tmp_path) / "val200.txt").unlink()
    _raises(
        r"split file .*val200\.txt is missing \(found: ", load_task, "vtab1k/svhn", tmp_path, 16
    )


def test_missing_image(tmp_path):
    (_svhn(tmp_path) / "images/train800_001.png").unlink()
    _raises(
        r"train800\.txt:2: image .*train800_001\.png cannot be read \(No such file",
        load_task,
        "vtab1k/svhn",
        tmp_path,
        16,
    )


def test_corrupt_image(tmp_path):
    (_svhn(tmp_path) / "images/test_000.png").write_bytes(b"this is not a png")
    _raises(
        r"test\.txt:1: image .*test_000\.png cannot be decoded",
        load_task,
        "vtab1k/svhn",
        tmp_path,
        16,
    )


@pytest.mark.parametrize(
    ("line", "match"),
    [
        ("images/test_000.png", r"test\.txt:2: expected '<image path> <integer label>'"),
        ("images/test_000.png one", r"test\.txt:2: label 'one' is not an integer"),
        ("images/test_000.png 10", r"test\.txt:2: label 10 is out of range, expected \[0, 10\)"),
    ],
)
def test_bad_split_lines(tmp_path, line, match):
    folder = _svhn(tmp_path)
    (folder / "test.txt").write_text(f"images/test_001.png 1\n{line}\n")
    _raises(match, load_task, "vtab1k/svhn", tmp_path, 16)


def test_empty_split(tmp_path):
    (_svhn(tmp_path) / "val200.txt").write_text("\n")
    _raises(
        r"split file .*val200\.txt is empty; expected '<image path> <label>'",
        load_task,
        "vtab1k/svhn",
        tmp_path,
        16,
    )


def test_fgvc_class_count_disagreeing_with_the_registry(tmp_path):
    folder = tmp_path / "fgvc" / "cub"
    fgvc_task(folder)
    anno = {f"x{i}.jpg": i for i in range(201)}
    for i in range(201):
        png(folder / "images" / f"x{i}.jpg", i, 4)
    (folder / "train.json").write_text(json.dumps(anno))
    _raises(
        r"cub: 201 distinct labels .* registry says fgvc/cub has 200 classes",
        load_task,
        "fgvc/cub",
        tmp_path,
        16,
    )


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("[1, 2]", r"val\.json: expected a JSON object image path -> integer label, got a list"),
        ('{"a.jpg": "3"}', r"val\.json: label '3' of 'a\.jpg' is not an integer"),
        ('{"a.jpg": 1.5}', r"val\.json: label 1\.5 of 'a\.jpg' is not an integer"),
        ("{not json", r"val\.json: not valid JSON"),
    ],
)
def test_fgvc_bad_json(tmp_path, content, match):
    folder = fgvc_task(tmp_path / "fgvc" / "cub")
    (folder / "val.json").write_text(content)
    _raises(match, load_task, "fgvc/cub", tmp_path, 16)


def test_fgvc_missing_split_file(tmp_path):
    folder = fgvc_task(tmp_path / "fgvc" / "nabirds")
    (folder / "test.json").unlink()
    _raises(r"split file .*nabirds/test\.json is missing", load_task, "fgvc/nabirds", tmp_path, 16)


def test_manifest_missing_column(tmp_path):
    path = tmp_path / "m.csv"
    pacsv.write_csv(pa.table({"path": ["a.png"], "label": [0]}), path)
    _raises(
        r"m\.csv: missing column\(s\) split; expected columns path,label,split "
        r"\(found: path,label\)",
        get_task,
        f"folder:{path}",
    )


def test_manifest_bad_split_and_unknown_class_name_lines(tmp_path):
    for name in ("a", "b", "c"):
        png(tmp_path / f"{name}.png")
    path = tmp_path / "m.csv"
    path.write_text("path,label,split\na.png,cat,train\nb.png,cat,val\nc.png,dog,test\n")
    _raises(r"m\.csv:4: class 'dog' does not occur in the train split; expected one of cat",
            get_task, f"folder:{path}")  # fmt: skip
    path.write_text("path,label,split\na.png,cat,train\nb.png,cat,dev\n")
    _raises(r"m\.csv:3: split 'dev' is not one of train, val, test", get_task, f"folder:{path}")


def test_folder_split_with_a_class_not_in_train(tmp_path):
    root = image_folder(tmp_path / "pets")
    png(root / "val" / "bird" / "0.png")
    _raises(
        r"val/bird: class 'bird' is not a class of .*pets/train; expected one of cat, dog",
        load_task,
        f"folder:{root}",
        tmp_path / "data",
        16,
    )


def test_folder_missing_split_and_empty_split(tmp_path):
    root = image_folder(tmp_path / "pets")
    for png_file in (root / "test").rglob("*.png"):
        png_file.unlink()
    _raises(r"split folder .*pets/test has no images; expected <class name>/\*\.png",
            load_task, f"folder:{root}", tmp_path / "data", 16)  # fmt: skip
    import shutil

    shutil.rmtree(root / "test")
    _raises(r"split folder .*pets/test is missing", load_task, f"folder:{root}", tmp_path, 16)


def test_subset_larger_than_train_names_task_n_and_size(tmp_path):
    _svhn(tmp_path)
    _raises(
        r"task vtab1k/svhn@5: subset n=5 exceeds the train split size 4",
        load_task,
        "vtab1k/svhn@5",
        tmp_path,
        16,
    )
    with pytest.raises(KeyError, match=r"bad subset suffix .*expected <task>@<n>"):
        get_task("vtab1k/svhn@ten")
    with pytest.raises(KeyError, match=r"fraction 1\.5 is not in \(0, 1\]"):
        get_task("vtab1k/svhn@1.5")


def test_shift_set_problems(tmp_path):
    listing = tmp_path / "shift.txt"
    png(tmp_path / "a.png")
    listing.write_text("a.png 0\na.png 7\n")
    _raises(r"shift\.txt:2: label 7 is out of range, expected \[0, 2\)",
            load_eval_set, listing, 16, tmp_path / "c", num_classes=2)  # fmt: skip
    png(tmp_path / "folder" / "cat" / "0.png")
    _raises(r"folder/cat: folder name 'cat' is not a label; expected an integer in \[0, 2\)",
            load_eval_set, tmp_path / "folder", 16, tmp_path / "c", num_classes=2)  # fmt: skip
    _raises(r"shift set .*nowhere does not exist",
            load_eval_set, tmp_path / "nowhere", 16, tmp_path / "c", num_classes=2)  # fmt: skip


def test_unknown_interpolation(tmp_path):
    _svhn(tmp_path)
    _raises(r"unknown interpolation 'cubic'; expected one of bilinear, bicubic",
            load_task, "vtab1k/svhn", tmp_path, 16, interpolation="cubic")  # fmt: skip


def test_config_rejects_bad_folders_and_shifts(tmp_path):
    base = {"name": "t", "methods": ["lora"], "tasks": ["synth/count"]}
    with pytest.raises(ConfigError, match=r"tasks: folder task .*nope does not exist"):
        parse_config({**base, "tasks": [f"folder:{tmp_path / 'nope'}"]})
    with pytest.raises(ConfigError, match=r"shifts: task 'synth/objects' is not in the sweep"):
        parse_config({**base, "shifts": {"synth/objects": {"x": str(tmp_path)}}})
    with pytest.raises(ConfigError, match=r"shifts\.synth/count\.blur: .*missing does not exist"):
        parse_config({**base, "shifts": {"synth/count": {"blur": str(tmp_path / "missing")}}})
