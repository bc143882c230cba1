"""Offline checks of the KubeRay / kustomize manifests under cluster/.

Nothing here needs a Kubernetes cluster: the overlays are rendered by a small kustomize
subset (resources, JSON 6902 and strategic-merge patches, namespace, replacements: exactly
what cluster/ uses). When kubectl is installed, its own ``kubectl kustomize`` output is
compared with ours, so the subset cannot silently drift from the real tool.
"""

from __future__ import annotations

import configparser
import copy
import re
import shutil
import subprocess
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
CLUSTER = ROOT / "cluster"
BASE = CLUSTER / "base"
OVERLAYS = {"laptop": CLUSTER / "overlays" / "laptop", "gpu": CLUSTER / "overlays" / "gpu"}
TARGETS = {"base": BASE, **OVERLAYS}
NAMESPACE = "petl-sweep"
STORAGE_MOUNT = "/mnt/ray-storage"
CONFIG_MOUNT = "/etc/petl-sweep"
MLFLOW_URI = "http://mlflow:5000"
ALL_YAML = sorted(CLUSTER.rglob("*.yaml"))
SECRETISH = re.compile(r"PASSWORD|TOKEN|SECRET|CREDENTIAL|ACCESS_KEY", re.IGNORECASE)


# --------------------------------------------------------------------------- rendering


def load_docs(path: Path) -> list[Any]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def _matches(obj: dict, sel: dict) -> bool:
    if "kind" in sel and obj.get("kind") != sel["kind"]:
        return False
    return "name" not in sel or obj["metadata"]["name"] == sel["name"]


def _pointer(path: str) -> list[str]:
    return [p.replace("~1", "/").replace("~0", "~") for p in path.lstrip("/").split("/")]


def json6902(obj: dict, ops: list[dict]) -> None:
    """Apply RFC 6902 add/replace/remove (the ops cluster/ overlays use)."""
    for op in ops:
        *parents, last = _pointer(op["path"])
        node: Any = obj
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        idx: Any = int(last) if isinstance(node, list) and last != "-" else last
        if op["op"] == "remove":
            del node[idx]
        elif op["op"] == "replace":
            node[idx]  # must exist, as in RFC 6902
            node[idx] = copy.deepcopy(op["value"])
        elif op["op"] == "add":
            if isinstance(node, list):
                node.insert(len(node) if idx == "-" else idx, copy.deepcopy(op["value"]))
            else:
                node[idx] = copy.deepcopy(op["value"])
        else:
            raise AssertionError(f"unsupported JSON patch op {op['op']!r}")


def strategic_merge(dst: Any, src: Any) -> Any:
    """Strategic merge for built-in kinds: maps merge, named lists merge by name."""
    if isinstance(dst, dict) and isinstance(src, dict):
        for key, value in src.items():
            dst[key] = strategic_merge(dst[key], value) if key in dst else copy.deepcopy(value)
        return dst
    if (
        isinstance(dst, list)
        and isinstance(src, list)
        and all(isinstance(x, dict) and "name" in x for x in dst + src)
    ):
        by_name = {x["name"]: x for x in dst}
        for item in src:
            if item["name"] in by_name:
                strategic_merge(by_name[item["name"]], item)
            else:
                dst.append(copy.deepcopy(item))
        return dst
    return copy.deepcopy(src)


def _get_path(obj: dict, dotted: str) -> Any:
    for key in dotted.split("."):
        obj = obj[key]
    return obj


def _set_path(obj: dict, dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    for key in parents:
        obj = obj.setdefault(key, {})
    obj[last] = copy.deepcopy(value)


def render(folder: Path) -> list[dict]:
    """Build a kustomization the way kustomize does for the features cluster/ uses."""
    kust = yaml.safe_load((folder / "kustomization.yaml").read_text())
    objs: list[dict] = []
    for res in kust.get("resources", []):
        path = folder / res
        objs.extend(render(path) if path.is_dir() else load_docs(path))
    for patch in kust.get("patches", []):
        for doc in load_docs(folder / patch["path"]):
            if isinstance(doc, list):
                hits = [o for o in objs if _matches(o, patch["target"])]
                assert hits, f"{patch['path']}: target {patch['target']} matches nothing"
                for obj in hits:
                    json6902(obj, doc)
            else:
                sel = {"kind": doc["kind"], "name": doc["metadata"]["name"]}
                hits = [o for o in objs if _matches(o, sel)]
                assert len(hits) == 1, f"{patch['path']}: {sel} matches {len(hits)} objects"
                strategic_merge(hits[0], doc)
    if "namespace" in kust:
        for obj in objs:
            if obj["kind"] != "Namespace":
                obj["metadata"]["namespace"] = kust["namespace"]
    for rep in kust.get("replacements", []):
        (source,) = [o for o in objs if _matches(o, rep["source"])]
        value = _get_path(source, rep["source"]["fieldPath"])
        for target in rep["targets"]:
            for obj in (o for o in objs if _matches(o, target["select"])):
                for field in target["fieldPaths"]:
                    _set_path(obj, field, value)
    return objs


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict]]:
    return {name: render(folder) for name, folder in TARGETS.items()}


def one(objs: list[dict], kind: str, name: str | None = None) -> dict:
    hits = [
        o for o in objs if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)
    ]
    assert len(hits) == 1, f"expected one {kind} {name or ''}, found {len(hits)}"
    return hits[0]


def ray_groups(spec: dict) -> list[tuple[str, dict]]:
    """(label, group) for the head group and every worker group of a RayCluster spec."""
    return [("head", spec["headGroupSpec"])] + [
        (f"worker {g['groupName']}", g) for g in spec.get("workerGroupSpecs", [])
    ]


def ray_specs(objs: list[dict]) -> list[tuple[str, dict]]:
    """Every RayCluster spec: the RayCluster's and the one embedded in each RayJob."""
    specs = [
        (f"RayCluster {o['metadata']['name']}", o["spec"])
        for o in objs
        if o["kind"] == "RayCluster"
    ]
    specs += [
        (f"RayJob {o['metadata']['name']}", o["spec"]["rayClusterSpec"])
        for o in objs
        if o["kind"] == "RayJob"
    ]
    return specs


def pod_specs(objs: list[dict]) -> list[tuple[str, dict]]:
    out = []
    for o in objs:
        if o["kind"] in ("Deployment", "StatefulSet"):
            out.append((f"{o['kind']} {o['metadata']['name']}", o["spec"]["template"]["spec"]))
    for label, spec in ray_specs(objs):
        out += [(f"{label} {g}", grp["template"]["spec"]) for g, grp in ray_groups(spec)]
    return out


def sweep_config(objs: list[dict]) -> dict:
    return yaml.safe_load(one(objs, "ConfigMap", "petl-sweep-config")["data"]["sweep.yaml"])


def env_of(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


# --------------------------------------------------------------------------- files


@pytest.mark.parametrize("path", ALL_YAML, ids=lambda p: str(p.relative_to(CLUSTER)))
def test_every_yaml_parses_and_objects_are_named(path: Path) -> None:
    """A manifest that does not parse, or an object without identity, breaks kubectl apply."""
    docs = load_docs(path)
    assert docs, f"{path} is empty"
    for doc in docs:
        if isinstance(doc, list):  # a JSON 6902 patch
            assert "/patches/" in path.as_posix(), f"{path}: a list outside patches/"
            assert all({"op", "path"} <= set(op) for op in doc), path
            continue
        assert isinstance(doc, dict), path
        for key in ("apiVersion", "kind"):
            assert doc.get(key), f"{path}: document without {key}"
        if doc["kind"] != "Kustomization":
            assert (doc.get("metadata") or {}).get("name"), f"{path}: {doc['kind']} without name"


def test_all_cluster_yaml_found() -> None:
    """Guards the parametrized test above against an empty glob."""
    names = {p.name for p in ALL_YAML}
    assert {"raycluster.yaml", "rayjob.yaml", "mlflow.yaml", "postgres.yaml"} <= names


@pytest.mark.parametrize("folder", TARGETS.values(), ids=TARGETS.keys())
def test_kustomization_paths_exist(folder: Path) -> None:
    """Every resources/patches entry must exist, or `kubectl apply -k` fails."""
    kust = yaml.safe_load((folder / "kustomization.yaml").read_text())
    assert kust["kind"] == "Kustomization"
    for res in kust.get("resources", []):
        path = folder / res
        assert path.is_file() or (path / "kustomization.yaml").is_file(), f"missing {path}"
    for patch in kust.get("patches", []):
        assert (folder / patch["path"]).is_file(), f"missing patch {patch['path']}"


def test_base_lists_every_manifest_except_the_secret_example() -> None:
    """A manifest left out of resources is never applied; the Secret example must never be."""
    kust = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    listed = set(kust["resources"])
    on_disk = {p.name for p in BASE.glob("*.yaml")} - {"kustomization.yaml"}
    assert on_disk - listed == {"secrets.example.yaml"}
    assert "secrets.example.yaml" not in listed


# --------------------------------------------------------------------------- Ray


@pytest.mark.parametrize("target", TARGETS)
def test_raycluster_shape(rendered: dict, target: str) -> None:
    """KubeRay needs a head group and worker groups with sane, autoscalable replica bounds."""
    objs = rendered[target]
    cluster = one(objs, "RayCluster", "petl-sweep")
    spec = cluster["spec"]
    assert cluster["apiVersion"] == "ray.io/v1"
    assert spec["rayVersion"] == version("ray"), "image Ray and rayVersion must agree"
    assert spec["enableInTreeAutoscaling"] is True
    assert spec["headGroupSpec"]["template"]["spec"]["containers"]
    assert spec["workerGroupSpecs"], "no worker group"
    for group in spec["workerGroupSpecs"]:
        lo, hi = group["minReplicas"], group["maxReplicas"]
        assert isinstance(lo, int) and isinstance(hi, int) and 0 <= lo <= hi, group["groupName"]
        assert lo == 0 or target == "laptop", "GPU workers should scale to zero"
        assert group["template"]["spec"]["containers"]


def test_gpu_overlay_workers_get_gpus(rendered: dict) -> None:
    """In the GPU overlay every worker, also in the RayJob's cluster, holds one GPU."""
    for label, spec in ray_specs(rendered["gpu"]):
        for group in spec["workerGroupSpecs"]:
            pod = group["template"]["spec"]
            limits = pod["containers"][0]["resources"]["limits"]
            assert int(limits["nvidia.com/gpu"]) >= 1, label
            assert any(
                t["key"] == "nvidia.com/gpu" and t["effect"] == "NoSchedule"
                for t in pod.get("tolerations", [])
            ), f"{label}: no toleration for the nvidia.com/gpu taint"
            assert pod.get("nodeSelector"), f"{label}: GPU workers not pinned to GPU nodes"
            assert group["maxReplicas"] > 4, "the gpu overlay should allow more workers"
    assert sweep_config(rendered["gpu"])["resources"]["gpus_per_trial"] > 0


def test_laptop_overlay_is_cpu_only(rendered: dict) -> None:
    """kind/minikube have no GPUs: a GPU request would leave the worker Pending forever."""
    objs = rendered["laptop"]
    assert "nvidia.com/gpu" not in yaml.safe_dump(ray_specs(objs))
    for _, spec in ray_specs(objs):
        (group,) = spec["workerGroupSpecs"]
        assert group["maxReplicas"] == 1
    assert sweep_config(objs)["resources"]["gpus_per_trial"] == 0
    pvc = one(objs, "PersistentVolumeClaim", "ray-storage")
    assert pvc["spec"]["accessModes"] == ["ReadWriteOnce"]


@pytest.mark.parametrize("target", TARGETS)
def test_rayjob_cluster_is_the_rayclusters_spec(rendered: dict, target: str) -> None:
    """One cluster definition: the RayJob's embedded cluster equals the (patched) RayCluster."""
    objs = rendered[target]
    job = one(objs, "RayJob", "cluster-sweep")
    assert job["spec"]["rayClusterSpec"] == one(objs, "RayCluster", "petl-sweep")["spec"]


def readme_cluster_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    sections = re.split(r"^## ", text, flags=re.MULTILINE)
    assert sections[-1].startswith("Running on a cluster"), "README must end with that section"
    return [
        line[line.index("python -m tuner run") :].strip().strip("`")
        for line in sections[-1].splitlines()
        if "python -m tuner run" in line
    ]


def test_rayjob_entrypoint_and_config(rendered: dict) -> None:
    """The RayJob runs the documented command on a config file that is really mounted."""
    objs = rendered["base"]
    job = one(objs, "RayJob", "cluster-sweep")
    assert job["spec"]["shutdownAfterJobFinishes"] is True
    entry = job["spec"]["entrypoint"]
    assert entry in readme_cluster_commands(), "README's cluster command and the RayJob differ"
    config_path = Path(entry.split()[-1])
    assert config_path.parent == Path(CONFIG_MOUNT)
    head = job["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
    mounts = {m["mountPath"]: m["name"] for m in head["containers"][0]["volumeMounts"]}
    volume = {v["name"]: v for v in head["volumes"]}[mounts[CONFIG_MOUNT]]
    configmap = one(objs, "ConfigMap", volume["configMap"]["name"])
    assert config_path.name in configmap["data"]


@pytest.mark.parametrize("target", TARGETS)
def test_sweep_config_validates(rendered: dict, target: str) -> None:
    """The ConfigMap's sweep.yaml must pass the project's own validation and use the cluster."""
    from tuner.config import parse_config

    raw = sweep_config(rendered[target])
    cfg = parse_config(raw, f"{target}: petl-sweep-config")
    assert cfg.name == "cluster-sweep"
    assert raw["tasks"] == ["synth/*"] and all(t.startswith("synth/") for t in cfg.tasks)
    assert cfg.methods == ["lora", "bitfit", "vpt_deep"]
    assert cfg.ray.address == "auto"
    assert cfg.ray.storage_path == STORAGE_MOUNT
    assert cfg.tracking.uri == MLFLOW_URI
    for path in (cfg.data_root, cfg.out_dir):
        assert Path(path).is_relative_to(STORAGE_MOUNT), "workers must see data and results"
    if target == "base":
        assert cfg.resources.gpus_per_trial == 0.25


@pytest.mark.parametrize("target", TARGETS)
def test_ray_pods_share_storage_and_mlflow(rendered: dict, target: str) -> None:
    """Tune storage must be the same RWX volume at the same path on head and workers."""
    objs = rendered[target]
    pvc_names = {o["metadata"]["name"] for o in objs if o["kind"] == "PersistentVolumeClaim"}
    for label, spec in ray_specs(objs):
        for group_label, group in ray_groups(spec):
            pod = group["template"]["spec"]
            container = pod["containers"][0]
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            volume = {v["name"]: v for v in pod["volumes"]}[mounts[STORAGE_MOUNT]]
            assert volume["persistentVolumeClaim"]["claimName"] == "ray-storage"
            where = f"{label} {group_label}"
            assert env_of(container)["MLFLOW_TRACKING_URI"]["value"] == MLFLOW_URI, where
    assert "ray-storage" in pvc_names
    if target != "laptop":
        pvc = one(objs, "PersistentVolumeClaim", "ray-storage")
        assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]


# --------------------------------------------------------------------------- security


@pytest.mark.parametrize("target", TARGETS)
def test_token_auth_on_everywhere(rendered: dict, target: str) -> None:
    """Ray token auth: authOptions mode token and the token (from the Secret) on every pod."""
    for label, spec in ray_specs(rendered[target]):
        auth = spec["authOptions"]
        assert auth["mode"] == "token", label
        for group_label, group in ray_groups(spec):
            for container in group["template"]["spec"]["containers"]:
                env = env_of(container)
                where = f"{label} {group_label} {container['name']}"
                assert env["RAY_AUTH_MODE"]["value"] == "token", where
                ref = env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]
                assert ref == {"name": auth["secretName"], "key": "auth_token"}, where


def test_token_auth_never_disabled_in_any_file() -> None:
    """No file in cluster/ or docker/ may switch Ray auth off, even in a comment."""
    pattern = re.compile(
        r"RAY_AUTH_MODE\W{0,12}disabled|mode\W{0,4}disabled|disable[-_ ]?(token[-_ ]?)?auth",
        re.IGNORECASE,
    )
    files = [p for d in (CLUSTER, ROOT / "docker") for p in d.rglob("*") if p.is_file()]
    assert files
    for path in files:
        match = pattern.search(path.read_text())
        assert not match, f"{path}: {match.group(0)!r}"


@pytest.mark.parametrize("target", TARGETS)
def test_nothing_exposed_outside_the_cluster(rendered: dict, target: str) -> None:
    """ClusterIP only: no LoadBalancer/NodePort Service, no Ingress, no host ports."""
    objs = rendered[target]
    kinds = {o["kind"] for o in objs}
    assert not kinds & {"Ingress", "Route", "Gateway", "HTTPRoute"}
    for svc in (o for o in objs if o["kind"] == "Service"):
        assert svc["spec"].get("type", "ClusterIP") == "ClusterIP", svc["metadata"]["name"]
    for _, spec in ray_specs(objs):
        head = spec["headGroupSpec"]
        assert head.get("serviceType", "ClusterIP") == "ClusterIP"
        assert not head.get("enableIngress")
    for label, pod in pod_specs(objs):
        assert not pod.get("hostNetwork"), label
        for c in pod["containers"]:
            assert all("hostPort" not in p for p in c.get("ports", [])), label


@pytest.mark.parametrize("target", TARGETS)
def test_secrets_come_from_secret_refs(rendered: dict, target: str) -> None:
    """Passwords and tokens only via secretKeyRef to a Secret shaped like the example."""
    objs = rendered[target]
    assert not [o for o in objs if o["kind"] == "Secret"], "real Secrets are created by hand"
    example = {
        d["metadata"]["name"]: set(d["stringData"])
        for d in load_docs(BASE / "secrets.example.yaml")
    }
    refs = 0
    for label, pod in pod_specs(objs):
        for c in pod["containers"]:
            for e in c.get("env", []):
                ref = (e.get("valueFrom") or {}).get("secretKeyRef")
                if ref:
                    refs += 1
                    assert ref["key"] in example.get(ref["name"], ()), f"{label}: {ref}"
                elif SECRETISH.search(e["name"]):
                    raise AssertionError(f"{label}: {e['name']} is a literal, not a secretKeyRef")
                for m in re.finditer(r"://[^:/@]+:([^@]+)@", str(e.get("value", ""))):
                    assert re.fullmatch(r"\$\([A-Z_]+\)", m.group(1)), f"{label}: password in URI"
    assert refs >= 4


# --------------------------------------------------------------------------- MLflow, Postgres


@pytest.mark.parametrize("target", TARGETS)
def test_mlflow_server(rendered: dict, target: str) -> None:
    """Proxied artifacts on a PVC, Postgres backend from the Secret, Host header allow-list."""
    objs = rendered[target]
    svc = one(objs, "Service", "mlflow")
    assert [p["port"] for p in svc["spec"]["ports"]] == [5000]
    pod = one(objs, "Deployment", "mlflow")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    args = container["args"]
    assert "--serve-artifacts" in args and "--app-name=basic-auth" in args
    env = env_of(container)
    hosts = set(env["MLFLOW_SERVER_ALLOWED_HOSTS"]["value"].split(","))
    for name in ("mlflow", "mlflow.petl-sweep", "mlflow.petl-sweep.svc.cluster.local"):
        assert {name, f"{name}:5000"} <= hosts, name
    assert "*" not in hosts
    uri = env["MLFLOW_BACKEND_STORE_URI"]["value"]
    assert uri.startswith("postgresql+psycopg2://") and "@postgres:5432/" in uri
    pw = re.search(r"\$\((\w+)\)@", uri).group(1)
    assert env[pw]["valueFrom"]["secretKeyRef"]["name"] == "petl-sweep-postgres"
    for var in ("MLFLOW_AUTH_ADMIN_USERNAME", "MLFLOW_AUTH_ADMIN_PASSWORD",
                "MLFLOW_FLASK_SERVER_SECRET_KEY"):  # fmt: skip
        assert env[var]["valueFrom"]["secretKeyRef"]["name"] == "petl-sweep-mlflow-auth"
    opts = {"--artifacts-destination": env["MLFLOW_ARTIFACTS_DESTINATION"]["value"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volume = {v["name"]: v for v in pod["volumes"]}[mounts[opts["--artifacts-destination"]]]
    assert volume["persistentVolumeClaim"]["claimName"] == "mlflow-artifacts"
    service_uri = f"http://{svc['metadata']['name']}:{svc['spec']['ports'][0]['port']}"
    assert service_uri == MLFLOW_URI
    auth_volume = {v["name"]: v for v in pod["volumes"]}[mounts["/mlauth"]]
    assert auth_volume["persistentVolumeClaim"]["claimName"] == "mlflow-auth"
    auth_ini = configparser.ConfigParser()
    auth_ini.read(ROOT / "docker" / "mlflow-auth.ini")
    assert auth_ini["mlflow"]["database_uri"] == "sqlite:////mlauth/basic_auth.db"


@pytest.mark.parametrize("target", TARGETS)
def test_no_password_on_any_command_line(rendered: dict, target: str) -> None:
    """argv is world-readable (ps): no container's command or args may carry a secret, not
    even through $(VAR) expansion of an env var that holds one."""
    for label, pod in pod_specs(rendered[target]):
        for c in pod["containers"]:
            env = env_of(c)
            secretish = {n for n, e in env.items() if SECRETISH.search(n) or "valueFrom" in e}
            secretish |= {
                n for n, e in env.items() if re.search(r"://[^@/]+:[^@]+@", str(e.get("value", "")))
            }
            words = " ".join(str(w) for w in c.get("command", []) + c.get("args", []))
            for name in secretish:
                assert f"$({name})" not in words and f"${{{name}}}" not in words, (label, name)
            assert not re.search(r"://[^@/\s]+:[^@\s]+@", words), f"{label}: credentials in argv"


@pytest.mark.parametrize("target", TARGETS)
def test_mlflow_requires_auth_and_only_ray_pods_reach_it(rendered: dict, target: str) -> None:
    """Every Ray pod logs with the MLflow credentials from the Secret; a NetworkPolicy admits
    only those pods to MLflow and only MLflow to PostgreSQL."""
    objs = rendered[target]
    client_label = ("petl-sweep.io/mlflow-client", "true")
    for label, spec in ray_specs(objs):
        for group_label, group in ray_groups(spec):
            labels = group["template"].get("metadata", {}).get("labels", {})
            assert labels.get(client_label[0]) == client_label[1], f"{label} {group_label}"
            env = env_of(group["template"]["spec"]["containers"][0])
            for var, key in (("MLFLOW_TRACKING_USERNAME", "username"),
                             ("MLFLOW_TRACKING_PASSWORD", "password")):  # fmt: skip
                ref = env[var]["valueFrom"]["secretKeyRef"]
                assert ref == {"name": "petl-sweep-mlflow-auth", "key": key}, (label, var)
    policies = {o["metadata"]["name"]: o["spec"] for o in objs if o["kind"] == "NetworkPolicy"}
    by_target = {
        p["podSelector"]["matchLabels"]["app.kubernetes.io/name"]: p for p in policies.values()
    }
    expected = [
        ("mlflow", dict([client_label]), 5000),
        ("postgres", {"app.kubernetes.io/name": "mlflow"}, 5432),
    ]
    for server, source, port in expected:
        policy = by_target[server]
        assert policy["policyTypes"] == ["Ingress"]
        (rule,) = policy["ingress"]
        assert rule["from"] == [{"podSelector": {"matchLabels": source}}], server
        assert rule["ports"] == [{"protocol": "TCP", "port": port}], server
        served = one(objs, "Service", server)["spec"]["ports"][0]["port"]
        assert served == port, server


def test_postgres_statefulset(rendered: dict) -> None:
    """Postgres keeps its data on a claim template and its password in the Secret."""
    sts = one(rendered["base"], "StatefulSet", "postgres")
    assert sts["spec"]["volumeClaimTemplates"]
    (container,) = sts["spec"]["template"]["spec"]["containers"]
    ref = env_of(container)["POSTGRES_PASSWORD"]["valueFrom"]["secretKeyRef"]
    assert ref["name"] == "petl-sweep-postgres"
    one(rendered["base"], "Service", "postgres")


@pytest.mark.parametrize("target", TARGETS)
def test_everything_in_the_namespace(rendered: dict, target: str) -> None:
    """Objects land in petl-sweep, where the Secrets and the in-cluster DNS names live."""
    objs = rendered[target]
    assert one(objs, "Namespace")["metadata"]["name"] == NAMESPACE
    for o in objs:
        if o["kind"] != "Namespace":
            assert o["metadata"]["namespace"] == NAMESPACE, o["metadata"]["name"]


# --------------------------------------------------------------------------- real kustomize


def _comparable(objs: list[dict]) -> dict[tuple[str, str], Any]:
    return {
        (o["kind"], o["metadata"]["name"]): (
            o.get("spec"),
            o.get("data"),
            o["metadata"].get("namespace"),
        )
        for o in objs
    }


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")
@pytest.mark.parametrize("target", TARGETS)
def test_kubectl_kustomize_agrees(rendered: dict, target: str) -> None:
    """The real kustomize must build each target and produce what the checks above saw."""
    proc = subprocess.run(
        ["kubectl", "kustomize", str(TARGETS[target])],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    real = [d for d in yaml.safe_load_all(proc.stdout) if d]
    assert _comparable(real) == _comparable(rendered[target])
