"""Shared fixtures: a tiny, seeded backbone so method tests run in milliseconds."""

from __future__ import annotations

import ast
import functools
import socket
import sys
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture
def tiny_backbone():
    """Factory for the built-in tiny ViT with random (seeded) weights and K classes."""
    from tuner.backbones.timm_models import TINY_NAME, create_backbone

    def make(num_classes: int = 5, seed: int = 0):
        torch.manual_seed(seed)
        return create_backbone(TINY_NAME, num_classes, pretrained=False).eval()

    return make


def give_sensitivity(method, model, num_classes: int = 5, seed: int = 0):
    """SPT methods need their task's sensitivity scores before ``apply``: take them on a
    seeded random batch (the real pass, two small batches). Other methods pass through."""
    if method.needs_prepare():
        from tuner.methods.spt.sensitivity import compute_sensitivity

        size = model.patch_embed.img_size
        g = torch.Generator().manual_seed(seed)
        x = torch.randint(0, 256, (16, 3, *size), dtype=torch.uint8, generator=g)
        y = torch.randint(0, num_classes, (16,), generator=g)
        scores = compute_sensitivity(
            model, x, y, lambda b: b.float() / 127.5 - 1, seed=seed, batches=2, batch_size=8
        )
        method.set_sensitivity(scores)
    return method


@pytest.fixture(scope="module", autouse=True)
def no_ray_left_behind(request):
    """A test file that leaves a Ray up fails here, at its own end, named.

    Otherwise the next file on that worker inherits it, and the first test there that starts
    a Ray of its own fails with "called ray.init twice", far from the cause (CI, stop 35: a
    direct call of a function that asked Ray's runtime context for its node)."""
    yield
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()
        pytest.fail(f"{request.node.nodeid} left a Ray running: shut it down in the test")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (for servers the tests start)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


#: The one small real sweep that the end-to-end and delivery tests both read (2 tasks ×
#: linear + lora, 6 TPE trials each over 3 epochs with ASHA, 2 final seeds, a shift set).
MINI_TASKS = ["synth/dsprites_loc", "synth/textures"]
MINI_METHODS = ["linear", "lora"]
MINI_SAMPLES, MINI_SEEDS = 6, 2


@pytest.fixture(scope="session")
def mini_sweep(tmp_path_factory):
    """(cfg, pipeline result, runs right after it, console text) of one real sweep.

    Session-scoped: ``test_e2e_sweep`` checks what it logged and ``test_deliver_e2e`` what
    it delivers (exports, registered champions, serving); a sweep each cost the suite a
    minute and a half apiece for the same facts. Tests that change the store add to it
    (models, aliases, an empty experiment) and never remove or rewrite its runs."""
    import ray
    from rich.console import Console

    from tuner.config import parse_config
    from tuner.sweep.pipeline import run_pipeline
    from tuner.tracking.client import TrackingService

    root = tmp_path_factory.mktemp("sweep")
    cfg = parse_config(
        {
            "name": "mini",
            "tasks": MINI_TASKS,
            "methods": MINI_METHODS,
            "seed": 0,
            "data_root": str(root / "data"),
            "out_dir": str(root / "results"),
            "tune": {
                "num_samples": MINI_SAMPLES,
                "max_epochs": 3,
                "grace_period": 1,
                "reduction_factor": 2,
                "max_concurrent_trials": 2,
            },
            "final": {"seeds": MINI_SEEDS},
            "ray": {"num_cpus": 2},
            "shifts": {MINI_TASKS[1]: {"noise": "synth"}},  # the synth suite's own shift set
        }
    )
    with open(root / "console.txt", "w") as log:
        result = run_pipeline(cfg, Console(file=log, width=250), live=False)
    ray.shutdown()
    runs = TrackingService(cfg.tracking_uri, cfg.experiment).search()
    return cfg, result, runs, (root / "console.txt").read_text()


def _shared_fixture(node: ast.FunctionDef) -> bool:
    """``@pytest.fixture(scope="module" | "session")``: set up once for many tests."""
    for deco in node.decorator_list:
        if isinstance(deco, ast.Call):
            for kw in deco.keywords:
                if kw.arg == "scope" and getattr(kw.value, "value", None) in ("module", "session"):
                    return True
    return False


@functools.cache
def _test_files(folder: Path) -> tuple[frozenset[str], frozenset[str]]:
    """(files with a function, test or fixture, that takes ``mini_sweep``; files that set up
    a module- or session-scoped fixture or take ``mini_sweep``), read from their source."""
    shared, costly = set(), set()
    for path in folder.glob("test_*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.FunctionDef):
                continue
            if "mini_sweep" in {a.arg for a in node.args.args}:
                shared.add(path.name)
            if path.name in shared or _shared_fixture(node):
                costly.add(path.name)
    return frozenset(shared), frozenset(costly)


@pytest.hookimpl(trylast=True)  # after pytest's own reordering for fixture scopes
def pytest_collection_modifyitems(items):
    """Files with module- or session-scoped fixtures (whole sweeps, servers, a cluster) run
    first, each file's tests in the order pytest chose: with two workers the long files
    start at once and the many quick unit-test files fill in after them, instead of one long
    file running alone at the end (xdist takes files in this order: ``--no-loadscope-reorder``
    in ``addopts``)."""
    costly = _test_files(Path(__file__).parent)[1]
    items.sort(key=lambda item: item.path.name not in costly)


def pytest_xdist_make_scheduler(config, log):
    """Each test file runs on one xdist worker, and so do the files that read the
    session-scoped ``mini_sweep``: their module and session fixtures are whole sweeps, which
    a worker each would run twice (a parametrised module sweep as often as its tests are
    split).

    xdist's own ``loadgroup`` reads a node-id suffix that it writes itself, and pytest 9.2's
    node ids are no longer writable, so those marks were ignored and files were split.
    This groups on the scheduler side, which sees only node ids: the file, or the shared
    group. The files are found by their functions' arguments, not a list kept by hand."""
    from xdist.scheduler import LoadScopeScheduling

    shared = _test_files(Path(__file__).parent)[0]

    class FileScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return "mini_sweep" if Path(path).name in shared else path

    return FileScheduling(config, log)
