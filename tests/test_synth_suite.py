"""The synthetic suite: seeded, VTAB-1k sized, labels in range, and the on-disk layout
round-trips through the same reader and cache real VTAB-1k uses."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tuner.data import DataError, load_task
from tuner.data.cache import load_split_arrays
from tuner.data.synth import SYNTH_TASKS, write_synth_suite
from tuner.data.tasks import GROUPS, get_task, list_tasks
from tuner.data.vtab import read_split

NAMES = list(SYNTH_TASKS)


def test_at_least_six_tasks_covering_the_three_vtab_groups():
    assert len(NAMES) >= 6
    assert {SYNTH_TASKS[n].group for n in NAMES} == set(GROUPS)
    assert list_tasks("synth/*") == [f"synth/{n}" for n in NAMES]
    assert get_task("vtab1k/sun397").num_classes == 397


@pytest.mark.parametrize("name", NAMES)
def test_generation_is_deterministic_from_the_seed_with_labels_in_range(name):
    task = SYNTH_TASKS[name]
    x1, y1 = task.generate(120, seed=3)
    x2, y2 = task.generate(120, seed=3)
    x3, _ = task.generate(120, seed=4)
    assert x1.shape == (120, 32, 32, 3) and x1.dtype == np.uint8 and y1.dtype == np.int64
    np.testing.assert_array_equal(x1, x2)
    np.testing.assert_array_equal(y1, y2)
    assert not np.array_equal(x1, x3)
    assert y1.min() >= 0 and y1.max() < task.num_classes


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data") / "synth"
    write_synth_suite(root, seed=0, tasks=["count", "textures"])
    return root


@pytest.mark.parametrize("name", ["count", "textures"])
def test_vtab_split_sizes_and_every_class_in_train(written, name):
    folder = written / name
    num_classes = SYNTH_TASKS[name].num_classes
    sizes = {
        s: len(read_split(folder, s, num_classes))
        for s in ("train800", "val200", "train800val200", "test")
    }
    assert sizes["train800"] == 800 and sizes["val200"] == 200
    assert sizes["train800val200"] == 1000 and sizes["test"] >= 1000
    train = read_split(folder, "train800", num_classes)
    assert read_split(folder, "train800val200", num_classes) == train + read_split(
        folder, "val200", num_classes
    )
    assert {label for _, label in train} == set(range(num_classes))
    assert not {p for p, _ in train} & {p for p, _ in read_split(folder, "test", num_classes)}


def test_layout_round_trips_to_the_generated_pixels(written, tmp_path):
    folder = written / "count"
    x, y = load_split_arrays(folder, "val200", 32, tmp_path / "cache", 8)
    assert x.shape == (200, 3, 32, 32) and y.shape == (200,)
    from PIL import Image

    path, label = read_split(folder, "val200", 8)[7]
    pixels = np.asarray(Image.open(folder / path).convert("RGB")).transpose(2, 0, 1)
    np.testing.assert_array_equal(x[7], pixels)
    assert y[7] == label


def test_second_write_with_same_seed_is_a_no_op_and_load_task_uses_the_layout(written):
    before = (written / "count" / "train800.txt").stat().st_mtime_ns
    write_synth_suite(written, seed=0, tasks=["count"])
    assert (written / "count" / "train800.txt").stat().st_mtime_ns == before
    data = load_task("synth/count", written.parent, 32)  # reads, does not regenerate
    assert (written / "count" / "train800.txt").stat().st_mtime_ns == before
    assert len(data.trainval[1]) == 1000 and data.train[0].shape == (800, 3, 32, 32)


def test_a_broken_split_line_names_file_and_line(tmp_path):
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "val200.txt").write_text("images/a.png 1\nimages/b.png\n")
    with pytest.raises(DataError, match=r"val200.txt.*2"):
        read_split(folder, "val200", 8)
