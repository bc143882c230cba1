"""Offline checks of docker/: Dockerfiles, the dependency lock, compose.yaml, .dockerignore.

No Docker daemon is needed. The images must install what the tests ran against (pins equal
pyproject's exact pins and the venv's versions), run as non-root, and carry the tags the
Kubernetes manifests in cluster/ deploy.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import tomllib
from importlib.metadata import version
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

ROOT = Path(__file__).resolve().parent.parent
DOCKER = ROOT / "docker"
DOCKERFILES = {"ray": DOCKER / "Dockerfile.ray", "mlflow": DOCKER / "Dockerfile.mlflow"}
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
INSTRUCTIONS = {
    "FROM", "RUN", "CMD", "LABEL", "EXPOSE", "ENV", "ADD", "COPY", "ENTRYPOINT", "VOLUME",
    "USER", "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL", "HEALTHCHECK", "SHELL",
}  # fmt: skip
STORAGE_MOUNT = "/mnt/ray-storage"


def parse_dockerfile(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per instruction, with comments and continuations resolved."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue  # comment lines inside a continuation are dropped by Docker too
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        word, _, args = full.partition(" ")
        out.append((word.upper(), args.strip()))
    assert not pending, f"{path}: dangling line continuation"
    return out


def pins(text: str) -> dict[str, str]:
    """name==version pins found anywhere in text (names normalised, extras dropped)."""
    found = re.findall(r"(?<![\w.-])([A-Za-z][\w.-]*)(?:\[[\w,]+\])?==([\w.+-]+)", text)
    return {re.sub(r"[-_.]+", "-", n).lower(): v for n, v in found}


def pyproject_requirements() -> dict[str, Requirement]:
    reqs = (Requirement(d) for d in PYPROJECT["project"]["dependencies"])
    return {re.sub(r"[-_.]+", "-", r.name).lower(): r for r in reqs}


def compose() -> dict:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


def cluster_images() -> set[str]:
    images = set()
    for path in (ROOT / "cluster").rglob("*.yaml"):
        images |= set(re.findall(r"^\s*image:\s*[\"']?([^\s\"'#]+)", path.read_text(), re.M))
    return images


@pytest.mark.parametrize("name", DOCKERFILES)
def test_dockerfile_parses(name: str) -> None:
    """FROM comes first and every instruction is one Docker knows."""
    instructions = parse_dockerfile(DOCKERFILES[name])
    assert instructions[0][0] == "FROM"
    unknown = [word for word, _ in instructions if word not in INSTRUCTIONS]
    assert not unknown, f"unknown instructions {unknown}"
    assert all(args for _, args in instructions), "instruction without arguments"


@pytest.mark.parametrize("name", DOCKERFILES)
def test_base_image_pinned_and_python_matches(name: str) -> None:
    """The base tag is pinned (no latest) and its Python satisfies requires-python."""
    (base,) = [args for word, args in parse_dockerfile(DOCKERFILES[name]) if word == "FROM"]
    _, _, tag = base.split()[0].partition(":")
    assert tag and tag != "latest", f"unpinned base {base}"
    m = re.search(r"py(\d)(\d+)", tag) if name == "ray" else re.match(r"(\d+)\.(\d+)\.\d+", tag)
    assert m, f"no Python version in {base}"
    python = f"{m.group(1)}.{m.group(2)}"
    assert SpecifierSet(PYPROJECT["project"]["requires-python"]).contains(python + ".0"), python


@pytest.mark.parametrize("name", DOCKERFILES)
def test_runs_as_non_root(name: str) -> None:
    """The last USER decides who runs the container: never root."""
    users = [args for word, args in parse_dockerfile(DOCKERFILES[name]) if word == "USER"]
    assert users, "no USER: the image would run as root"
    assert users[-1].split(":")[0] not in ("root", "0")


def test_ray_image_cuda_index_matches_base() -> None:
    """torch wheels must be built for the CUDA the base image ships."""
    text = DOCKERFILES["ray"].read_text()
    base_cuda = re.search(r"^FROM \S+-(cu\d+)\b", text, re.M).group(1)
    index_cuda = set(re.findall(r"download\.pytorch\.org/whl/(cu\d+)", text))
    assert index_cuda == {base_cuda}


def test_ray_image_installs_the_project() -> None:
    """The image copies the package sources that exist and pip-installs the project."""
    instructions = parse_dockerfile(DOCKERFILES["ray"])
    copies = [args.split()[:-1] for word, args in instructions if word == "COPY"]
    sources = [s for srcs in copies for s in srcs if not s.startswith("--")]
    for src in sources:
        assert (ROOT / src).exists(), f"COPY source {src} does not exist"
    assert {"pyproject.toml", "tuner", "search_spaces"} <= set(sources)
    runs = " ".join(args for word, args in instructions if word == "RUN")
    assert re.search(r"pip install[^&]* \.(\s|$)", runs), "the project itself is not installed"
    assert "requirements.lock.txt" in runs


#: What the images must share with the venv the tests ran in, exactly: Ray (driver and cluster
#: speak one protocol), MLflow (client and server one REST API), torch (same numerics). Other
#: pins may trail a fresh venv by a release; the images are built from the lock, not the venv.
EXACT = ("torch", "torchvision", "ray", "mlflow")


def test_lock_is_current() -> None:
    """docker/requirements.lock.txt is what docker/gen_lock.py writes, up to newer releases of
    the packages that need not match exactly (a fresh venv resolves whatever is newest)."""
    spec = importlib.util.spec_from_file_location("gen_lock", DOCKER / "gen_lock.py")
    gen_lock = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen_lock)
    lock, fresh = pins((DOCKER / "requirements.lock.txt").read_text()), pins(gen_lock.render())
    assert set(lock) == set(fresh), "stale lock: run .venv/bin/python docker/gen_lock.py"
    for name in EXACT:
        if name in lock:
            assert lock[name] == fresh[name], (
                f"stale {name}: run .venv/bin/python docker/gen_lock.py"
            )


def test_pins_match_pyproject_and_venv() -> None:
    """Every pin in docker/ is the venv's version and allowed by pyproject."""
    reqs = pyproject_requirements()
    lock = pins((DOCKER / "requirements.lock.txt").read_text())
    assert set(lock) == set(reqs), "lock and pyproject list different dependencies"
    all_pins = {
        path.name: pins(path.read_text())
        for path in (*DOCKERFILES.values(), DOCKER / "requirements.lock.txt")
    }
    for must in ("torch", "torchvision", "ray", "mlflow"):
        assert any(must in p for p in all_pins.values()), f"{must} is not pinned in docker/"
    for source, found in all_pins.items():
        for name, pinned in found.items():
            if name in reqs:
                assert reqs[name].specifier.contains(pinned, prereleases=True), (source, name)
                if name in EXACT:
                    assert pinned == version(name), (
                        f"{source}: {name}=={pinned}, venv {version(name)}"
                    )
    base_ray = re.search(r"^FROM rayproject/ray:([\d.]+)-", DOCKERFILES["ray"].read_text(), re.M)
    assert base_ray and base_ray.group(1) == version("ray") == lock["ray"], "Ray base image tag"
    for name in ("torch", "torchvision"):  # exact pins in pyproject itself
        (exact,) = [s.version for s in reqs[name].specifier if s.operator == "=="]
        assert all_pins["Dockerfile.ray"][name] == exact == lock[name]


def test_mlflow_entrypoint_options_exist() -> None:
    """The server runs basic auth and takes every setting from environment variables that
    this mlflow version reads itself, so no secret is ever on its (world-readable) argv."""
    from mlflow.cli import server

    envvars = {param.envvar for param in server.params if param.envvar}
    parsed = parse_dockerfile(DOCKERFILES["mlflow"])
    (entry,) = [args for word, args in parsed if word == "ENTRYPOINT"]
    command = yaml.safe_load(entry)
    assert command[:2] == ["mlflow", "server"], "exec form: mlflow gets SIGTERM directly"
    assert "--app-name" in command and command[command.index("--app-name") + 1] == "basic-auth"
    known = {opt for param in server.params for opt in param.opts}
    assert {w for w in command if w.startswith("--")} <= known
    assert not [w for w in command if "$" in w], "no expansion into argv"
    env = " ".join(args for word, args in parsed if word == "ENV")
    set_here = set(re.findall(r"(MLFLOW_[A-Z_]+)=", env))
    assert {"MLFLOW_HOST", "MLFLOW_PORT", "MLFLOW_ARTIFACTS_DESTINATION",
            "MLFLOW_SERVER_ALLOWED_HOSTS"} <= set_here & envvars  # fmt: skip
    assert "MLFLOW_BACKEND_STORE_URI" in envvars, "mlflow reads the store URI from env"
    assert "MLFLOW_AUTH_CONFIG_PATH=/etc/mlflow/auth.ini" in env
    copied = [args for word, args in parsed if word == "COPY"]
    assert "docker/mlflow-auth.ini /etc/mlflow/auth.ini" in copied


def test_compose_services() -> None:
    """The local cluster has the four services, wired as documented."""
    services = compose()["services"]
    assert {"postgres", "mlflow", "ray-head", "ray-worker"} <= set(services)
    head = " ".join(services["ray-head"]["command"])
    worker = " ".join(services["ray-worker"]["command"])
    assert "ray start --head" in head and "--block" in head and "--dashboard-host 0.0.0.0" in head
    assert "ray start --address ray-head:6379" in worker and "--block" in worker
    mlflow_env = services["mlflow"]["environment"]
    assert mlflow_env["MLFLOW_BACKEND_STORE_URI"].startswith("postgresql+psycopg2://")
    assert "${POSTGRES_PASSWORD" in mlflow_env["MLFLOW_BACKEND_STORE_URI"]
    assert "command" not in services["mlflow"], "secrets reach mlflow by env, never argv"
    for var, name in (("MLFLOW_AUTH_ADMIN_USERNAME", "MLFLOW_ADMIN_USERNAME"),
                      ("MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_ADMIN_PASSWORD"),
                      ("MLFLOW_FLASK_SERVER_SECRET_KEY", "MLFLOW_FLASK_SECRET_KEY")):  # fmt: skip
        assert re.fullmatch(rf"\$\{{{name}:\?[^}}]*\}}", mlflow_env[var]), var
    assert any(v.endswith(":/mlauth") for v in services["mlflow"]["volumes"])
    example = (DOCKER / ".env.example").read_text()
    assert "MLFLOW_ADMIN_USERNAME=" in example and "MLFLOW_ADMIN_PASSWORD=" in example
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD"].startswith(
        "${POSTGRES_PASSWORD"
    )
    assert any(v.endswith(":/var/lib/postgresql/data") for v in services["postgres"]["volumes"])


def test_compose_ray_auth_storage_and_tracking() -> None:
    """Token auth on, token only from the environment, one Tune volume at one path."""
    services = compose()["services"]
    mounts = []
    for name in ("ray-head", "ray-worker"):
        env = services[name]["environment"]
        assert env["RAY_AUTH_MODE"] == "token", name
        assert re.fullmatch(r"\$\{RAY_AUTH_TOKEN:\?[^}]*\}", env["RAY_AUTH_TOKEN"]), name
        assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
        assert env["MLFLOW_TRACKING_USERNAME"].startswith("${MLFLOW_ADMIN_USERNAME:?"), name
        assert env["MLFLOW_TRACKING_PASSWORD"].startswith("${MLFLOW_ADMIN_PASSWORD:?"), name
        vols = [v for v in services[name]["volumes"] if v.endswith(f":{STORAGE_MOUNT}")]
        assert len(vols) == 1, name
        mounts.append(vols[0])
    assert mounts[0] == mounts[1], "head and worker must share the Tune storage volume"
    assert mounts[0].split(":")[0] in compose()["volumes"]


def test_compose_publishes_only_on_localhost() -> None:
    """Published ports bind 127.0.0.1, never all interfaces."""
    services = compose()["services"]
    published = [p for s in services.values() for p in s.get("ports", [])]
    assert published, "the MLflow UI and Ray dashboard should be reachable locally"
    assert all(str(p).startswith("127.0.0.1:") for p in published), published


def test_images_agree_with_cluster() -> None:
    """cluster/ deploys exactly the images compose builds, tagged with the package version."""
    services = compose()["services"]
    built = {s["image"] for s in services.values() if "build" in s}
    project = PYPROJECT["project"]["version"]
    assert built == {f"petl-sweep/ray:{project}", f"petl-sweep/mlflow:{project}"}
    dockerfiles = {s["build"]["dockerfile"] for s in services.values() if "build" in s}
    assert {f"docker/{p.name}" for p in DOCKERFILES.values()} == dockerfiles
    in_cluster = cluster_images()
    assert built <= in_cluster, f"cluster/ does not deploy {built - in_cluster}"
    all_compose = {s["image"] for s in services.values()}
    assert in_cluster <= all_compose, f"cluster/ images not in compose: {in_cluster - all_compose}"


def test_compose_sweep_validates() -> None:
    """docker/sweep.yaml (the documented ray job submit config) passes the project's checks."""
    from tuner.config import parse_config

    cfg = parse_config(yaml.safe_load((DOCKER / "sweep.yaml").read_text()), "docker/sweep.yaml")
    assert cfg.ray.address == "auto" and cfg.ray.storage_path == STORAGE_MOUNT
    assert cfg.tracking.uri == "http://mlflow:5000"
    assert Path(cfg.data_root).is_relative_to(STORAGE_MOUNT)


def test_dockerignore() -> None:
    """The build context leaves out the venv, data, results, MLflow stores, git and secrets."""
    entries = {
        line.strip().rstrip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    needed = {".venv", "data", "results", "mlruns", ".git", "**/__pycache__", "docker/.env"}
    assert needed <= entries, needed - entries
    assert ".env" in (DOCKER / ".gitignore").read_text().split()


@pytest.mark.skipif(shutil.which("hadolint") is None, reason="hadolint not installed")
@pytest.mark.parametrize("name", DOCKERFILES)
def test_hadolint(name: str) -> None:
    """Lint with hadolint when it is available (errors only)."""
    proc = subprocess.run(
        ["hadolint", "--failure-threshold", "error", str(DOCKERFILES[name])],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
