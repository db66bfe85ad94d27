"""The cluster definitions in cluster/ and the Dockerfile parse, validate and name only things this
repository has.

Checks, without network, Docker or a Ray cluster: the launcher YAMLs (AWS and GCP) against Ray's own
JSON schema and each other; the Dockerfile's stages, base images, torch pins and project install
against the installed Ray and pyproject.toml, and its build context (.dockerignore); the images,
/dev/shm volumes and shared volume of every KubeRay pod; that nothing is pip-installed when a node
or pod starts; the RayService's Serve config against Ray Serve's schema, configs/serve.yaml and
`serve.schemas.AppArgs`; every `python -m` module, import path, `--config` file and cluster file named.
"""

from __future__ import annotations

import ast
import copy
import functools
import importlib.util
import json
import re
import shlex
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

from adaclip.config import load_config
from serve.schemas import AppArgs

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "cluster"
KUBERAY = CLUSTER / "kuberay"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
SHARED = "/mnt/cluster_storage"  # where every definition mounts the shared file system
YAMLS = sorted(CLUSTER.rglob("*.yaml"))
TEXTS = sorted([*YAMLS, *CLUSTER.rglob("*.md"), DOCKERFILE])
RAY_VERSION = version("ray")
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
TARGETS = {"cpu": False, "cuda": True}  # Dockerfile target -> for GPU nodes


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


def _dependencies() -> dict[str, Requirement]:
    """pyproject.toml's dependencies by canonical name."""
    reqs = [Requirement(d) for d in PROJECT["dependencies"]]
    return {canonicalize_name(r.name): r for r in reqs}


# ---- the Dockerfile: a small parser of its instructions ----------------------------------------

INSTRUCTIONS = {
    "FROM", "ARG", "RUN", "COPY", "ADD", "ENV", "WORKDIR", "ENTRYPOINT", "CMD", "LABEL", "USER",
    "EXPOSE", "SHELL", "VOLUME", "HEALTHCHECK", "STOPSIGNAL", "ONBUILD",
}  # fmt: skip
SHELL_OPERATORS = {"&&", "||", ";", "|", ">", ">>", "<", "&"}


@dataclass
class Instruction:
    keyword: str
    args: str
    line: int


@dataclass
class Stage:
    name: str | None
    base: str  # the FROM image, variables substituted, or an earlier stage's name
    root: str  # the external image the stage derives from
    variables: dict[str, str]  # ARG and ENV values visible in the stage
    instructions: list[Instruction] = field(default_factory=list)
    workdir: str = "/"


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions with line continuations joined; comments and blank lines dropped."""
    instructions, buffer, start = [], "", 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue  # also inside a continuation, as Docker does
        if not buffer:
            start = number
        if line.endswith("\\"):
            buffer += line[:-1] + " "
            continue
        keyword, _, args = (buffer + line).partition(" ")
        instructions.append(Instruction(keyword.upper(), " ".join(args.split()), start))
        buffer = ""
    assert not buffer, "the Dockerfile ends inside a line continuation"
    return instructions


def _substitute(text: str, variables: dict[str, str]) -> str:
    """Docker's ${VAR} and $VAR substitution for the variables it knows; others stay as written."""

    def value(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        return variables.get(name, m.group(0))

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", value, text)


def _assignments(args: str) -> dict[str, str]:
    """ARG NAME[=default] / ENV NAME=value ... / ENV NAME value."""
    tokens = shlex.split(args)
    if "=" not in tokens[0]:
        return {tokens[0]: " ".join(tokens[1:])}
    return dict(tok.partition("=")[::2] for tok in tokens)


def dockerfile_args(instructions: list[Instruction]) -> dict[str, str]:
    """The ARGs declared before the first FROM, with their defaults."""
    global_args: dict[str, str] = {}
    for ins in instructions:
        if ins.keyword == "FROM":
            break
        assert ins.keyword == "ARG", f"line {ins.line}: only ARG may come before the first FROM"
        global_args.update(_assignments(ins.args))
    return global_args


def dockerfile_stages(instructions: list[Instruction]) -> list[Stage]:
    global_args = dockerfile_args(instructions)
    stages: list[Stage] = []
    for ins in instructions:
        if ins.keyword == "FROM":
            words = [w for w in _substitute(ins.args, global_args).split() if not w.startswith("--")]
            base, name = words[0], (words[2] if len(words) == 3 and words[1].upper() == "AS" else None)
            assert len(words) in (1, 3), f"line {ins.line}: FROM {ins.args}"
            earlier = {s.name: s for s in stages if s.name}
            root = earlier[base].root if base in earlier else base
            inherited = dict(earlier[base].variables) if base in earlier else {}
            workdir = earlier[base].workdir if base in earlier else "/"
            stages.append(Stage(name, base, root, inherited, workdir=workdir))
        elif stages:
            stage = stages[-1]
            if ins.keyword == "ARG":
                for name, default in _assignments(ins.args).items():
                    stage.variables[name] = default or global_args.get(name, "")
            elif ins.keyword == "ENV":
                stage.variables.update(_assignments(_substitute(ins.args, stage.variables)))
            elif ins.keyword == "WORKDIR":
                stage.workdir = _substitute(ins.args, stage.variables)
            stage.instructions.append(
                Instruction(ins.keyword, _substitute(ins.args, stage.variables), ins.line)
            )
    return stages


@functools.cache
def _instructions() -> list[Instruction]:
    return parse_dockerfile(DOCKERFILE.read_text())


@functools.cache
def _stages() -> list[Stage]:
    return dockerfile_stages(_instructions())


def _stage(name: str) -> Stage:
    (stage,) = [s for s in _stages() if s.name == name]
    return stage


def _shell_commands(run_args: str) -> tuple[dict[str, dict[str, str]], list[list[str]]]:
    """A RUN line's --mount flags (by target) and its shell commands, split at && ; | and redirects."""
    lexer = shlex.shlex(run_args, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    tokens = list(lexer)
    mounts = {}
    while tokens and tokens[0].startswith("--"):
        flag, _, value = tokens.pop(0).partition("=")
        if flag == "--mount":
            options = dict(kv.partition("=")[::2] for kv in value.split(","))
            mounts[options["target"]] = options
    commands, current = [], []
    for tok in tokens:
        if tok in SHELL_OPERATORS:
            commands.append(current)
            current = []
        else:
            current.append(tok)
    return mounts, [c for c in [*commands, current] if c]


PIP_VALUE_OPTIONS = {"-i", "--index-url", "--extra-index-url", "-f", "--find-links", "-c", "--constraint",
                     "-r", "--requirement", "-w", "--wheel-dir", "-t", "--target", "--prefix", "--root"}  # fmt: skip


@dataclass
class PipCall:
    verb: str  # install or wheel
    options: dict[str, str]
    positionals: list[str]
    mounts: dict[str, dict[str, str]]
    line: int

    @property
    def requirements(self) -> dict[str, Requirement]:
        reqs = [Requirement(p) for p in self.positionals if not p.startswith(("/", ".")) and "/" not in p]
        return {canonicalize_name(r.name): r for r in reqs}

    @property
    def paths(self) -> list[str]:
        return [p for p in self.positionals if p.startswith(("/", "."))]


def pip_calls(stage: Stage) -> list[PipCall]:
    calls = []
    for ins in stage.instructions:
        if ins.keyword != "RUN":
            continue
        mounts, commands = _shell_commands(ins.args)
        for argv in commands:
            if argv[:3] in (["python", "-m", "pip"], ["python3", "-m", "pip"]):
                argv = ["pip", *argv[3:]]
            if argv[0] not in ("pip", "pip3") or len(argv) < 2:
                continue
            options, positionals, rest = {}, [], argv[2:]
            while rest:
                tok = rest.pop(0)
                if tok in PIP_VALUE_OPTIONS:
                    options[tok] = rest.pop(0)
                elif tok.startswith("-"):
                    name, _, value = tok.partition("=")
                    options[name] = value
                else:
                    positionals.append(tok)
            calls.append(PipCall(argv[1], options, positionals, mounts, ins.line))
    return calls


def _python_c_sources() -> list[str]:
    sources = []
    for stage in _stages():
        for ins in stage.instructions:
            if ins.keyword == "RUN":
                for argv in _shell_commands(ins.args)[1]:
                    if argv[0] in ("python", "python3") and "-c" in argv:
                        sources.append(argv[argv.index("-c") + 1])
    return sources


def _image_app_dir() -> str:
    """Where the images hold configs/ (the WORKDIR of the targets): cluster/ names paths under it."""
    (workdir,) = {_stage(t).workdir for t in TARGETS}
    return workdir


def _repo_path(path: str) -> Path:
    """A path that cluster/ names in the image, as the file of this repository the image copies."""
    if Path(path).is_absolute():
        prefix = _image_app_dir() + "/"
        assert path.startswith(prefix), f"{path} is neither relative nor under the image's {prefix}"
        path = path[len(prefix) :]
    return ROOT / path


# ---- every file ------------------------------------------------------------------------------


def test_cluster_folder_has_the_definitions():
    names = {_rel(p) for p in YAMLS}
    assert {
        "cluster/aws.yaml",
        "cluster/gcp.yaml",
        "cluster/qdrant-values.yaml",
        "cluster/kuberay/raycluster.yaml",
        "cluster/kuberay/rayjob-train.yaml",
        "cluster/kuberay/rayservice.yaml",
    } <= names
    assert DOCKERFILE.is_file() and DOCKERIGNORE.is_file()


@pytest.mark.parametrize("path", [*YAMLS, DOCKERFILE, DOCKERIGNORE], ids=_rel)
def test_files_parse_without_machine_paths(path):
    if path.suffix == ".yaml":
        docs = _docs(path)
        assert docs and all(isinstance(d, dict) for d in docs), (
            f"{_rel(path)}: every document must be a mapping"
        )
    assert str(ROOT) not in path.read_text(), f"{_rel(path)} names this machine's checkout path"


def test_ray_images_and_versions_match_the_installed_ray():
    """rayproject/ray images anywhere are <installed ray>-py311[-gpu]; KubeRay rayVersion is the same."""
    for path in TEXTS:
        text = path.read_text()
        if path == DOCKERFILE:  # FROM rayproject/ray:${RAY_VERSION}-...
            text = _substitute(text, dockerfile_args(_instructions()))
        for image in re.findall(r"rayproject/ray:([^\s`'\"]+)", text):
            assert image in (f"{RAY_VERSION}-py311", f"{RAY_VERSION}-py311-gpu"), f"{_rel(path)}: {image}"
    for where, spec in _cluster_specs():
        assert spec["rayVersion"] == RAY_VERSION, where


# ---- the Dockerfile --------------------------------------------------------------------------


def test_dockerfile_parses_into_stages_with_cpu_and_cuda_targets():
    assert _instructions() and {i.keyword for i in _instructions()} <= INSTRUCTIONS
    names = [s.name for s in _stages() if s.name]
    assert len(names) == len(set(names)), "duplicate stage names"
    assert set(TARGETS) <= set(names)
    for stage in _stages():
        for ins in stage.instructions:
            if ins.keyword in ("FROM", "COPY", "WORKDIR"):
                assert "$" not in ins.args, f"line {ins.line}: unresolved variable in {ins.args}"


def test_parser_joins_continuations_and_resolves_args():
    text = "# c\nARG V=1\nFROM img:${V} AS a\nARG V\nRUN pip install \\\n  # note\n  x==$V\nFROM a AS b\n"
    stages = dockerfile_stages(parse_dockerfile(text))
    assert [(s.name, s.base, s.root) for s in stages] == [("a", "img:1", "img:1"), ("b", "a", "img:1")]
    (call,) = pip_calls(stages[0])
    assert call.verb == "install" and str(call.requirements["x"].specifier) == "==1"
    with pytest.raises(AssertionError):
        parse_dockerfile("FROM a \\\n")


def test_every_from_is_the_official_ray_image_of_the_installed_ray_with_python_311():
    assert SpecifierSet(PROJECT["requires-python"]).contains("3.11")
    official = re.compile(rf"rayproject/ray:{re.escape(RAY_VERSION)}-py311(-gpu)?")
    for stage in _stages():
        earlier = {s.name for s in _stages()[: _stages().index(stage)]}
        assert stage.base in earlier or official.fullmatch(stage.base), f"FROM {stage.base}"
    for target, gpu in TARGETS.items():
        assert official.fullmatch(_stage(target).root).group(1) == ("-gpu" if gpu else None), target


def _torch_installs(target: str) -> list[PipCall]:
    return [c for c in pip_calls(_stage(target)) if c.verb == "install" and "torch" in c.requirements]


def test_image_installs_torch_versions_pyproject_accepts_from_the_right_index():
    deps = _dependencies()
    pins = {}
    for target, gpu in TARGETS.items():
        assert _torch_installs(target), f"{target}: installs no torch"
        first = _torch_installs(target)[0]
        assert {"torch", "torchvision"} <= set(first.requirements), (
            f"{target}: torch and torchvision together"
        )
        index = first.options.get("--index-url") or first.options.get("-i", "")
        expected = (
            r"https://download\.pytorch\.org/whl/cu\d+" if gpu else r"https://download\.pytorch\.org/whl/cpu"
        )
        assert re.fullmatch(expected, index), f"{target}: torch from {index!r}"
        for name in ("torch", "torchvision"):
            (spec,) = first.requirements[name].specifier
            assert spec.operator == "==", f"{target}: {name} must be pinned"
            assert Version(spec.version) in deps[name].specifier, (
                f"{target}: {name} {spec.version} vs pyproject"
            )
        pins[target] = {n: str(first.requirements[n].specifier) for n in ("torch", "torchvision")}
    assert pins["cpu"] == pins["cuda"], f"the targets install different versions: {pins}"


def _copies(stage: Stage) -> dict[str, tuple[str | None, list[str]]]:
    """{destination: (--from stage or None, sources)} of a stage's COPY instructions."""
    copies = {}
    for ins in stage.instructions:
        if ins.keyword == "COPY":
            words = ins.args.split()
            flags = dict(w[2:].partition("=")[::2] for w in words if w.startswith("--"))
            paths = [w for w in words if not w.startswith("--")]
            copies[paths[-1].rstrip("/")] = (flags.get("from"), paths[:-1])
    return copies


def _project_wheel_dirs() -> dict[str, str]:
    """{stage name: wheel dir} of stages that build this project's wheel from the whole context."""
    built = {}
    for stage in _stages():
        for call in pip_calls(stage):
            if call.verb == "wheel" and "--no-deps" in call.options:
                copied = _copies(stage)
                assert all(copied.get(p) == (None, ["."]) for p in call.paths), (
                    f"line {call.line}: {call.paths}"
                )
                built[stage.name] = call.options.get("--wheel-dir") or call.options["-w"]
    return built


def _installs_the_project(stage: Stage, call: PipCall, path: str) -> bool:
    """`path` is this project: its wheel from a wheel stage (bind mount or COPY --from), or a COPY of `.`."""
    wheels, copies = _project_wheel_dirs(), _copies(stage)
    if copies.get(path.rstrip("/")) == (None, ["."]):
        return True
    folder, _, name = path.rpartition("/")
    if not re.fullmatch(rf"{re.escape(PROJECT['name'])}-(\*|[\w.]+-\S+)\.whl", name):
        return False
    mount = call.mounts.get(folder)
    if mount and mount.get("type") == "bind":
        return wheels.get(mount.get("from")) == mount.get("source", "/")
    source, files = copies.get(folder, (None, []))
    return source in wheels and files == [wheels[source]]


def test_image_installs_exactly_the_project_and_its_dependencies():
    """Each target installs the project's wheel (so every dependency of pyproject.toml, as written);
    anything it names beside the wheel is one of those dependencies, pinned within pyproject's range."""
    deps = _dependencies()
    for target in TARGETS:
        stage = _stage(target)
        calls = [c for c in pip_calls(stage) if c.verb == "install"]
        project_installs, pins = [], {}
        for i, call in enumerate(calls):
            assert not call.options.keys() & {"-e", "--editable", "-r", "--requirement", "--no-deps"}, (
                f"{target}: line {call.line}"
            )
            for path in call.paths:
                assert _installs_the_project(stage, call, path), (
                    f"{target}: installs {path}, not this project"
                )
                project_installs.append(i)
            for name, req in call.requirements.items():
                assert name in deps, f"{target}: installs {name}, not a dependency of pyproject.toml"
                assert not req.extras - deps[name].extras, f"{target}: {req}"
                (spec,) = req.specifier
                assert spec.operator == "==" and Version(spec.version) in deps[name].specifier, (
                    f"{target}: {req}"
                )
                pins.setdefault(name, set()).add(spec.version)
        assert all(len(v) == 1 for v in pins.values()), f"{target}: one version per package: {pins}"
        assert len(project_installs) == 1, f"{target}: installs the project {len(project_installs)} times"
        (at,) = project_installs
        ray_pin = calls[at].requirements.get("ray")
        assert ray_pin and str(ray_pin.specifier) == f"=={RAY_VERSION}", f"{target}: keep the image's ray"
        assert calls.index(_torch_installs(target)[0]) <= at, f"{target}: torch must come before the project"


def test_image_has_configs_where_cluster_files_look_for_them():
    app = _image_app_dir()
    assert app.startswith("/home/ray/"), "the Ray images run as the user ray"
    for target in TARGETS:
        copies = [i.args.split() for i in _stage(target).instructions if i.keyword == "COPY"]
        assert any(c[-2:] == ["configs", f"{app}/configs"] for c in copies), (
            f"{target}: configs/ not in {app}"
        )


def test_image_checks_name_modules_of_this_repo():
    """The imports of the Dockerfile's `python -c` smoke checks exist (python -m: see below)."""
    sources = _python_c_sources()
    assert sources
    imported = set()
    for source in sources:
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Import):
                imported |= {(a.name, None) for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                imported |= {(node.module, a.name) for a in node.names}
    ours = {(m, n) for m, n in imported if (ROOT / m.split(".")[0]).is_dir()}
    assert ("serve.app", "build_app") in ours
    for module, name in sorted(ours, key=str):
        spec = importlib.util.find_spec(module)
        assert spec is not None and spec.origin, f"import {module}: no such module"
        if name:
            tree = ast.parse(Path(spec.origin).read_text())
            assert name in {getattr(n, "name", None) for n in tree.body}, f"{module} defines no {name}"


def _dockerignore_patterns() -> list[str]:
    lines = [line.strip() for line in DOCKERIGNORE.read_text().splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def _glob_regex(pattern: str) -> re.Pattern[str]:
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        else:
            char = pattern[i]
            out += {"*": "[^/]*", "?": "[^/]"}.get(char, re.escape(char))
            i += 1
    return re.compile(out)


def dockerignore_excludes(patterns: list[str], path: str) -> bool:
    """Docker's rule: the last matching pattern wins; a pattern that matches a folder covers its files."""
    parts = path.split("/")
    prefixes = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    excluded = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        regex = _glob_regex(pattern.lstrip("!").strip("/"))
        if any(regex.fullmatch(p) for p in prefixes):
            excluded = not negated
    return excluded


def test_dockerignore_keeps_the_sources_and_drops_local_state():
    patterns = _dockerignore_patterns()
    keep = ["pyproject.toml", PROJECT["readme"], "configs/msrvtt.yaml", "configs/serve.yaml"]
    tool = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    for include in tool["packages"]["find"]["include"]:
        keep += [_rel(p) for p in ROOT.glob(include.rstrip("*") + "*/__init__.py")]
    for package, globs in tool["package-data"].items():
        keep += [_rel(p) for g in globs for p in (ROOT / package).glob(g)]
    assert "serve/static/index.html" in keep and "adaclip/__init__.py" in keep
    for path in keep:
        assert not dockerignore_excludes(patterns, path), f".dockerignore drops {path}, which the build needs"
    drop = [".git/HEAD", ".venv/bin/python", "data/msrvtt/x.mp4", "runs/msrvtt/last/model.pt",
            "serve/__pycache__/app.cpython-311.pyc", ".pytest_cache/v", ".ruff_cache/v", "adaclip.egg-info/PKG-INFO"]  # fmt: skip
    for line in (ROOT / ".gitignore").read_text().splitlines():  # what git ignores at the top level
        if line.strip() and not line.startswith("#"):
            name = line.strip().strip("/").replace("*", "x")
            drop.append(name + "/f" if line.strip().endswith("/") else name)
    for path in drop:
        assert dockerignore_excludes(patterns, path), f".dockerignore keeps {path} in the build context"


# ---- images of the cluster files -------------------------------------------------------------


def image_target(image: str) -> str:
    """The Dockerfile target of an image name <registry>/<project>:<project version>-<target>."""
    repository, _, tag = image.rpartition(":")
    assert repository.endswith("/" + PROJECT["name"]), f"{image}: not this project's image"
    assert tag.startswith(PROJECT["version"] + "-"), f"{image}: tag is not {PROJECT['version']}-<target>"
    target = tag[len(PROJECT["version"]) + 1 :]
    assert target in TARGETS and target in {s.name for s in _stages()}, f"{image}: no such target"
    return target


def _launcher_images(config: dict[str, Any]) -> dict[str, str]:
    """{node type: the image its container runs}, as the launcher picks it."""
    docker = config["docker"]
    images = {}
    for name, node_type in config["available_node_types"].items():
        if name == config["head_node_type"]:
            images[name] = docker.get("head_image", docker["image"])
        else:
            own = node_type.get("docker", {})
            images[name] = own.get("worker_image", docker.get("worker_image", docker["image"]))
    return images


def _all_images() -> list[tuple[str, str]]:
    found = [(f"{where}: {c['name']}", c["image"]) for where, s in _cluster_specs() for c in _containers(s)]
    for path in _launcher_configs():
        found += [(f"{_rel(path)}: {t}", i) for t, i in _launcher_images(_docs(path)[0]).items()]
    return found


def test_every_image_is_a_dockerfile_target_of_one_repository():
    images = _all_images()
    assert images
    repositories = {image.rpartition(":")[0] for _, image in images}
    assert len(repositories) == 1, f"several image repositories: {repositories}"
    (repository,) = repositories
    named = set()
    for path in TEXTS:  # build commands and comments name the same images
        named |= set(re.findall(rf"{re.escape(repository)}:[\w.-]*\w", path.read_text()))
    for image in named:
        image_target(image)
    readme = (CLUSTER / "README.md").read_text()
    for target in TARGETS:
        image = f"{repository}:{PROJECT['version']}-{target}"
        assert re.search(rf"docker build --target {target} +-t {re.escape(image)} +\.", readme), target
        assert f"docker push {image}" in readme, target


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


def test_launcher_configs_cover_aws_and_gcp():
    assert {_docs(p)[0]["provider"]["type"] for p in _launcher_configs()} == {"aws", "gcp"}


@pytest.mark.parametrize("path", _launcher_configs(), ids=_rel)
def test_launcher_config_validates_against_rays_schema(path):
    config = _docs(path)[0]
    check_launcher_config(config)
    types = config["available_node_types"]
    assert types[config["head_node_type"]]["resources"] == {"CPU": 0}, "the head must run no tasks"
    assert any(t["resources"].get("GPU", 0) >= 1 for t in types.values()), "no GPU worker type"
    assert any(t["resources"].get("CPU", 0) >= 1 and not t["resources"].get("GPU") for t in types.values())
    assert all(t.get("min_workers", 0) == 0 for t in types.values()), "workers scale from zero"
    assert config["idle_timeout_minutes"] > 0
    for name, image in _launcher_images(config).items():
        assert TARGETS[image_target(image)] == bool(types[name]["resources"].get("GPU")), f"{name}: {image}"
    assert not config["file_mounts"], "the image has the project; nothing to copy"
    assert any(SHARED in opt for opt in config["docker"]["run_options"]), "shared storage not in container"
    assert any(f" {SHARED}" in c and "mount -t nfs" in c for c in config["initialization_commands"])


@pytest.mark.parametrize("path", _launcher_configs(), ids=_rel)
def test_launcher_schema_check_rejects_a_broken_config(path):
    config = _docs(path)[0]
    typo = copy.deepcopy(config)
    typo["idle_timeout_minute"] = 5
    with pytest.raises(jsonschema.ValidationError):
        check_launcher_config(typo)
    fractional = copy.deepcopy(config)
    fractional["available_node_types"]["gpu_worker"]["resources"]["GPU"] = 0.5
    with pytest.raises(jsonschema.ValidationError):
        check_launcher_config(fractional)


def test_gcp_and_aws_define_the_same_cluster():
    aws, gcp = _docs(CLUSTER / "aws.yaml")[0], _docs(CLUSTER / "gcp.yaml")[0]
    same = ["max_workers", "idle_timeout_minutes", "head_node_type", "docker", "file_mounts", "setup_commands",
            "head_setup_commands", "worker_setup_commands", "head_start_ray_commands", "worker_start_ray_commands"]  # fmt: skip
    for key in same:
        assert aws[key] == gcp[key], key
    assert aws["available_node_types"].keys() == gcp["available_node_types"].keys()
    for name, a in aws["available_node_types"].items():
        g = gcp["available_node_types"][name]
        for key in ("resources", "min_workers", "max_workers", "docker"):
            assert a.get(key) == g.get(key), f"{name}: {key}"


def test_gcp_node_configs_are_consistent():
    config = _docs(CLUSTER / "gcp.yaml")[0]
    provider = config["provider"]
    zone, project = provider["availability_zone"], provider["project_id"]
    assert zone.startswith(provider["region"] + "-") and "," not in zone, "GCP takes one zone"
    for name, node_type in config["available_node_types"].items():
        node = node_type["node_config"]
        (disk,) = node["disks"]
        assert disk["boot"] and disk["initializeParams"]["sourceImage"].startswith("projects/")
        assert disk["initializeParams"]["diskType"].startswith(f"zones/{zone}/diskTypes/"), name
        gpus = node_type["resources"].get("GPU", 0)
        assert sum(a["acceleratorCount"] for a in node.get("guestAccelerators", [])) == gpus, name
        if gpus:  # GPU VMs cannot live-migrate; the image needs the driver the boot image installs
            assert node["scheduling"]["onHostMaintenance"] == "TERMINATE", name
            assert {"key": "install-nvidia-driver", "value": "True"} in node["metadata"]["items"], name
        if name != config["head_node_type"]:  # the head gets Ray's service account from `ray up`
            (account,) = node["serviceAccounts"]
            assert account["email"].endswith(f"@{project}.iam.gserviceaccount.com"), name


# ---- KubeRay ---------------------------------------------------------------------------------


def _pod_specs(spec: dict[str, Any]) -> list[dict[str, Any]]:
    groups = [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
    return [g["template"]["spec"] for g in groups]


def _containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for pod in _pod_specs(spec) for c in pod["containers"]]


def _gpus(container: dict[str, Any]) -> int:
    return int(container["resources"]["limits"].get("nvidia.com/gpu", 0))


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
            gpu_groups += _gpus(container) > 0
        assert 0 < gpu_groups < len(spec["workerGroupSpecs"]), f"{where}: needs CPU and GPU groups"


def test_cpu_pods_run_the_cpu_image_and_gpu_pods_the_cuda_image():
    for where, spec in _cluster_specs():
        for container in _containers(spec):
            target = image_target(container["image"])
            assert TARGETS[target] == (_gpus(container) > 0), f"{where}: {container['name']} runs {target}"


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


def test_every_pod_mounts_dev_shm_from_a_memory_emptydir():
    """Ray's object store lives in /dev/shm; a container's default is 64 MiB."""
    for where, spec in _cluster_specs():
        for pod in _pod_specs(spec):
            volumes = {v["name"]: v for v in pod["volumes"]}
            for container in pod["containers"]:
                mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
                assert "/dev/shm" in mounts, f"{where}: {container['name']} has no /dev/shm volume"
                assert volumes[mounts["/dev/shm"]].get("emptyDir", {}).get("medium") == "Memory", where


def test_rayservice_pods_get_qdrant_credentials_from_a_secret():
    spec = _manifest(KUBERAY / "rayservice.yaml", "RayService")["spec"]["rayClusterConfig"]
    for pod in _pod_specs(spec):
        for container in pod["containers"]:
            env = {e["name"]: e["valueFrom"]["secretKeyRef"]["name"] for e in container["env"]}
            assert env.keys() >= {"QDRANT_URL", "QDRANT_API_KEY"}
            assert len(set(env.values())) == 1


# ---- nothing is installed at start -----------------------------------------------------------

INSTALLERS = re.compile(r"\b(?:pip3?|uv pip|conda|mamba) +install\b")
RUNTIME_ENV_INSTALLS = {"pip", "uv", "conda", "working_dir", "py_modules", "py_executable"}


def _walk(node: Any, where: str):
    """(where, key, value) of every mapping entry and list item, embedded YAML mappings
    (serveConfigV2, runtimeEnvYAML) walked too."""
    if isinstance(node, dict):
        items = node.items()
    elif isinstance(node, list):
        items = enumerate(node)
    else:
        items = []
    for key, value in items:
        yield where, key, value
        if isinstance(value, str) and "\n" in value:
            try:
                value = yaml.safe_load(value)
            except yaml.YAMLError:
                continue
        yield from _walk(value, f"{where}.{key}")


def start_installs(docs: Any, where: str) -> list[str]:
    """What a definition installs when a node or pod starts: pip/conda commands, runtime_env
    pip/conda/uv and code shipped with working_dir or py_modules."""
    found = []
    for at, key, value in _walk(docs, where):
        if isinstance(value, str) and INSTALLERS.search(value):
            found.append(f"{at}.{key}: {value}")
        if key in ("runtime_env", "runtimeEnvYAML"):
            env = yaml.safe_load(value) if isinstance(value, str) else value
            found += [f"{at}.{key}.{k}" for k in sorted(set(env or {}) & RUNTIME_ENV_INSTALLS)]
    return found


@pytest.mark.parametrize("path", YAMLS, ids=_rel)
def test_nothing_is_installed_when_a_node_or_pod_starts(path):
    """The image has the project and its dependencies: no runtime_env pip, working_dir or setup pip."""
    assert start_installs(_docs(path), _rel(path)) == []


def test_start_install_check_catches_the_old_designs():
    job = copy.deepcopy(_manifest(KUBERAY / "rayjob-train.yaml", "RayJob"))
    job["spec"]["runtimeEnvYAML"] = "working_dir: https://x/main.zip\npip:\n  - torch\n"
    assert start_installs(job, "job") == [
        "job.spec.runtimeEnvYAML.pip",
        "job.spec.runtimeEnvYAML.working_dir",
    ]
    service = copy.deepcopy(_manifest(KUBERAY / "rayservice.yaml", "RayService"))
    config = yaml.safe_load(service["spec"]["serveConfigV2"])
    _app(config)["runtime_env"] = {"pip": ["torch"], "env_vars": {"A": "1"}}
    service["spec"]["serveConfigV2"] = yaml.safe_dump(config)
    assert len(start_installs(service, "service")) == 1
    launcher = copy.deepcopy(_docs(CLUSTER / "aws.yaml")[0])
    launcher["setup_commands"] = ["pip install -q -e ~/adaclip"]
    assert start_installs(launcher, "aws") == ["aws.setup_commands.0: pip install -q -e ~/adaclip"]
    assert not INSTALLERS.search("sudo apt-get install -y nfs-common")


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
    assert Path(args["config"]).is_absolute(), "the app has no working_dir: name the config in the image"
    cfg = load_config(_repo_path(args["config"]), args["overrides"])
    assert cfg.index.backend == "server", "several ingress replicas (each holds the index) need a server"
    assert deployments["SearchAPI"]["num_replicas"] > 1
    scaling = deployments["VideoEncoder"]["autoscaling_config"]
    assert 1 <= scaling["min_replicas"] < scaling["max_replicas"]
    gpus = deployments["VideoEncoder"]["ray_actor_options"]["num_gpus"]
    assert gpus == 1, "an autoscaling cluster must ask for the encoder's GPU explicitly"
    for key in ("staging_dir", "checkpoint"):
        assert args[key].startswith(SHARED + "/"), f"{key} must be on the shared volume"
    assert all(root.startswith(SHARED + "/") for root in args["ingest_roots"])


# ---- commands named anywhere in cluster/ and the Dockerfile ----------------------------------


def _main_guarded(source: str) -> bool:
    tree = ast.parse(source)
    has_main = any(isinstance(n, ast.FunctionDef) and n.name == "main" for n in tree.body)
    guard = any(isinstance(n, ast.If) and "__main__" in ast.unparse(n.test) for n in tree.body)
    return has_main and guard


def test_python_m_entrypoints_are_runnable_modules_of_this_repo():
    found = {}
    for path in TEXTS:
        for module in re.findall(r"python -m ([A-Za-z_][\w.]*)", path.read_text()):
            found.setdefault(module, set()).add(path.name)
    assert {"ray_jobs.train", "ray_jobs.ingest"} <= {m for m, where in found.items() if "Dockerfile" in where}
    for module in sorted(found):
        assert (ROOT / module.split(".")[0]).is_dir(), f"{module} is not a package of this repository"
        spec = importlib.util.find_spec(module)
        assert spec is not None and spec.origin, f"python -m {module}: no such module"
        source = Path(spec.origin).read_text()
        assert _main_guarded(source), f"{module} lacks main() or an `if __name__ == '__main__'` guard"


def test_import_paths_name_callables_of_this_repo():
    found = {m for p in TEXTS for m in re.findall(r"import_path: ([\w.]+:\w+)", p.read_text())}
    assert "serve.app:build_app" in found
    for import_path in sorted(found):
        module, name = import_path.split(":")
        if not (ROOT / module.split(".")[0]).is_dir():
            continue
        spec = importlib.util.find_spec(module)
        assert spec is not None and spec.origin, f"{import_path}: no such module"
        functions = {
            n.name for n in ast.parse(Path(spec.origin).read_text()).body if isinstance(n, ast.FunctionDef)
        }
        assert name in functions, f"{import_path}: {module} defines no function {name}"


def test_config_files_and_cluster_files_named_exist():
    configs, files = set(), set()
    for path in TEXTS:
        text = path.read_text()
        configs |= set(re.findall(r"--config[ =]+['\"]?((?:/[\w.-]+)*/?configs/[\w./-]+\.yaml)", text))
        configs |= set(re.findall(r"config: ((?:/[\w.-]+)*/?configs/[\w./-]+\.yaml)", text))
        files |= set(re.findall(r"\bcluster/[\w./-]+\.(?:yaml|md)", text))
    assert f"{_image_app_dir()}/configs/msrvtt.yaml" in configs
    for name in sorted(configs):
        assert _repo_path(name).is_file(), f"{name} is named in cluster/ but configs/ has no such file"
    for name in sorted(files):
        assert (ROOT / name).is_file(), f"{name} is named in cluster/ but does not exist"


def test_rayjob_entrypoint_validates_and_writes_to_shared_storage():
    entrypoint = _manifest(KUBERAY / "rayjob-train.yaml", "RayJob")["spec"]["entrypoint"]
    argv = shlex.split(entrypoint)
    assert argv[:3] == ["python", "-m", "ray_jobs.train"] and "&&" not in argv
    config = argv[argv.index("--config") + 1]
    assert Path(config).is_absolute(), "the job has no working_dir: name the config in the image"
    overrides = [a for a in argv[3:] if "=" in a and not a.startswith("-")]
    cfg = load_config(_repo_path(config), overrides)  # a mistyped key fails here
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
