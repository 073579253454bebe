"""Static checks of the deployment files: compose, the GPU and replicas overrides, HAProxy's
configuration, the Dockerfile, the image lock files, .env.example.

Parses the files with PyYAML, tomllib and regular expressions; needs no Docker engine (the compose
client, when installed, checks that compose refuses to start without its secrets). Compares them
with what they depend on: pyproject's scripts and dependencies, app.settings.Settings, the tree.
`make compose-smoke` and `make replicas-smoke` run them for real; tests/test_deploy_k8s.py
checks the Kubernetes manifests.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from app.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
GPU_OVERRIDE = ROOT / "docker-compose.gpu.yml"
REPLICAS_OVERRIDE = ROOT / "docker-compose.replicas.yml"
COMPOSE_FILES = (COMPOSE, GPU_OVERRIDE, REPLICAS_OVERRIDE)
HAPROXY_CFG = ROOT / "docker" / "haproxy" / "haproxy.cfg"
DOCKERFILE = ROOT / "docker" / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
ENV_EXAMPLE = ROOT / ".env.example"
LOCKS = ROOT / "docker" / "requirements"
TORCH_BUILDS = ("cpu", "cu13")
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PROJECT_SCRIPTS = set(PYPROJECT["project"]["scripts"])
OUR_IMAGE_SERVICES = ("api", "migrate", "train")
SECRETS = ("ADMIN_TOKEN", "POSTGRES_PASSWORD", "REDIS_PASSWORD")
VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)([^}]*)\}")
REQUIRED = r"\$\{%s:\?[^}]+\}"


class Reset(list[Any]):
    """A value compose's `!reset` tag replaces the base file's with (an override file's)."""


class ComposeLoader(yaml.SafeLoader):
    """PyYAML's safe loader plus compose's `!reset` tag."""


ComposeLoader.add_constructor("!reset", lambda loader, node: Reset(loader.construct_sequence(node)))


def load_yaml(path: Path) -> dict[str, Any]:
    document = yaml.load(path.read_text(), Loader=ComposeLoader)  # a SafeLoader
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
    assert set(services(GPU_OVERRIDE)) == {"api", "migrate"}
    assert set(services(REPLICAS_OVERRIDE)) == {"api", "proxy"}


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
    assert services()["api"]["ports"] == ["${API_BIND:-127.0.0.1}:${API_PORT:-8000}:8000"]


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


def test_secrets_come_from_the_environment_required_and_with_no_default() -> None:
    for path in COMPOSE_FILES:
        for name, modifier in VARIABLE.findall(path.read_text()):
            if name in SECRETS:
                assert modifier.startswith(":?"), f"{path.name}: ${{{name}{modifier}}}"
    api, migrate = environment(services()["api"]), environment(services()["migrate"])
    assert re.fullmatch(REQUIRED % "ADMIN_TOKEN", api["ADMIN_TOKEN"])
    assert "ADMIN_TOKEN" not in migrate
    postgres = environment(services()["postgres"])
    assert re.fullmatch(REQUIRED % "POSTGRES_PASSWORD", postgres["POSTGRES_PASSWORD"])
    url = re.compile(
        r"postgresql\+psycopg://tanp:%s@postgres:5432/tanp" % (REQUIRED % "POSTGRES_PASSWORD")
    )
    assert url.fullmatch(api["DATABASE_URL"]) and migrate["DATABASE_URL"] == api["DATABASE_URL"]
    # issue 21 item 8: Redis asks for a password, the api's URL carries it, so does redis-cli
    redis_url = re.compile(r"redis://default:%s@redis:6379/0" % (REQUIRED % "REDIS_PASSWORD"))
    assert redis_url.fullmatch(api["REDIS_URL"])
    redis_argv = as_argv(services()["redis"]["command"])
    password = redis_argv[redis_argv.index("--requirepass") + 1]
    assert re.fullmatch(REQUIRED % "REDIS_PASSWORD", password)
    assert environment(services()["redis"])["REDISCLI_AUTH"] == password


def test_no_literal_secret_in_the_compose_files() -> None:
    for path in COMPOSE_FILES:
        for name, service in services(path).items():
            for key, value in environment(service).items():
                if re.search(r"PASSWORD|TOKEN|SECRET", key):
                    assert re.fullmatch(REQUIRED % key, str(value)), f"{name}.{key}: {value}"
                if "://" in str(value) and "@" in str(value):  # credentials in a URL
                    user_info = str(value).split("://", 1)[1].split("@", 1)[0]
                    assert re.fullmatch(r"\w+:" + REQUIRED % r"\w+", user_info), f"{name}.{key}"


def compose_client() -> str | None:
    found = Path(sys.executable).parent / "docker-compose"
    return str(found) if found.is_file() else shutil.which("docker-compose")


@pytest.mark.skipif(compose_client() is None, reason="no docker-compose client installed")
def test_compose_config_refuses_to_start_without_the_secrets(tmp_path: Path) -> None:
    """What `docker compose config` says with no .env (the client needs no engine for it)."""
    client = str(compose_client())
    base = {k: v for k, v in os.environ.items() if k not in SECRETS and not k.startswith("COMPOSE")}
    empty = tmp_path / "empty.env"
    empty.write_text("")
    for override in (None, GPU_OVERRIDE, REPLICAS_OVERRIDE):
        files = ["-f", str(COMPOSE), *(["-f", str(override)] if override else [])]
        command = [client, "--env-file", str(empty), *files, "config", "-q"]
        refused = subprocess.run(command, env=base, capture_output=True, text=True, check=False)
        assert refused.returncode != 0
        assert all(f"required variable {name} is missing" in refused.stderr for name in SECRETS)
        with_secrets = {**base, "ADMIN_TOKEN": "t", "POSTGRES_PASSWORD": "p", "REDIS_PASSWORD": "r"}
        accepted = subprocess.run(command, env=with_secrets, capture_output=True, text=True)
        assert accepted.returncode == 0, accepted.stderr


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


def test_every_settings_field_reaches_the_api_and_nothing_else_does() -> None:
    known = settings_variables()
    for name in ("api", "migrate"):
        unknown = set(environment(services()[name])) - known
        assert not unknown, f"{name} sets variables Settings does not read: {sorted(unknown)}"
    missing = known - set(environment(services()["api"]))
    assert not missing, f"settings that never reach the api container: {sorted(missing)}"
    toolkit = {"NVIDIA_DRIVER_CAPABILITIES", "NVIDIA_REQUIRE_CUDA"}  # read by the NVIDIA toolkit
    unknown = set(environment(services(GPU_OVERRIDE)["api"])) - known - toolkit
    assert not unknown, f"the GPU override sets unknown variables: {sorted(unknown)}"
    api = environment(services()["api"])
    assert api["REDIS_URL"].startswith("redis://default:") and api["REDIS_URL"].endswith(
        "@redis:6379/0"
    )
    assert api["API_DOCS"] == "${API_DOCS:-false}"
    assert services()["api"]["ports"] == ["${API_BIND:-127.0.0.1}:${API_PORT:-8000}:8000"]
    assert api["MODELS_DIR"] == "/models"
    assert "TANP_DATA_DIR" not in api  # the service never reads dataset files
    assert api["MIGRATE_ON_START"] == "false"
    assert api["DEVICE"] == "${DEVICE:-cpu}"


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
    # One place for the training options: compose's default of TRAIN_ARGS.
    assert [part for part in train if "TRAIN_ARGS" in part] == ["${TRAIN_ARGS:---split"]
    for stage, instructions in dockerfile_stages().items():
        for instruction, arguments in instructions:
            if instruction in ("CMD", "ENTRYPOINT") and stage != "trainer":
                assert exec_form(arguments)[0] in allowed, f"{stage}: {arguments}"
    trainer = dict(dockerfile_stages()["trainer"])
    assert exec_form(trainer["ENTRYPOINT"]) == ["tanp-train"]


def test_compose_builds_each_image_once_from_existing_dockerfile_targets() -> None:
    stages = dockerfile_stages()
    built = {}
    for name, service in services().items():
        build = service.get("build")
        if build is None:
            continue
        assert (ROOT / build["context"] / build["dockerfile"]) == DOCKERFILE
        assert build["target"] in stages, f"{name} targets {build['target']}"
        assert set(build["args"]) == {"PYTHON_IMAGE", "TORCH"} and build["args"]["TORCH"] == "cpu"
        assert service["image"] not in built, f"{name} and {built.get(service['image'])} both build"
        built[service["image"]] = name
    assert services()["api"]["build"]["target"] == "runtime"
    assert services()["train"]["build"]["target"] == "trainer"
    assert services()["train"]["profiles"] == ["train"]
    # migrate runs the api's image: built once (by api), never pulled
    migrate = services()["migrate"]
    assert "build" not in migrate and migrate["pull_policy"] == "never"
    assert migrate["image"] == services()["api"]["image"]


def copy_sources() -> list[str]:
    sources = []
    for instruction, arguments in dockerfile_instructions():
        if instruction != "COPY" or "--from=" in arguments:
            continue
        parts = [part for part in arguments.split() if not part.startswith("--")]
        for part in parts[:-1]:
            builds = TORCH_BUILDS if "${TORCH}" in part else ("",)
            sources.extend(part.replace("${TORCH}", build) for build in builds)
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


def lock(name: str) -> dict[str, str]:
    """A lock file's pins, name -> version; every pin exact and hashed (torch's CPU build by
    the local wheel's sha256, issue 21 item 10)."""
    pins: dict[str, str] = {}
    text = (LOCKS / name).read_text()
    for line in text.splitlines():
        match = re.match(r"([A-Za-z0-9][\w.-]*)==(\S+)", line)
        if match:
            pins[canonicalize_name(match.group(1))] = match.group(2)
        else:
            assert line.startswith(("#", "    --hash=sha256:", "--index-url ")), f"{name}: {line}"
    assert pins, f"{name} pins nothing"
    body = text.split("\n", 2)[2].removeprefix("--index-url https://download.pytorch.org/whl/cpu\n")
    for entry in re.split(r"\n(?=[A-Za-z0-9])", body):
        assert "--hash=sha256:" in entry, f"{name}: no hash for {entry.splitlines()[0]}"
    return pins


def test_lock_files_pin_what_pyproject_asks_for() -> None:
    """Each image's locks cover pyproject's dependencies with versions its specifiers accept; the
    images' `pip check` and scripts/lock_images.py check the rest (transitive completeness)."""
    project = PYPROJECT["project"]
    extras = project["optional-dependencies"]
    core = lock("core.txt")
    for build in TORCH_BUILDS:
        torch = lock(f"torch-{build}.txt")
        for extra, extra_lock in (("serve", "api.txt"), ("train", "train.txt")):
            pins = {**torch, **core, **lock(extra_lock)}
            for requirement in map(Requirement, [*project["dependencies"], *extras[extra]]):
                version = pins.get(canonicalize_name(requirement.name))
                assert version, f"{extra_lock} + torch-{build}: {requirement.name} not pinned"
                public = version.split("+", 1)[0]
                assert requirement.specifier.contains(public, prereleases=True), (
                    f"{requirement} but the {build} lock pins {version}"
                )
    assert lock("torch-cpu.txt") == {"torch": "2.13.0+cpu"}
    assert (
        "--index-url https://download.pytorch.org/whl/cpu\n"
        in (LOCKS / "torch-cpu.txt").read_text()
    )
    cuda = lock("torch-cu13.txt")
    assert cuda["torch"] == "2.13.0" and any(name.endswith("-cu13") for name in cuda)
    assert not set(core) & set(lock("api.txt")) and not set(core) & set(lock("train.txt"))
    assert "matplotlib" not in lock("api.txt"), "train extras do not belong in the API image"


def test_images_run_as_a_numeric_user_and_the_api_exposes_8000_and_checks_livez() -> None:
    runtime = dict(dockerfile_stages()["runtime"])
    assert runtime["EXPOSE"] == "8000"
    assert "http://127.0.0.1:8000/livez" in runtime["HEALTHCHECK"]
    assert exec_form(runtime["CMD"]) == ["tanp-serve", "--host", "0.0.0.0", "--port", "8000"]
    for stage in ("runtime", "trainer"):
        # numeric, so Kubernetes' runAsNonRoot can verify it; the models volume's owner
        assert dict(dockerfile_stages()[stage])["USER"] == "10001:10001"
    trainer = dict(dockerfile_stages()["trainer"])
    assert "MPLCONFIGDIR=/tmp/matplotlib" in trainer["ENV"] and "HOME=/home/tanp" in trainer["ENV"]


def test_dockerfile_has_no_cuda_stage_and_no_registry_frontend() -> None:
    text = DOCKERFILE.read_text()
    assert not re.search(r"^#\s*syntax\s*=", text, re.MULTILINE | re.IGNORECASE)
    assert "nvidia/cuda" not in text.lower()
    stages = dockerfile_stages()
    for stage, instructions in stages.items():
        image = instructions[0][1].split()[0]
        assert image == "${PYTHON_IMAGE}" or image in stages, f"{stage} is FROM {image}"
    assert "ARG PYTHON_IMAGE=python:3.11-slim" in text and "ARG TORCH=cpu" in text


def run_instructions(stage: str) -> list[str]:
    return [
        arguments for instruction, arguments in dockerfile_stages()[stage] if instruction == "RUN"
    ]


def test_dependency_layers_come_first_and_the_project_installs_last_without_deps() -> None:
    stages = dockerfile_stages()
    assert stages["torch"][0][1].split()[0] == "base"
    torch = run_instructions("torch")
    assert torch[0].startswith("pip install --no-deps -r /tmp/requirements/torch-${TORCH}.txt")
    assert torch[1].startswith("pip install --no-deps --no-compile -r /tmp/requirements/core.txt")
    for stage, extra_lock in (("runtime", "api.txt"), ("trainer", "train.txt")):
        assert stages[stage][0][1].split()[0] == "torch"
        runs = run_instructions(stage)
        assert runs[0] == f"pip install --no-deps -r /tmp/requirements/{extra_lock}"
        assert runs[-1].startswith("pip install --no-deps /tmp/wheels/*.whl")
        assert runs[-1].endswith("&& pip check")
        sources = [arguments for instruction, arguments in stages[stage] if instruction == "COPY"]
        assert sources[-1] == "--from=wheel /wheels/ /tmp/wheels/"
    # the source tree reaches the wheel stage only
    for stage, instructions in stages.items():
        if stage != "wheel":
            copied = [arguments for instruction, arguments in instructions if instruction == "COPY"]
            assert not [c for c in copied if re.search(r"\b(app|tanp|training)/", c)], stage


def service_volumes(name: str, path: Path = COMPOSE) -> list[Any]:
    volumes = services(path)[name].get("volumes") or []
    assert isinstance(volumes, list)
    return volumes


def test_models_are_read_only_for_the_api_and_writable_for_training() -> None:
    assert service_volumes("api") == ["models:/models:ro"]  # no dataset in the api
    assert "models:/models" in service_volumes("train")
    (data,) = [v for v in service_volumes("train") if isinstance(v, dict)]
    assert data["source"] == "${TANP_DATA_HOST_DIR:-../shared/data/lastfm}"
    assert data["target"] == "/data" and data["read_only"] is True
    assert data["bind"] == {"create_host_path": False}  # a missing folder is an error
    assert set(load_yaml(COMPOSE)["volumes"]) == {"models", "pgdata"}


def test_every_service_is_hardened() -> None:
    for name, service in services().items():
        assert service["read_only"] is True, name
        assert "/tmp" in service["tmpfs"], name
        assert service["cap_drop"] == ["ALL"], name
        assert set(service.get("cap_add", [])) <= {
            "CHOWN",
            "DAC_OVERRIDE",
            "FOWNER",
            "SETGID",
            "SETUID",
        }
        assert service["security_opt"] == ["no-new-privileges:true"], name
        assert service["deploy"]["resources"]["limits"]["memory"], name
        assert service["logging"] == {
            "driver": "json-file",
            "options": {"max-size": "10m", "max-file": "3"},
        }, name
    for name in OUR_IMAGE_SERVICES:
        assert "cap_add" not in services()[name], f"{name} needs no capability"


def test_redis_is_a_bounded_lru_cache() -> None:
    argv = as_argv(services()["redis"]["command"])
    assert argv[argv.index("--maxmemory") + 1] == "${REDIS_MAXMEMORY:-256mb}"
    assert argv[argv.index("--maxmemory-policy") + 1] == "allkeys-lru"
    assert argv[argv.index("--save") + 1] == "" and argv[argv.index("--appendonly") + 1] == "no"


def test_gpu_override_builds_the_cuda_torch_and_reserves_one_nvidia_device() -> None:
    api = services(GPU_OVERRIDE)["api"]
    devices = api["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert api["build"] == {"args": {"TORCH": "cu13"}}
    assert environment(api)["DEVICE"] == "cuda"
    assert environment(api)["NVIDIA_REQUIRE_CUDA"] == "cuda>=13.0"
    assert api["image"] != services()["api"]["image"]
    assert services(GPU_OVERRIDE)["migrate"]["image"] == api["image"]


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
    used = {name for path in COMPOSE_FILES for name, _ in VARIABLE.findall(path.read_text())}
    missing = (used | settings_variables()) - set(documented)
    assert not missing, f".env.example does not document {sorted(missing)}"


def env_example_values() -> dict[str, str]:
    """NAME -> value of the uncommented lines of .env.example."""
    pairs = re.findall(r"^([A-Z][A-Z0-9_]*)=(.*)$", ENV_EXAMPLE.read_text(), re.MULTILINE)
    return dict(pairs)


def test_env_example_agrees_with_the_compose_defaults() -> None:
    """A copied .env.example changes nothing but the secrets (DEVICE=auto once overrode compose's
    cpu); the secrets are there, empty, for the operator to fill."""
    values = env_example_values()
    for path in COMPOSE_FILES:
        for name, modifier in VARIABLE.findall(path.read_text()):
            if modifier.startswith(":-") and name in values:
                assert values[name] == modifier[2:], f"{name}: .env.example {values[name]!r}"
            if modifier.startswith(":-") and name not in values:
                assert re.search(rf"^#{name}=", ENV_EXAMPLE.read_text(), re.MULTILINE), name
    assert {name: values[name] for name in SECRETS} == dict.fromkeys(SECRETS, "")
    for compose_sets in ("DATABASE_URL", "REDIS_URL", "MODELS_DIR", "MIGRATE_ON_START", "DEVICE"):
        assert compose_sets not in values, (
            f"{compose_sets} in .env.example would be ignored or override"
        )


def test_replicas_override_publishes_the_api_only_through_the_proxy() -> None:
    api, proxy = services(REPLICAS_OVERRIDE)["api"], services(REPLICAS_OVERRIDE)["proxy"]
    assert isinstance(api["ports"], Reset) and api["ports"] == []
    assert api["deploy"]["replicas"] == "${API_REPLICAS:-3}"
    assert proxy["ports"] == ["${PROXY_BIND:-127.0.0.1}:${API_PORT:-8000}:8080"]
    assert proxy["image"] == "${HAPROXY_IMAGE:-haproxy:2.6}"
    assert proxy["volumes"] == [
        "./docker/haproxy/haproxy.cfg:/usr/local/etc/haproxy/haproxy.cfg:ro"
    ]
    assert proxy["restart"] == "unless-stopped"
    assert "/healthz" in " ".join(proxy["healthcheck"]["test"])


def test_proxy_is_hardened_like_every_other_service() -> None:
    """Anchors do not cross files: the override repeats docker-compose.yml's block verbatim."""
    assert load_yaml(REPLICAS_OVERRIDE)["x-hardening"] == load_yaml(COMPOSE)["x-hardening"]
    proxy = services(REPLICAS_OVERRIDE)["proxy"]
    for key, value in load_yaml(COMPOSE)["x-hardening"].items():
        assert proxy[key] == value, key
    assert "cap_add" not in proxy  # binds 8080 and 8404, above 1024, as the image's user
    assert proxy["deploy"]["resources"]["limits"]["memory"] == "${PROXY_MEMORY_LIMIT:-256m}"


def haproxy_sections() -> dict[str, list[str]]:
    """HAProxy's configuration: 'SECTION NAME' -> its directives, comments dropped."""
    sections: dict[str, list[str]] = {}
    current: list[str] = []
    for raw in HAPROXY_CFG.read_text().splitlines():
        line = raw.split("#", 1)[0].strip() if not raw.lstrip().startswith("log-format") else raw
        if not line:
            continue
        if not raw.startswith((" ", "\t")):
            current = sections.setdefault(line, [])
        else:
            current.append(line.strip())
    return sections


def test_haproxy_finds_replicas_by_dns_checks_readyz_and_retries_elsewhere() -> None:
    sections = haproxy_sections()
    assert "master-worker" in sections["global"]  # SIGUSR2 reloads without dropping
    assert any(d.startswith("hard-stop-after ") for d in sections["global"])
    assert "nameserver dns 127.0.0.11:53" in sections["resolvers docker"]  # Docker's DNS
    backend = sections["backend api"]
    (template,) = [d for d in backend if d.startswith("server-template ")]
    assert template.split()[1:4] == ["api", "10", "api:8000"]
    assert "check" in template.split() and "resolvers docker" in template
    assert "init-addr none" in template  # starts before any replica exists
    assert "option httpchk" in backend
    assert "http-check send meth GET uri /readyz ver HTTP/1.1 hdr Host proxy" in backend
    assert "http-check expect status 200" in backend
    assert "http-response set-header X-Served-By %s" in backend
    defaults = sections["defaults"]
    assert "retry-on conn-failure empty-response" in defaults
    assert "option redispatch 1" in defaults
    assert any(re.fullmatch(r"retries [1-9]", d) for d in defaults)
    assert "option http-buffer-request" in defaults  # a retried request must be whole
    timeouts = dict(d.split()[1:3] for d in defaults if d.startswith("timeout "))
    assert set(timeouts) >= {"connect", "client", "server", "http-request", "http-keep-alive"}
    # the proxy closes idle client connections first, and waits for headers as long as the api
    api = environment(services()["api"])
    assert int(timeouts["http-keep-alive"].rstrip("s")) < int(
        api["KEEP_ALIVE_SECONDS"].split(":-")[1].rstrip("}")
    )
    assert float(timeouts["http-request"].rstrip("s")) == float(
        api["HEADER_TIMEOUT_SECONDS"].split(":-")[1].rstrip("}")
    )
    # the stats page and /healthz listen on a port the override does not publish
    (bind,) = [d for d in sections["frontend internal"] if d.startswith("bind ")]
    assert not any(
        ":" + bind.split(":")[-1] in port for port in services(REPLICAS_OVERRIDE)["proxy"]["ports"]
    )
    assert "bind :8080" in sections["frontend api"]


def seconds(duration: str) -> float:
    match = re.fullmatch(r"(\d+)(s|m)", duration)
    assert match, duration
    return int(match.group(1)) * (60 if match.group(2) == "m" else 1)


def test_stop_grace_periods_cover_the_drains() -> None:
    """docker stop sends SIGKILL after stop_grace_period: it must outlast the api's graceful
    shutdown and the proxy's hard-stop-after."""
    replicas = services(REPLICAS_OVERRIDE)
    shutdown = environment(services()["api"])["GRACEFUL_SHUTDOWN_SECONDS"]
    assert seconds(replicas["api"]["stop_grace_period"]) > float(shutdown.split(":-")[1][:-1])
    (hard_stop,) = [d for d in haproxy_sections()["global"] if d.startswith("hard-stop-after")]
    assert seconds(replicas["proxy"]["stop_grace_period"]) > seconds(hard_stop.split()[1])


def test_scaling_doc_holds_the_tables_its_inputs_give() -> None:
    """docs/scaling.md's tables are bench/sizing.py's output for bench/sizing_inputs.json."""
    checked = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "sizing.py"),
            "--check",
            str(ROOT / "docs" / "scaling.md"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
