"""Admin API: bearer auth (401 + WWW-Authenticate, 404 when off), version resolution that never
leaves MODELS_DIR, refused checkpoints that leave the old model serving, and an audit row for
every call."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from app_helpers import AppFactory, TestClient, state_of
from model_versions import save_version, two_versions
from safetensors.torch import load_file, save_file
from sqlalchemy import select, text

from app.storage.crud import active_version, registered_versions
from app.storage.tables import AdminAudit
from tanp.checkpoint import WEIGHTS_FILE, read_manifest, sha256_file, write_manifest
from tanp.model import TaNP, TaNPConfig

TOKEN = "s3cret-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
RECOMMEND = {"support": [{"item_id": "a1", "rating": 1}], "k": 3}


@pytest.fixture
def models(tmp_path: Path) -> Path:
    return two_versions(tmp_path / "models")


@pytest.fixture
def admin(make_client: AppFactory, models: Path) -> TestClient:
    return make_client(models_dir=models, admin_token=TOKEN)


def audit_rows(client: TestClient) -> list[AdminAudit]:
    state = state_of(client)
    state.audit_log.flush(timeout=10)  # rows are written by the audit log's thread
    with state.database.sessions() as session:
        return list(session.scalars(select(AdminAudit).order_by(AdminAudit.id)))


def serving_version(client: TestClient) -> str:
    response = client.post("/v1/recommend", json=RECOMMEND)
    assert response.status_code == 200
    version: str = response.json()["model_version"]
    return version


def reload(client: TestClient, version: str) -> Any:
    return client.post("/admin/models/reload", json={"version": version}, headers=AUTH)


def test_admin_is_off_without_a_token(make_client: AppFactory, models: Path) -> None:
    client = make_client(models_dir=models, admin_token=None)
    assert client.get("/admin/models", headers=AUTH).status_code == 404
    assert reload(client, "v1").status_code == 404
    assert client.post("/admin/models/v1/activate", headers=AUTH).status_code == 404
    assert serving_version(client) == "v2"
    rows = audit_rows(client)
    assert [(row.action, row.status_code, row.allowed) for row in rows] == [
        ("list_models", 404, False),
        ("reload_model", 404, False),
        ("activate_model", 404, False),
    ]


@pytest.mark.parametrize(
    ("headers", "challenge"),
    [
        ({}, "Bearer"),
        ({"Authorization": "Bearer wrong-token"}, 'Bearer error="invalid_token"'),
        ({"Authorization": f"Basic {TOKEN}"}, "Bearer"),
        ({"Authorization": "Bearer "}, "Bearer"),
    ],
)
def test_missing_or_wrong_token_is_401_with_a_challenge(
    admin: TestClient, headers: dict[str, str], challenge: str
) -> None:
    for response in (
        admin.get("/admin/models", headers=headers),
        admin.post("/admin/models/reload", json={"version": "v1"}, headers=headers),
        admin.post("/admin/models/v1/activate", headers=headers),
    ):
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == challenge
        assert "x-request-id" in response.headers
    assert serving_version(admin) == "v2"
    rows = audit_rows(admin)
    assert [(row.actor, row.allowed, row.status_code) for row in rows] == [
        ("anonymous", False, 401)
    ] * 3
    assert [row.target for row in rows] == [None, None, "v1"]
    assert all(row.client_ip for row in rows)


def test_an_unauthenticated_malformed_body_is_still_401(admin: TestClient) -> None:
    response = admin.post("/admin/models/reload", content=b"{not json")
    assert response.status_code == 401


def test_list_models_shows_registry_disk_and_workers(admin: TestClient) -> None:
    response = admin.get("/admin/models", headers=AUTH)
    assert response.status_code == 200
    body = response.json()
    assert body["serving"] == "v2" and body["registry"] == "ok"
    versions = {entry["name"]: entry for entry in body["versions"]}
    assert (versions["v2"]["status"], versions["v2"]["serving"]) == ("active", True)
    assert (versions["v1"]["status"], versions["v1"]["serving"]) == ("available", False)
    assert versions["v1"]["metrics"] == {"catalog": {"Recall@20": 0.51}}
    assert [worker["pid"] for worker in body["workers"]] == [os.getpid()]
    row = audit_rows(admin)[-1]
    assert (row.actor, row.action, row.allowed, row.status_code) == (
        "token",
        "list_models",
        True,
        200,
    )


def test_reload_and_activate_swap_the_served_model_and_the_registry(admin: TestClient) -> None:
    response = reload(admin, "v1")
    assert response.status_code == 200
    sha256 = read_manifest(state_of(admin).settings.models_dir / "v1")["weights_sha256"]
    assert response.json() == {
        "version": "v1",
        "previous": "v2",
        "device": "cpu",
        "sha256": sha256,
        "unconfirmed_workers": [],
    }
    assert serving_version(admin) == "v1"
    sessions = state_of(admin).database.sessions
    assert active_version(sessions) == "v1"

    activated = admin.post("/admin/models/v2/activate", headers=AUTH)
    assert activated.status_code == 200 and activated.json()["previous"] == "v1"
    assert serving_version(admin) == "v2"
    latest = admin.post("/admin/models/reload", json={"latest": True}, headers=AUTH)
    assert latest.status_code == 200 and latest.json()["version"] == "v2"
    assert active_version(sessions) == "v2"

    rows = audit_rows(admin)
    assert [(row.action, row.target, row.allowed) for row in rows] == [
        ("reload_model", "v1", True),
        ("activate_model", "v2", True),
        ("reload_model", "v2", True),
    ]
    assert rows[0].message == "activated v1 (was v2)"


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"version": "v1", "latest": True},
        {"latest": False},
        {"version": "v1", "path": "/x"},
        {"latest": 1},
        {"version": 1},
    ],
)
def test_reload_body_must_name_exactly_one_target(admin: TestClient, body: dict[str, Any]) -> None:
    response = admin.post("/admin/models/reload", json=body, headers=AUTH)
    assert response.status_code == 422
    row = audit_rows(admin)[-1]
    assert (row.actor, row.status_code, row.allowed) == ("token", 422, False)
    assert row.message is not None and row.message.startswith("invalid request")


@pytest.mark.parametrize(
    ("version", "status", "fragment"),
    [
        ("../x", 400, "never a path"),
        ("/etc", 400, "never a path"),
        ("v1/../../etc", 400, "never a path"),
        ("..", 400, "never a path"),
        ("http://x", 400, "is a URL"),
        ("file:///etc/passwd", 400, "is a URL"),
        ("escape", 400, "leaves MODELS_DIR"),
        ("v9", 404, "no run directory named 'v9'"),
    ],
)
def test_versions_resolve_only_under_models_dir(
    admin: TestClient, models: Path, tmp_path: Path, version: str, status: int, fragment: str
) -> None:
    outside = tmp_path / "outside"
    save_version(outside, "evil", seed=9)
    (models / "escape").symlink_to(outside / "evil", target_is_directory=True)

    response = reload(admin, version)
    assert response.status_code == status
    assert fragment in response.json()["detail"]
    assert serving_version(admin) == "v2"
    row = audit_rows(admin)[-1]
    assert (row.target, row.status_code, row.allowed) == (version, status, False)
    assert row.message is not None and fragment in row.message


def test_the_activate_route_refuses_a_symlinked_version_too(
    admin: TestClient, models: Path, tmp_path: Path
) -> None:
    save_version(tmp_path / "outside", "evil", seed=9)
    (models / "evil").symlink_to(tmp_path / "outside" / "evil", target_is_directory=True)
    response = admin.post("/admin/models/evil/activate", headers=AUTH)
    assert response.status_code == 400
    assert "leaves MODELS_DIR" in response.json()["detail"]
    assert serving_version(admin) == "v2"


def flip_one_byte(run_dir: Path) -> str:
    weights = run_dir / WEIGHTS_FILE
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x01
    weights.write_bytes(bytes(data))
    return "sha256"


def wrong_shapes(run_dir: Path) -> str:
    other = TaNP(TaNPConfig(num_items=40, z_dim=16))
    state = {name: tensor.contiguous() for name, tensor in other.state_dict().items()}
    save_file(state, str(run_dir / WEIGHTS_FILE))
    manifest = read_manifest(run_dir)
    manifest["weights_sha256"] = sha256_file(run_dir / WEIGHTS_FILE)  # honest hash, wrong shapes
    write_manifest(run_dir, manifest)
    return "weights do not fit model_config"


def unknown_format(run_dir: Path) -> str:
    manifest = json.loads((run_dir / "manifest.json").read_text())
    manifest["format_version"] = 99
    (run_dir / "manifest.json").write_text(json.dumps(manifest))
    return "format_version 99 is not supported"


def edit_manifest(**changes: Any) -> Any:
    def damage(run_dir: Path) -> str:
        manifest = read_manifest(run_dir)
        for key, value in changes.items():
            outer, _, inner = key.partition(".")
            if inner:
                manifest[outer][inner] = value
            else:
                manifest[outer] = value
        write_manifest(run_dir, manifest)
        return next(iter(changes)).split(".")[0]

    return damage


def non_finite_weight(run_dir: Path) -> str:
    """A flipped exponent bit (a weight becomes infinite) with the sha256 rewritten to match."""
    tensors = load_file(str(run_dir / WEIGHTS_FILE))
    tensors["decoder.output.weight"].view(-1)[0] = float("inf")
    save_file(tensors, str(run_dir / WEIGHTS_FILE))
    manifest = read_manifest(run_dir)
    manifest["weights_sha256"] = sha256_file(run_dir / WEIGHTS_FILE)
    write_manifest(run_dir, manifest)
    return "non-finite"


@pytest.mark.parametrize(
    "damage",
    [
        flip_one_byte,
        wrong_shapes,
        unknown_format,
        edit_manifest(items=5),
        edit_manifest(probe={}),
        edit_manifest(**{"probe.support_indices": [0, 10**6]}),
        edit_manifest(**{"model_config.z_dim": -3}),
        edit_manifest(item_names=["only one"]),
        non_finite_weight,
    ],
)
def test_a_refused_checkpoint_leaves_the_old_model_serving(
    admin: TestClient, models: Path, damage: Any
) -> None:
    shutil.copytree(models / "v1", models / "bad")
    fragment = damage(models / "bad")

    response = reload(admin, "bad")
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert detail.startswith("version 'bad' refused, still serving 'v2': ")
    assert fragment in detail
    assert serving_version(admin) == "v2"
    assert admin.get("/readyz").status_code == 200

    sessions = state_of(admin).database.sessions
    assert active_version(sessions) == "v2"
    record = {record.name: record for record in registered_versions(sessions)}["bad"]
    assert record.status == "failed" and fragment in (record.message or "")
    row = audit_rows(admin)[-1]
    assert (row.action, row.target, row.status_code, row.allowed) == (
        "reload_model",
        "bad",
        422,
        False,
    )
    assert fragment in (row.message or "")


def test_a_failing_audit_write_never_changes_the_answer(admin: TestClient) -> None:
    engine = state_of(admin).database.engine
    with engine.begin() as connection:
        connection.execute(text("DROP TABLE admin_audit"))
    assert admin.get("/admin/models").status_code == 401
    assert reload(admin, "v1").status_code == 200
    assert serving_version(admin) == "v1"


def test_admin_routes_are_documented(admin: TestClient) -> None:
    paths = admin.get("/openapi.json").json()["paths"]
    assert {"/admin/models", "/admin/models/reload", "/admin/models/{version}/activate"} <= set(
        paths
    )


def test_a_body_that_does_not_parse_is_audited_with_its_400(admin: TestClient) -> None:
    """Issue 16 item 8: FastAPI's body-parse 400 was audited as a 500."""
    response = admin.post(
        "/admin/models/reload",
        content=b'{"version": "\xff"}',
        headers={**AUTH, "Content-Type": "application/json"},
    )
    assert response.status_code == 400
    row = audit_rows(admin)[-1]
    assert (row.action, row.status_code, row.allowed) == ("reload_model", 400, False)


def test_weights_symlinked_out_of_models_dir_are_refused(
    admin: TestClient, models: Path, tmp_path: Path
) -> None:
    """Issue 16 item 8: only the folder was checked, so a symlinked weights file loaded."""
    outside = save_version(tmp_path / "outside", "evil", seed=9)
    (models / "sneaky").mkdir()
    shutil.copy(outside / "manifest.json", models / "sneaky" / "manifest.json")
    (models / "sneaky" / WEIGHTS_FILE).symlink_to(outside / WEIGHTS_FILE)
    response = reload(admin, "sneaky")
    assert response.status_code == 400
    assert "leaves MODELS_DIR" in response.json()["detail"]
    assert serving_version(admin) == "v2"


def test_audit_rows_keep_unprintable_targets_escaped(admin: TestClient) -> None:
    response = reload(admin, "v1\x00../etc")
    assert response.status_code == 400
    assert audit_rows(admin)[-1].target == "v1\\x00../etc"


def test_anonymous_refusals_past_the_minutes_allowance_are_counted_not_stored(
    make_client: AppFactory, models: Path
) -> None:
    """Issue 21 item 7: every anonymous 401/404 on /admin/* wrote an audit row (270 of 345
    rows in the review)."""
    client = make_client(models_dir=models, admin_token=TOKEN, audit_anonymous_per_minute=3)
    for _ in range(10):
        assert client.get("/admin/models").status_code == 401
    assert reload(client, "v1").status_code == 200  # an authenticated call is always audited
    rows = audit_rows(client)
    assert [(row.actor, row.status_code) for row in rows] == [("anonymous", 401)] * 3 + [
        ("token", 200)
    ]
    metrics = client.get("/metrics").text
    assert "tanp_admin_audit_sampled_total 7.0" in metrics
