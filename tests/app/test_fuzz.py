"""Every operation of /openapi.json fuzzed by schemathesis (a small budget here; bench/fuzz.py
runs hundreds of examples per operation against a real server): no 5xx, every answer within its
documented schema, status code and content type, schema-violating input refused, with and
without the admin token. The checks' expectations live in schemathesis.toml."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from model_versions import two_versions
from schemathesis import GenerationMode
from schemathesis.config import SchemathesisConfig

from app.main import create_app
from app.settings import Settings

TOKEN = "fuzz-admin-token"
CONFIG = Path(__file__).resolve().parents[2] / "schemathesis.toml"
EXAMPLES_PER_OPERATION = 25


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory: pytest.TempPathFactory) -> Any:
    root = tmp_path_factory.mktemp("fuzz")
    app = create_app(
        Settings(
            models_dir=two_versions(root / "models"),
            device="cpu",
            redis_url=None,
            active_model=None,
            admin_token=TOKEN,
            database_url=f"sqlite:///{root / 'fuzz.db'}",
            migrate_on_start=True,
            request_log_spool_dir=root / "spool",
        )
    )
    yield schemathesis.openapi.from_asgi(
        "/openapi.json", app, config=SchemathesisConfig.from_path(CONFIG)
    )
    schemathesis.python.asgi.shutdown_lifespans()  # the app's lifespan, started by schemathesis


FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES_PER_OPERATION,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)


def fuzz(operation: Any, *, mode: GenerationMode, headers: dict[str, str]) -> int:
    """Run EXAMPLES_PER_OPERATION generated cases of `operation` through every check; returns
    how many ran (hypothesis raises the shrunk failure)."""
    ran = 0

    @given(case=operation.as_strategy(generation_mode=mode))
    @FUZZ_SETTINGS
    def check(case: Any) -> None:
        nonlocal ran
        ran += 1
        case.call_and_validate(headers=headers)

    check()
    return ran


@pytest.mark.parametrize("mode", list(GenerationMode), ids=str)
@pytest.mark.parametrize("token", [None, TOKEN], ids=["anonymous", "admin"])
def test_every_operation_answers_within_its_schema(
    api_schema: Any, mode: GenerationMode, token: str | None
) -> None:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    failures: dict[str, str] = {}
    ran: dict[str, int] = {}
    for result in api_schema.get_all_operations():
        operation = result.ok()
        try:
            ran[operation.label] = fuzz(operation, mode=mode, headers=headers)
        except Unsatisfiable:  # negative mode: nothing in this operation can be made invalid
            ran[operation.label] = 0
        except Exception as failure:  # every operation's failure, not only the first
            failures[operation.label] = str(failure)[:3000]
    assert not failures, "\n\n".join(f"{label}: {text}" for label, text in failures.items())
    assert len(ran) >= 11, ran
    if mode == GenerationMode.POSITIVE:
        assert all(ran.values()), ran
    else:  # at least the bodies and the query parameters can be broken
        assert ran["POST /v1/recommend"] and ran["POST /admin/models/reload"], ran
        assert ran["GET /v1/items"], ran
