"""The Kubernetes manifests under deploy/k8s, as kustomize renders them.

Renders every kustomization with kubectl's built-in kustomize (scripts/check_k8s.py, which
`make lint` also runs to validate the same manifests against the Kubernetes OpenAPI schemas) and
checks what a cluster would run: the probes and the drain, the securityContext of every pod,
that no secret value is written anywhere, the settings that reach the api, the GPU overlay.
No cluster is contacted.
"""

from __future__ import annotations

import importlib.util
import re
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.test_deploy_static import settings_variables

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "deploy" / "k8s"
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "Job")
OUR_IMAGES = {"tanp-rec:api", "tanp-rec:api-gpu", "tanp-rec:trainer"}
SECRET_NAME = re.compile(r"PASSWORD|TOKEN|SECRET|DATABASE_URL|REDIS_URL")


def _check_k8s() -> Any:
    spec = importlib.util.spec_from_file_location("check_k8s", ROOT / "scripts" / "check_k8s.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


CHECK_K8S = _check_k8s()
KUSTOMIZATIONS: tuple[str, ...] = CHECK_K8S.KUSTOMIZATIONS


@cache
def rendered(kustomization: str) -> tuple[dict[str, Any], ...]:
    return tuple(CHECK_K8S.render(kustomization))


def find(kustomization: str, kind: str, name: str) -> dict[str, Any]:
    """The one rendered manifest of that kind and name (a generated ConfigMap: by its prefix)."""
    found = [
        manifest
        for manifest in rendered(kustomization)
        if manifest["kind"] == kind
        and (
            manifest["metadata"]["name"] == name
            or (kind == "ConfigMap" and manifest["metadata"]["name"].startswith(name + "-"))
        )
    ]
    assert len(found) == 1, f"{kustomization}: {len(found)} {kind}/{name}"
    return found[0]


def pod_specs(kustomization: str) -> list[tuple[str, dict[str, Any]]]:
    """(kind/name, pod spec) of every workload."""
    return [
        (f"{manifest['kind']}/{manifest['metadata']['name']}", manifest["spec"]["template"]["spec"])
        for manifest in rendered(kustomization)
        if manifest["kind"] in WORKLOAD_KINDS
    ]


def containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return [*pod.get("initContainers", []), *pod["containers"]]


def api_container(kustomization: str) -> dict[str, Any]:
    pod = find(kustomization, "Deployment", "tanp-api")["spec"]["template"]["spec"]
    (api,) = pod["containers"]
    return dict(api)


def settings(kustomization: str) -> dict[str, str]:
    return dict(find(kustomization, "ConfigMap", "tanp-settings")["data"])


API_KUSTOMIZATIONS = ("base", "overlays/dev", "overlays/gpu")


def test_every_kustomization_renders_the_expected_objects() -> None:
    kinds = {
        kustomization: sorted(
            f"{manifest['kind']}/{manifest['metadata']['name'].split('-')[0]}"
            for manifest in rendered(kustomization)
        )
        for kustomization in KUSTOMIZATIONS
    }
    api_objects = {
        "ConfigMap/tanp",
        "Deployment/tanp",
        "HorizontalPodAutoscaler/tanp",
        "Job/tanp",
        "Namespace/tanp",
        "PersistentVolumeClaim/tanp",
        "PodDisruptionBudget/tanp",
        "Service/tanp",
    }
    assert set(kinds["base"]) == api_objects
    assert set(kinds["overlays/gpu"]) == api_objects
    assert set(kinds["overlays/dev"]) == api_objects | {
        "NetworkPolicy/postgres",
        "NetworkPolicy/redis",
        "Service/postgres",
        "Service/redis",
        "StatefulSet/postgres",
        "StatefulSet/redis",
    }
    assert set(kinds["train"]) == {"ConfigMap/tanp", "Job/tanp"}


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_everything_lives_in_the_restricted_namespace(kustomization: str) -> None:
    for manifest in rendered(kustomization):
        if manifest["kind"] == "Namespace":
            labels = manifest["metadata"]["labels"]
            assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
        else:
            assert manifest["metadata"]["namespace"] == "tanp", manifest["metadata"]["name"]
            assert manifest["metadata"]["labels"]["app.kubernetes.io/part-of"] == "tanp-rec"


@pytest.mark.parametrize("kustomization", API_KUSTOMIZATIONS)
def test_api_probes_cover_the_model_load_and_readiness_is_readyz(kustomization: str) -> None:
    api = api_container(kustomization)
    (port,) = api["ports"]
    assert port == {"name": "http", "containerPort": 8000}
    for probe, path in (
        ("startupProbe", "/livez"),
        ("livenessProbe", "/livez"),
        ("readinessProbe", "/readyz"),
    ):
        assert api[probe]["httpGet"] == {"path": path, "port": "http"}, probe
    # /livez answers once the startup model is loaded: give it minutes, not the default 30 s
    startup = api["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120
    assert api["command"] == ["tanp-serve", "--host", "0.0.0.0", "--port", "8000"]


@pytest.mark.parametrize("kustomization", API_KUSTOMIZATIONS)
def test_grace_period_covers_the_prestop_sleep_and_the_graceful_shutdown(
    kustomization: str,
) -> None:
    pod = find(kustomization, "Deployment", "tanp-api")["spec"]["template"]["spec"]
    command = api_container(kustomization)["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    sleep = int(command[1])
    assert sleep >= 5, "endpoints need a few seconds to drop the pod before SIGTERM"
    shutdown = float(settings(kustomization)["GRACEFUL_SHUTDOWN_SECONDS"])
    assert pod["terminationGracePeriodSeconds"] >= sleep + shutdown + 5


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_every_pod_runs_non_root_read_only_without_privileges(kustomization: str) -> None:
    for name, pod in pod_specs(kustomization):
        context = pod["securityContext"]
        assert context["runAsNonRoot"] is True, name
        assert context["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert not pod.get("hostNetwork") and not pod.get("hostPID"), name
        assert pod.get("automountServiceAccountToken") is False, name
        assert not [v for v in pod.get("volumes", []) if "hostPath" in v], name
        for container in containers(pod):
            where = f"{name}/{container['name']}"
            own = container["securityContext"]
            assert own["allowPrivilegeEscalation"] is False, where
            assert own["readOnlyRootFilesystem"] is True, where
            assert own["capabilities"] == {"drop": ["ALL"]}, where
            assert not own.get("privileged"), where
            assert container["resources"]["limits"]["memory"], where
            if container["image"] in OUR_IMAGES:
                # the images' USER (docker/Dockerfile), the owner of the models volume
                assert (context["runAsUser"], context["runAsGroup"]) == (10001, 10001), where
                mounts = {mount["mountPath"] for mount in container["volumeMounts"]}
                assert "/tmp" in mounts, f"{where}: no writable /tmp"


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_no_secret_value_is_written_in_any_manifest(kustomization: str) -> None:
    for manifest in rendered(kustomization):
        assert manifest["kind"] != "Secret", "Secrets are created with kubectl, never rendered"
        if manifest["kind"] == "ConfigMap":
            for key, value in manifest["data"].items():
                assert not SECRET_NAME.search(key), f"{key} belongs in a Secret"
                assert "@" not in value, f"{key}: credentials in a ConfigMap"
    for _, pod in pod_specs(kustomization):
        for container in containers(pod):
            for variable in container.get("env", []):
                if SECRET_NAME.search(variable["name"]):
                    assert "value" not in variable, variable["name"]
                    assert "secretKeyRef" in variable["valueFrom"], variable["name"]


def test_no_kustomization_generates_a_secret() -> None:
    for path in K8S.rglob("kustomization.yaml"):
        assert "secretGenerator" not in yaml.safe_load(path.read_text()), path


def test_every_secret_reference_is_created_in_the_readme() -> None:
    """The README's `kubectl create secret generic NAME --from-literal=KEY=...` lines create
    exactly the keys the manifests read."""
    readme = (K8S / "README.md").read_text()
    created: set[tuple[str, str]] = set()
    pattern = r"kubectl -n tanp create secret generic (?:[^\n]*\\\n)*[^\n]*"
    for command in re.findall(pattern, readme):
        name = command.split("generic", 1)[1].split()[0]
        created.update((name, key) for key in re.findall(r"--from-literal=([\w-]+)=", command))
    referenced = {
        (
            variable["valueFrom"]["secretKeyRef"]["name"],
            variable["valueFrom"]["secretKeyRef"]["key"],
        )
        for kustomization in KUSTOMIZATIONS
        for _, pod in pod_specs(kustomization)
        for container in containers(pod)
        for variable in container.get("env", [])
        if "secretKeyRef" in variable.get("valueFrom", {})
    }
    assert referenced == created


def test_every_setting_reaches_the_api_and_nothing_else_does() -> None:
    api = api_container("base")
    reaching = set(settings("base")) | {variable["name"] for variable in api["env"]}
    assert reaching == settings_variables() - {"TANP_DATA_DIR"}
    # the compose file's defaults, so both deployments behave alike
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    environment = compose["services"]["api"]["environment"]
    for key, value in settings("base").items():
        declared = str(environment[key])
        default = re.fullmatch(r"\$\{\w+:-(.*)\}", declared)
        assert value == (default.group(1) if default else declared), key


def test_service_pdb_and_hpa_select_the_api_pods() -> None:
    deployment = find("base", "Deployment", "tanp-api")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    service = find("base", "Service", "tanp-api")
    assert service["spec"]["selector"].items() <= labels.items()
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    pdb = find("base", "PodDisruptionBudget", "tanp-api")
    assert pdb["apiVersion"] == "policy/v1"
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert pdb["spec"]["maxUnavailable"] == 1
    hpa = find("base", "HorizontalPodAutoscaler", "tanp-api")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "tanp-api",
    }
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert 2 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
    # HPA utilisation is relative to the request
    assert api_container("base")["resources"]["requests"]["cpu"]


def test_models_volume_is_shared_read_only_by_the_api_and_written_by_training() -> None:
    claim = find("base", "PersistentVolumeClaim", "tanp-models")
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]

    def models_mount(pod: dict[str, Any], container: dict[str, Any]) -> tuple[str, bool]:
        (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == "/models"]
        (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
        return volume["persistentVolumeClaim"]["claimName"], bool(mount.get("readOnly"))

    api_pod = find("base", "Deployment", "tanp-api")["spec"]["template"]["spec"]
    assert models_mount(api_pod, api_container("base")) == ("tanp-models", True)
    train_pod = find("train", "Job", "tanp-train")["spec"]["template"]["spec"]
    (train,) = train_pod["containers"]
    assert models_mount(train_pod, train) == ("tanp-models", False)
    assert train["image"] == "tanp-rec:trainer"
    assert train["command"][:2] == ["tanp-train", "train"]
    assert train["command"][train["command"].index("--out") + 1] == "/models/$(TRAIN_RUN_NAME)"


def test_migrate_job_runs_the_api_image_and_is_recreated_on_apply() -> None:
    job = find("base", "Job", "tanp-migrate")
    (migrate,) = job["spec"]["template"]["spec"]["containers"]
    assert migrate["command"] == ["tanp-serve", "migrate"]
    assert migrate["image"] == api_container("base")["image"] == "tanp-rec:api"
    assert job["spec"]["ttlSecondsAfterFinished"] > 0


def test_images_are_the_ones_compose_builds() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    gpu = yaml.safe_load((ROOT / "docker-compose.gpu.yml").read_text())["services"]
    assert api_container("base")["image"] == compose["api"]["image"]
    assert api_container("overlays/gpu")["image"] == gpu["api"]["image"]
    train_pod = find("train", "Job", "tanp-train")["spec"]["template"]["spec"]
    assert {container["image"] for container in containers(train_pod)} == {
        compose["train"]["image"]
    }


def test_gpu_overlay_requests_one_gpu_on_gpu_nodes() -> None:
    api = api_container("overlays/gpu")
    assert api["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert settings("overlays/gpu")["DEVICE"] == "cuda"
    pod = find("overlays/gpu", "Deployment", "tanp-api")["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod[
        "tolerations"
    ]
    for kustomization in ("base", "overlays/dev"):
        assert "nvidia.com/gpu" not in api_container(kustomization)["resources"]["limits"]
        assert settings(kustomization)["DEVICE"] == "cpu"


def test_dev_datastores_are_reached_by_the_names_the_readme_uses() -> None:
    readme = (K8S / "README.md").read_text()
    for name, port in (("redis", 6379), ("postgres", 5432)):
        service = find("overlays/dev", "Service", name)
        assert service["spec"]["ports"][0]["port"] == port
        statefulset = find("overlays/dev", "StatefulSet", name)
        assert statefulset["spec"]["serviceName"] == name
        assert f"{name}:{port}" in readme


def test_the_dev_redis_asks_for_the_password_of_its_secret() -> None:
    """Issue 21 item 8: the dev Redis had no password."""
    pod = find("overlays/dev", "StatefulSet", "redis")["spec"]["template"]["spec"]
    (redis,) = pod["containers"]
    assert redis["args"][redis["args"].index("--requirepass") + 1] == "$(REDIS_PASSWORD)"
    sources = {variable["name"]: variable["valueFrom"]["secretKeyRef"] for variable in redis["env"]}
    assert sources["REDIS_PASSWORD"] == {"name": "tanp-redis", "key": "password"}
    assert sources["REDISCLI_AUTH"] == sources["REDIS_PASSWORD"]  # the probes' redis-cli
