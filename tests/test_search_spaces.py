"""Every method has a search space whose every sample builds a valid method."""

from __future__ import annotations

import numpy as np
import pytest

from tuner import methods
from tuner.sweep.spaces import default_spaces_dir, grid_points, load_space

ALL = methods.list_methods()


def test_every_method_has_a_yaml():
    files = {p.stem for p in default_spaces_dir().glob("*.yaml")} - {"common"}
    assert files == set(ALL)


@pytest.mark.parametrize("name", ALL)
def test_optuna_samples_build_valid_methods(name):
    space = load_space(name, "optuna")
    assert {"lr", "weight_decay"} <= set(space)
    rng = np.random.default_rng(0)
    for _ in range(50):
        hp = {k: d.sample(rng) for k, d in space.items()}
        assert 0 < hp["lr"] < 1
        methods.get(name, **hp)


@pytest.mark.parametrize("name", ALL)
def test_published_grid_points_build_valid_methods(name):
    points = grid_points(load_space(name, "published_grid"))
    assert points and all(set(p) >= {"lr", "weight_decay"} for p in points)
    for hp in points:
        methods.get(name, **hp)


def test_published_grids_of_the_seed_study():
    def grid(name, key):
        return list(load_space(name, "published_grid")[key].args)

    assert grid("lora", "rank") == [1, 8, 16, 32]
    assert grid("adaptformer", "bottleneck") == [4, 16, 32]
    assert grid("adaptformer", "scale") == [0.05, 0.1, 0.2]
    assert grid("adapter_houlsby", "scale") == [0.01, 0.1, 1.0, 10.0]
    assert grid("vpt_shallow", "prompt_length") == [5, 10, 50, 100, 200]
    assert grid("fact_tk", "dim") == [16, 32, 64]
    assert grid("repadapter", "scale") == [0.1, 0.5, 1.0, 5.0, 10.0]
    assert grid("lora", "lr") == [1e-3, 1e-2]
    assert len(grid_points(load_space("lora", "published_grid"))) == 2 * 2 * 4


def test_bad_space_files_name_file_and_key(tmp_path):
    (tmp_path / "common.yaml").write_text("optuna:\n  lr: {loguniform: [0.1, 0.01]}\n")
    (tmp_path / "lora.yaml").write_text("optuna:\n  rnak: {choice: [1]}\n")
    with pytest.raises(ValueError, match=r"common.yaml: optuna.lr: loguniform needs"):
        load_space("lora", "optuna", tmp_path)
    (tmp_path / "common.yaml").write_text("optuna: {}\n")
    with pytest.raises(ValueError, match=r"lora.yaml: optuna.rnak: not a hyper-parameter"):
        load_space("lora", "optuna", tmp_path)
