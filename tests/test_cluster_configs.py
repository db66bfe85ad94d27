"""The cluster definitions in cluster/ parse, validate and name only things this repository has.

Checks, without network or a Ray cluster: the launcher YAMLs against Ray's own JSON schema; the
KubeRay manifests' autoscaling groups and shared volume; the RayService's Serve config against
Ray Serve's schema, configs/serve.yaml and `serve.schemas.AppArgs`; the runtime-env pip lists
against pyproject.toml; every `python -m` module, `--config` file and cluster file they mention.
"""

from __future__ import annotations

import ast
import copy
import importlib.util
import json
import re
import shlex
from importlib.metadata import version
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from adaclip.config import load_config
from serve.schemas import AppArgs

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "cluster"
KUBERAY = CLUSTER / "kuberay"
SHARED = "/mnt/cluster_storage"  # where every definition mounts the shared file system
YAMLS = sorted(CLUSTER.rglob("*.yaml"))
TEXTS = sorted([*YAMLS, *CLUSTER.rglob("*.md")])
RAY_VERSION = version("ray")


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def _manifest(path: Path, kind: str) -> dict[str, Any]:
    (doc,) = [d for d in _docs(path) if d.get("kind") == kind]
    return doc


def _launcher_configs() -> list[Path]:
    return [p for p in YAMLS if p.parent == CLUSTER and "provider" in _docs(p)[0]]


def _cluster_specs() -> list[tuple[str, dict[str, Any]]]:
    """(file: kind, RayClusterSpec) of every KubeRay manifest."""
    specs = []
    for path in sorted(KUBERAY.glob("*.yaml")):
        for doc in _docs(path):
            spec = doc.get("spec", {})
            key = {"RayCluster": None, "RayJob": "rayClusterSpec", "RayService": "rayClusterConfig"}
            if doc.get("kind") in key:
                name = key[doc["kind"]]
                specs.append((f"{path.name}: {doc['kind']}", spec if name is None else spec[name]))
    return specs


def _serve_config() -> dict[str, Any]:
    return yaml.safe_load(_manifest(KUBERAY / "rayservice.yaml", "RayService")["spec"]["serveConfigV2"])


def _app(config: dict[str, Any]) -> dict[str, Any]:
    (app,) = config["applications"]
    return app


def _deployments(app: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {d["name"]: d for d in app.get("deployments", [])}


# ---- every file ------------------------------------------------------------------------------


def test_cluster_folder_has_the_definitions():
    names = {_rel(p) for p in YAMLS}
    assert {
        "cluster/aws.yaml",
        "cluster/qdrant-values.yaml",
        "cluster/kuberay/raycluster.yaml",
        "cluster/kuberay/rayjob-train.yaml",
        "cluster/kuberay/rayservice.yaml",
    } <= names


@pytest.mark.parametrize("path", YAMLS, ids=_rel)
def test_yaml_parses_to_mappings_without_machine_paths(path):
    docs = _docs(path)
    assert docs and all(isinstance(d, dict) for d in docs), f"{_rel(path)}: every document must be a mapping"
    assert str(ROOT) not in path.read_text(), f"{_rel(path)} names this machine's checkout path"


def test_images_and_ray_versions_match_the_installed_ray():
    """Images are rayproject/ray:<installed ray>-py311[-gpu]; KubeRay rayVersion is the same."""
    for path in YAMLS:
        for image in re.findall(r"rayproject/ray:(\S+)", path.read_text()):
            assert image in (f"{RAY_VERSION}-py311", f"{RAY_VERSION}-py311-gpu"), f"{_rel(path)}: {image}"
    for where, spec in _cluster_specs():
        assert spec["rayVersion"] == RAY_VERSION, where


# ---- Ray cluster launcher --------------------------------------------------------------------


def _ray_schema() -> dict[str, Any]:
    (ray_dir,) = importlib.util.find_spec("ray").submodule_search_locations
    return json.loads((Path(ray_dir) / "autoscaler" / "ray-schema.json").read_text())


def check_launcher_config(config: dict[str, Any]) -> None:
    """Ray's own checks of `ray up` (schema, then the cross-field rules of validate_config)."""
    jsonschema.validate(config, _ray_schema())
    types = config["available_node_types"]
    assert config["head_node_type"] in types
    workers = [t for name, t in types.items() if name != config["head_node_type"]]
    assert sum(t.get("min_workers", 0) for t in workers) <= config["max_workers"]
    assert sum(t["max_workers"] for t in workers) <= config["max_workers"], "max_workers below the types'"
    for t in workers:
        assert 0 <= t.get("min_workers", 0) <= t["max_workers"]


@pytest.mark.parametrize("path", _launcher_configs(), ids=_rel)
def test_launcher_config_validates_against_rays_schema(path):
    config = _docs(path)[0]
    check_launcher_config(config)
    types = config["available_node_types"].values()
    assert any(t["resources"].get("GPU", 0) >= 1 for t in types), "no GPU worker type"
    assert any(t["resources"].get("CPU", 0) >= 1 and not t["resources"].get("GPU") for t in types)
    assert config["idle_timeout_minutes"] > 0
    assert any("pip install" in c and "~/adaclip" in c for c in config["setup_commands"])
    assert config["file_mounts"]["~/adaclip"] == "."
    assert any(SHARED in opt for opt in config["docker"]["run_options"]), "shared storage not in container"


def test_launcher_schema_check_rejects_a_broken_config():
    config = _docs(CLUSTER / "aws.yaml")[0]
    typo = copy.deepcopy(config)
    typo["idle_timeout_minute"] = 5
    with pytest.raises(jsonschema.ValidationError):
        check_launcher_config(typo)
    fractional = copy.deepcopy(config)
    fractional["available_node_types"]["gpu_worker"]["resources"]["GPU"] = 0.5
    with pytest.raises(jsonschema.ValidationError):
        check_launcher_config(fractional)


# ---- KubeRay ---------------------------------------------------------------------------------


def _pod_specs(spec: dict[str, Any]) -> list[dict[str, Any]]:
    groups = [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
    return [g["template"]["spec"] for g in groups]


def test_kuberay_clusters_autoscale_with_cpu_and_gpu_groups():
    assert len(_cluster_specs()) == 3
    for where, spec in _cluster_specs():
        assert spec["enableInTreeAutoscaling"] is True, where
        assert spec["autoscalerOptions"]["idleTimeoutSeconds"] > 0, where
        assert spec["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0", where
        gpu_groups = 0
        for group in spec["workerGroupSpecs"]:
            assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"], where
            (container,) = group["template"]["spec"]["containers"]
            gpus = int(container["resources"]["limits"].get("nvidia.com/gpu", 0))
            assert container["image"].endswith("-gpu") == (gpus > 0), f"{where}: {group['groupName']}"
            gpu_groups += gpus > 0
        assert 0 < gpu_groups < len(spec["workerGroupSpecs"]), f"{where}: needs CPU and GPU groups"


def test_every_pod_mounts_the_shared_claim():
    claim = _manifest(KUBERAY / "raycluster.yaml", "PersistentVolumeClaim")
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    for where, spec in _cluster_specs():
        for pod in _pod_specs(spec):
            volumes = {v["name"]: v for v in pod["volumes"]}
            for container in pod["containers"]:
                mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
                assert set(mounts.values()) <= set(volumes), where
                shared = volumes[mounts[SHARED]]
                assert shared["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"], where


def test_rayservice_pods_get_qdrant_credentials_from_a_secret():
    spec = _manifest(KUBERAY / "rayservice.yaml", "RayService")["spec"]["rayClusterConfig"]
    for pod in _pod_specs(spec):
        for container in pod["containers"]:
            env = {e["name"]: e["valueFrom"]["secretKeyRef"]["name"] for e in container["env"]}
            assert env.keys() >= {"QDRANT_URL", "QDRANT_API_KEY"}
            assert len(set(env.values())) == 1


def _runtime_envs() -> dict[str, dict[str, Any]]:
    job = _manifest(KUBERAY / "rayjob-train.yaml", "RayJob")
    return {
        "rayjob-train.yaml": yaml.safe_load(job["spec"]["runtimeEnvYAML"]),
        "rayservice.yaml": _app(_serve_config())["runtime_env"],
    }


def test_runtime_env_installs_exactly_the_project_dependencies():
    """The stock Ray image has ray; pip adds every other dependency of pyproject.toml, as written."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    deps = [d for d in project["dependencies"] if not re.match(r"ray\b", d)]
    for name, env in _runtime_envs().items():
        assert env["pip"] == deps, f"{name}: runtime_env pip differs from pyproject.toml dependencies"
        assert env["working_dir"].endswith(".zip"), name


# ---- the Serve application -------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # Ray's own pydantic Field(...) extras
def test_serve_config_v2_passes_ray_serves_schema():
    from ray.serve.schema import DeploymentSchema, ServeApplicationSchema, ServeDeploySchema

    config = _serve_config()
    ServeDeploySchema.model_validate(config)
    app = _app(config)  # the schema ignores unknown keys: a typo would be dropped silently
    assert set(app) <= set(ServeApplicationSchema.model_fields)
    for deployment in app["deployments"]:
        assert set(deployment) <= set(DeploymentSchema.model_fields), deployment["name"]


def test_rayservice_app_mirrors_configs_serve_yaml():
    local = _app(yaml.safe_load((ROOT / "configs" / "serve.yaml").read_text()))
    app = _app(_serve_config())
    assert app["import_path"] == local["import_path"]
    assert app["name"] == local["name"] and app["route_prefix"] == local["route_prefix"]
    assert set(_deployments(app)) <= set(_deployments(local)), "deployment not in configs/serve.yaml"
    assert set(app["args"]) <= set(local["args"]) | set(AppArgs.model_fields)
    AppArgs.model_validate(app["args"])  # extra="forbid": an unknown or mistyped arg fails here


def test_rayservice_args_agree_with_its_deployments_and_storage():
    app = _app(_serve_config())
    args, deployments = app["args"], _deployments(app)
    cfg = load_config(ROOT / args["config"], args["overrides"])
    assert cfg.index.backend == "server", "several index replicas need index.backend=server"
    assert args["index_replicas"] > 1
    assert deployments["IndexService"]["num_replicas"] == args["index_replicas"]
    scaling = deployments["VideoEncoder"]["autoscaling_config"]
    assert 1 <= scaling["min_replicas"] < scaling["max_replicas"] == args["encoder_max_replicas"]
    assert args["encoder_gpus"] == 1, "an autoscaling cluster must ask for the encoder's GPU explicitly"
    for key in ("staging_dir", "checkpoint"):
        assert args[key].startswith(SHARED + "/"), f"{key} must be on the shared volume"
    assert all(root.startswith(SHARED + "/") for root in args["ingest_roots"])


# ---- commands named anywhere in cluster/ -----------------------------------------------------


def _main_guarded(source: str) -> bool:
    tree = ast.parse(source)
    has_main = any(isinstance(n, ast.FunctionDef) and n.name == "main" for n in tree.body)
    guard = any(isinstance(n, ast.If) and "__main__" in ast.unparse(n.test) for n in tree.body)
    return has_main and guard


def test_python_m_entrypoints_are_runnable_modules_of_this_repo():
    found = {m for p in TEXTS for m in re.findall(r"python -m ([A-Za-z_][\w.]*)", p.read_text())}
    assert "ray_jobs.train" in found
    for module in sorted(found):
        assert (ROOT / module.split(".")[0]).is_dir(), f"{module} is not a package of this repository"
        spec = importlib.util.find_spec(module)
        assert spec is not None and spec.origin, f"python -m {module}: no such module"
        source = Path(spec.origin).read_text()
        assert _main_guarded(source), f"{module} lacks main() or an `if __name__ == '__main__'` guard"


def test_config_files_and_cluster_files_named_exist():
    configs, files = set(), set()
    for path in TEXTS:
        text = path.read_text()
        configs |= set(re.findall(r"--config[ =]+['\"]?(configs/[\w./-]+\.yaml)", text))
        configs |= set(re.findall(r"config: (configs/[\w./-]+\.yaml)", text))
        files |= set(re.findall(r"\bcluster/[\w./-]+\.(?:yaml|md)", text))
    assert "configs/msrvtt.yaml" in configs
    for name in sorted(configs | files):
        assert (ROOT / name).is_file(), f"{name} is named in cluster/ but does not exist"


def test_rayjob_entrypoint_validates_and_writes_to_shared_storage():
    entrypoint = _manifest(KUBERAY / "rayjob-train.yaml", "RayJob")["spec"]["entrypoint"]
    argv = shlex.split(entrypoint)
    assert argv[:3] == ["python", "-m", "ray_jobs.train"] and "&&" not in argv
    config = argv[argv.index("--config") + 1]
    overrides = [a for a in argv[3:] if "=" in a and not a.startswith("-")]
    cfg = load_config(ROOT / config, overrides)  # a mistyped key fails here
    assert cfg.train.use_gpu
    for path in (cfg.train.output_dir, cfg.data.cache_dir, cfg.data.annotations, cfg.data.video_root):
        assert str(path).startswith(SHARED + "/"), f"{path} is not on the shared volume"


def test_qdrant_values_describe_a_replicated_cluster():
    values = _docs(CLUSTER / "qdrant-values.yaml")[0]
    factor = values["config"]["storage"]["collection"]["replication_factor"]
    assert values["config"]["cluster"]["enabled"] is True
    assert values["replicaCount"] >= 3 and 2 <= factor <= values["replicaCount"]
    assert values["apiKey"]["valueFrom"]["secretKeyRef"]["key"]
    assert values["persistence"]["size"]
