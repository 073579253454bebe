"""Service settings: one pydantic-settings class read from the environment (SPEC section 8).

Nothing here is built at import time; `create_app(settings)` receives an instance.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class Settings(BaseSettings):
    """Every knob of the service, one environment variable each (names are upper-case)."""

    model_config = SettingsConfigDict(env_file=None, extra="ignore", case_sensitive=False)

    database_url: str = "sqlite:///./tanp.db"
    redis_url: str | None = None
    models_dir: Path = Path("models")
    active_model: str | None = None
    device: str = "auto"
    admin_token: str | None = None
    cache_ttl_seconds: int = Field(default=3600, ge=1)
    max_support: int = Field(default=100, ge=1, le=10_000)
    # Catalogs above FULL_SCORING_MAX_ITEMS items are scored on CANDIDATES items only (the
    # liked support items' neighbours, then the most popular), on CPU; on a GPU, or at or
    # below it, every catalog item is scored.
    candidates: int = Field(default=2_000, ge=1)
    full_scoring_max_items: int = Field(default=50_000, ge=1)
    # A model with a shortlist head (tanp.shortlist), on CPU: its first pass picks SHORTLIST
    # items over the whole catalog and the decoder scores only those (0: always decode all).
    shortlist: int = Field(default=500, ge=0)
    # Concurrent recommend calls of one worker that arrive while its model is busy are scored
    # together in one forward (app.serving.batcher), up to this many per batch.
    batch_max_requests: int = Field(default=32, ge=1, le=1024)
    # Recommend calls waiting for a micro-batch, per worker; past it a call answers 503 with
    # Retry-After at once instead of queueing without bound.
    batch_max_pending: int = Field(default=256, ge=1)
    # Whole answers of repeated requests kept per worker, an LRU bounded in bytes (0: none): a
    # repeat skips the catalog decode. The task-state cache (Redis or memory) is used either way.
    answer_cache_bytes: int = Field(default=32 * 1024 * 1024, ge=0)
    max_body_bytes: int = Field(default=65_536, ge=1_024)
    log_level: str = "INFO"
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Apply the Alembic migrations at start; unset: only for a SQLite database (the embedded
    # default just works), never for Postgres (compose and Kubernetes run a one-shot migrate).
    migrate_on_start: bool | None = None
    redis_timeout_seconds: float = Field(default=0.05, gt=0)
    reconcile_seconds: float = Field(default=5.0, gt=0)
    # Slow clients (app.server): a request's line and headers, then its body, must arrive
    # within these; an idle connection between requests is closed after KEEP_ALIVE_SECONDS.
    header_timeout_seconds: float = Field(default=10.0, gt=0)
    # A request line and headers over this many bytes get 431 and the connection is closed.
    max_header_bytes: int = Field(default=16_384, ge=1_024)
    # Connections and requests in flight per worker past which uvicorn answers 503 (its own
    # plain-text answer); 0: no limit.
    limit_concurrency: int = Field(default=512, ge=0)
    body_timeout_seconds: float = Field(default=30.0, gt=0)
    keep_alive_seconds: int = Field(default=5, ge=1)
    # At shutdown, requests in flight get this long; at start, a port still held by a previous
    # server's draining workers is waited for this long.
    graceful_shutdown_seconds: int = Field(default=10, ge=1)
    bind_wait_seconds: float = Field(default=30.0, ge=0)
    # Request-log and audit rows wait here while SQL is down (per worker bound, the two logs
    # together: 7/8 for the request log, 1/8 for the audit); unset: a private folder per
    # DATABASE_URL under the system's temporary directory.
    request_log_spool_dir: Path | None = None
    request_log_spool_bytes: int = Field(default=256 * 1024 * 1024, ge=1024)
    # An admin activation waits this long for SQL to record it, then answers 503 unchanged.
    registry_timeout_seconds: float = Field(default=10.0, gt=0)
    # With Redis, an admin activation's answer waits up to this long until every live worker
    # reports the new weights (their sha256); 0: answer once this worker has swapped.
    reload_confirm_seconds: float = Field(default=0.0, ge=0, le=60)
    # Anonymous refusals (401/404) on /admin/* written to the audit per worker and minute;
    # the rest are counted (tanp_admin_audit_sampled_total) and logged, not stored.
    audit_anonymous_per_minute: int = Field(default=30, ge=0)
    # /docs and /redoc (Swagger UI loads from a CDN); /openapi.json is always served.
    api_docs: bool = True
    # Prefix of the model-broadcast keys and channel (`tanp:models`, `tanp:active_model`,
    # `tanp:workers`); pub/sub channels ignore the Redis DB index, so deployments (and test
    # sessions) sharing one Redis server separate themselves with it.
    broadcast_prefix: str = "tanp:"
    # One intra-op thread per request: on a few cores, concurrent requests each asking torch
    # for every core oversubscribe the CPU and wait on each other. 0 keeps torch's default.
    # Applied by the server entry point, not by create_app.
    torch_threads: int = Field(default=1, ge=0)

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            return [origin.strip() for origin in value.split(",") if origin.strip()]
        return value

    def spool_dir(self) -> Path:
        """REQUEST_LOG_SPOOL_DIR, else `<tmp>/tanp-spool-<uid>/<hash of DATABASE_URL>`, this
        user's own (the spool refuses a folder another user owns or can write): every worker of
        one deployment shares it, deployments with other databases never do."""
        if self.request_log_spool_dir is not None:
            return self.request_log_spool_dir
        digest = hashlib.sha256(self.database_url.encode()).hexdigest()[:16]
        return Path(tempfile.gettempdir()) / f"tanp-spool-{os.geteuid()}" / digest

    @field_validator(
        "admin_token",
        "active_model",
        "redis_url",
        "request_log_spool_dir",
        "migrate_on_start",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        # compose passes `VAR=` as an empty string; empty means "not configured"
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("device")
    @classmethod
    def _check_device(cls, value: str) -> str:
        if value in ("auto", "cpu", "cuda") or (
            value.startswith("cuda:") and value.removeprefix("cuda:").isdigit()
        ):
            return value
        raise ValueError("DEVICE must be auto, cpu, cuda or cuda:N")
