"""Static checks of the deployment files: compose, the GPU override, the Dockerfile, .env.example.

Parses the files with PyYAML, tomllib and regular expressions; needs no Docker engine. Compares
them with what they depend on: pyproject's scripts and extras, app.settings.Settings, the tree.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from app.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
GPU_OVERRIDE = ROOT / "docker-compose.gpu.yml"
DOCKERFILE = ROOT / "docker" / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
ENV_EXAMPLE = ROOT / ".env.example"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PROJECT_SCRIPTS = set(PYPROJECT["project"]["scripts"])
OUR_IMAGE_SERVICES = ("api", "migrate", "train")
VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)([^}]*)\}")


def load_yaml(path: Path) -> dict[str, Any]:
    document = yaml.safe_load(path.read_text())
    assert isinstance(document, dict), f"{path.name} is not a mapping"
    return document


def services(path: Path = COMPOSE) -> dict[str, dict[str, Any]]:
    found = load_yaml(path)["services"]
    assert isinstance(found, dict)
    return found


def environment(service: dict[str, Any]) -> dict[str, Any]:
    """A service's environment as a mapping (compose allows a list of NAME=value too)."""
    declared = service.get("environment") or {}
    if isinstance(declared, list):
        return dict(item.split("=", 1) if "=" in item else (item, None) for item in declared)
    assert isinstance(declared, dict)
    return declared


def as_argv(value: str | list[str] | None) -> list[str]:
    if value is None:
        return []
    return shlex.split(value) if isinstance(value, str) else [str(part) for part in value]


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs with continuation lines joined and comments dropped."""
    joined: list[str] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        joined.append(pending + line)
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"
    pairs = []
    for line in joined:
        instruction, _, arguments = line.partition(" ")
        pairs.append((instruction.upper(), arguments.strip()))
    return pairs


def dockerfile_stages() -> dict[str, list[tuple[str, str]]]:
    """Each named stage's instructions, FROM included."""
    stages: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    for instruction, arguments in dockerfile_instructions():
        if instruction == "FROM":
            match = re.fullmatch(r"(?:--\S+\s+)*(\S+)(?:\s+AS\s+(\S+))?", arguments, re.IGNORECASE)
            assert match and match.group(2), f"unnamed stage: FROM {arguments}"
            current = stages.setdefault(match.group(2), [])
        if current is not None:
            current.append((instruction, arguments))
    return stages


def exec_form(arguments: str) -> list[str]:
    parsed = json.loads(arguments)
    assert isinstance(parsed, list), f"not exec form: {arguments}"
    return [str(part) for part in parsed]


def test_compose_files_parse_and_name_the_services() -> None:
    assert set(services()) == {"api", "postgres", "redis", "migrate", "train"}
    assert set(services(GPU_OVERRIDE)) == {"api"}


def test_every_long_running_service_has_a_healthcheck() -> None:
    long_running = {
        name
        for name, service in services().items()
        if "profiles" not in service and service.get("restart") != "no"
    }
    assert long_running == {"api", "postgres", "redis"}
    for name in long_running:
        check = services()[name].get("healthcheck")
        assert check and check.get("test"), f"{name} has no healthcheck"
        assert not check.get("disable", False)


def test_postgres_and_redis_publish_no_ports() -> None:
    for name in ("postgres", "redis"):
        assert "ports" not in services()[name], f"{name} must stay on the compose network"
    assert services()["api"]["ports"] == ["${API_PORT:-8000}:8000"]


def test_depends_on_waits_for_health_and_for_the_migration() -> None:
    allowed = {"service_healthy", "service_completed_successfully"}
    for name, service in services().items():
        for dependency, rule in (service.get("depends_on") or {}).items():
            assert isinstance(rule, dict), f"{name} -> {dependency}: use the long form"
            assert rule.get("condition") in allowed, f"{name} -> {dependency}: {rule}"
    api = services()["api"]["depends_on"]
    assert api["postgres"]["condition"] == "service_healthy"
    assert api["redis"]["condition"] == "service_healthy"
    assert api["migrate"]["condition"] == "service_completed_successfully"
    assert services()["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services()["migrate"]["command"] == ["tanp-serve", "migrate"]


def test_admin_token_comes_from_the_environment_with_no_default() -> None:
    for path in (COMPOSE, GPU_OVERRIDE):
        for name, modifier in VARIABLE.findall(path.read_text()):
            if name == "ADMIN_TOKEN":
                assert modifier == "" or modifier.startswith(":?"), f"{path.name}: {modifier}"
        for name, service in services(path).items():
            value = environment(service).get("ADMIN_TOKEN", "${ADMIN_TOKEN}")
            assert re.fullmatch(r"\$\{ADMIN_TOKEN(:\?[^}]*)?\}", str(value)), f"{name}: {value}"
    assert environment(services()["api"])["ADMIN_TOKEN"] == "${ADMIN_TOKEN}"
    assert "ADMIN_TOKEN" not in environment(services()["migrate"])


def settings_variables() -> set[str]:
    """The environment names Settings reads: a field's alias when it has one, else its name."""
    assert not Settings.model_config.get("env_prefix")
    names: set[str] = set()
    for field_name, field in Settings.model_fields.items():
        aliases = [
            alias for alias in (field.alias, field.validation_alias) if isinstance(alias, str)
        ]
        names.update(alias.upper() for alias in aliases or [field_name])
    return names


def test_every_service_variable_is_a_settings_field() -> None:
    known = settings_variables()
    for name in ("api", "migrate"):
        unknown = set(environment(services()[name])) - known
        assert not unknown, f"{name} sets variables Settings does not read: {sorted(unknown)}"
    unknown = set(environment(services(GPU_OVERRIDE)["api"])) - known
    assert not unknown, f"the GPU override sets unknown variables: {sorted(unknown)}"
    api = environment(services()["api"])
    assert api["DATABASE_URL"] == "postgresql+psycopg://tanp:tanp@postgres:5432/tanp"
    assert api["REDIS_URL"] == "redis://redis:6379/0"
    assert api["MODELS_DIR"] == "/models"


def test_commands_name_a_console_script_or_python() -> None:
    allowed = PROJECT_SCRIPTS | {"python"}
    assert {"tanp-train", "tanp-serve"} <= PROJECT_SCRIPTS
    for name in OUR_IMAGE_SERVICES:
        service = services()[name]
        argv = as_argv(service.get("entrypoint")) + as_argv(service.get("command"))
        if argv:
            assert argv[0] in allowed, f"{name} runs {argv[0]}"
    train = as_argv(services()["train"]["entrypoint"]) + as_argv(services()["train"]["command"])
    assert train[:2] == ["tanp-train", "train"]
    assert train[train.index("--data") + 1] == "/data"
    assert train[train.index("--out") + 1].startswith("/models/")
    for stage, instructions in dockerfile_stages().items():
        for instruction, arguments in instructions:
            if instruction in ("CMD", "ENTRYPOINT") and stage != "trainer":
                assert exec_form(arguments)[0] in allowed, f"{stage}: {arguments}"
    trainer = dict(dockerfile_stages()["trainer"])
    assert exec_form(trainer["ENTRYPOINT"]) == ["tanp-train"]


def test_compose_builds_only_existing_dockerfile_targets() -> None:
    stages = dockerfile_stages()
    for path in (COMPOSE, GPU_OVERRIDE):
        for name, service in services(path).items():
            build = service.get("build")
            if build is None:
                continue
            assert (ROOT / build["context"] / build["dockerfile"]) == DOCKERFILE
            assert build["target"] in stages, f"{path.name}:{name} targets {build['target']}"
    assert services()["api"]["build"]["target"] == "runtime"
    assert services()["migrate"]["image"] == services()["api"]["image"]
    assert services()["train"]["build"]["target"] == "trainer"
    assert services()["train"]["profiles"] == ["train"]


def copy_sources() -> list[str]:
    sources = []
    for instruction, arguments in dockerfile_instructions():
        if instruction != "COPY" or "--from=" in arguments:
            continue
        parts = [part for part in arguments.split() if not part.startswith("--")]
        sources.extend(parts[:-1])
    return sources


def ignored_patterns() -> list[str]:
    lines = [line.strip() for line in DOCKERIGNORE.read_text().splitlines()]
    return [line for line in lines if line and not line.startswith(("#", "!"))]


@pytest.mark.parametrize("source", sorted(set(copy_sources())))
def test_dockerfile_copy_sources_exist_and_are_not_ignored(source: str) -> None:
    path = source.rstrip("/")
    assert (ROOT / path).exists(), f"COPY {source}: no such path in the repository"
    for pattern in ignored_patterns():
        assert not fnmatch.fnmatch(path, pattern.rstrip("/")), f"{source} is in .dockerignore"


def test_dockerfile_extras_and_torch_pin_match_pyproject() -> None:
    text = DOCKERFILE.read_text()
    extras = {name for group in re.findall(r"\.\[([\w,-]+)\]", text) for name in group.split(",")}
    assert extras == {"serve", "train"}
    assert extras <= set(PYPROJECT["project"]["optional-dependencies"])
    pins = [dep for dep in PYPROJECT["project"]["dependencies"] if dep.startswith("torch")]
    assert pins == ["torch==2.13.0"]
    assert set(re.findall(r"torch==[\w.+]+", text)) == set(pins)
    assert "--index-url https://download.pytorch.org/whl/cpu" in text


def test_api_images_run_as_a_user_expose_8000_and_check_livez() -> None:
    for stage in ("runtime", "gpu"):
        instructions = dict(dockerfile_stages()[stage])
        assert instructions["USER"] == "tanp"
        assert instructions["EXPOSE"] == "8000"
        assert "http://127.0.0.1:8000/livez" in instructions["HEALTHCHECK"]
        assert exec_form(instructions["CMD"]) == [
            *("tanp-serve", "--host", "0.0.0.0", "--port", "8000")
        ]
    assert dict(dockerfile_stages()["trainer"])["USER"] == "tanp"
    assert dockerfile_stages()["gpu-base"][0][1].split()[0] == "${CUDA_IMAGE}"
    assert "ARG CUDA_IMAGE=nvidia/cuda:" in DOCKERFILE.read_text()


def test_models_are_read_only_for_the_api_and_writable_for_training() -> None:
    assert "models:/models:ro" in services()["api"]["volumes"]
    train_volumes = services()["train"]["volumes"]
    assert "models:/models" in train_volumes
    assert "${TANP_DATA_HOST_DIR:-./data/lastfm}:/data:ro" in train_volumes
    assert set(load_yaml(COMPOSE)["volumes"]) == {"models", "pgdata"}


def test_gpu_override_reserves_one_nvidia_device() -> None:
    api = services(GPU_OVERRIDE)["api"]
    devices = api["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert api["build"]["target"] == "gpu"
    assert environment(api)["DEVICE"] == "cuda"
    assert api["image"] != services()["api"]["image"]


def test_env_example_documents_every_variable_once_with_a_comment() -> None:
    lines = ENV_EXAMPLE.read_text().splitlines()
    documented: dict[str, int] = {}
    for number, line in enumerate(lines):
        match = re.fullmatch(r"#?([A-Z][A-Z0-9_]*)=.*", line)
        if match:
            assert match.group(1) not in documented, f"{match.group(1)} twice"
            documented[match.group(1)] = number
            previous = lines[number - 1] if number else ""
            assert previous.startswith("# "), f"{match.group(1)} has no comment line"
    used = {
        name for path in (COMPOSE, GPU_OVERRIDE) for name, _ in VARIABLE.findall(path.read_text())
    }
    missing = (used | settings_variables()) - set(documented)
    assert not missing, f".env.example does not document {sorted(missing)}"
