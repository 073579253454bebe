"""The FastAPI application: `create_app(settings)` and the lifespan that owns its resources.

The lifespan loads the startup model off the event loop, opens the task-embedding cache (Redis
or in-process) and closes it at shutdown. A missing or broken model does not stop the app: it
starts, `/livez` answers, `/readyz` and `/v1/recommend` say 503 with the reason.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio.to_thread
import torch
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.staticfiles import StaticFiles

from app.broadcast import ModelSync
from app.cache import MemoryCache, RedisCache, TaskStateCache
from app.errors import install_error_handlers
from app.holder import ModelHolder, VersionError, list_versions
from app.middleware import ServiceMiddleware
from app.registry import Persistence, open_persistence, record_startup_model
from app.request_log import NullRequestLog
from app.routers import admin, health, items, recommend
from app.settings import Settings
from app.telemetry import Metrics
from tanp.checkpoint import CheckpointError

logger = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"


def choose_startup_version(settings: Settings, *, registry_active: str | None = None) -> str | None:
    """ACTIVE_MODEL when set, else the registry's active version when it is still on disk,
    else the newest run directory under MODELS_DIR, else None."""
    if settings.active_model:
        return settings.active_model
    versions = list_versions(settings.models_dir)
    if registry_active is not None and registry_active in versions:
        return registry_active
    return versions[-1] if versions else None


def build_cache(settings: Settings, metrics: Metrics) -> TaskStateCache:
    if settings.redis_url:
        return RedisCache(
            url=settings.redis_url,
            ttl_seconds=settings.cache_ttl_seconds,
            timeout_seconds=settings.redis_timeout_seconds,
            on_error=metrics.cache_errors.inc,
        )
    return MemoryCache(ttl_seconds=settings.cache_ttl_seconds)


def load_startup_model(app: FastAPI) -> None:
    """Blocking: load the startup version into the holder, or record why not."""
    settings: Settings = app.state.settings
    holder: ModelHolder = app.state.holder
    persistence: Persistence | None = app.state.persistence
    version = choose_startup_version(
        settings, registry_active=persistence.active if persistence is not None else None
    )
    if version is None:
        app.state.startup_error = f"no run directory under MODELS_DIR={settings.models_dir}"
        logger.warning("starting without a model: %s", app.state.startup_error)
        return
    try:
        holder.load(version)
    except (CheckpointError, VersionError, OSError) as error:
        app.state.startup_error = f"loading {version!r} failed: {error}"
        logger.error("starting without a model: %s", app.state.startup_error)
        return
    app.state.startup_error = None


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    metrics: Metrics = app.state.metrics
    app.state.cache = build_cache(settings, metrics)
    persistence = await anyio.to_thread.run_sync(
        lambda: open_persistence(settings, on_log_failure=metrics.request_log_failures.inc)
    )
    app.state.persistence = persistence
    app.state.session_factory = persistence.session_factory
    app.state.db_engine = persistence.engine
    app.state.db_status = persistence.status
    app.state.request_log = persistence.request_log
    await anyio.to_thread.run_sync(load_startup_model, app)
    serving = app.state.holder.current
    if serving is not None:
        metrics.set_model(serving.version, str(serving.loaded.device))
        await anyio.to_thread.run_sync(record_startup_model, persistence, serving)
    sync = ModelSync(
        holder=app.state.holder,
        session_factory=persistence.session_factory,
        redis_url=settings.redis_url,
        reconcile_seconds=settings.reconcile_seconds,
        key_prefix=settings.broadcast_prefix,
        on_loaded=lambda loaded: metrics.set_model(loaded.version, str(loaded.loaded.device)),
        catalog_urls=persistence.catalog_urls,
        pinned_version=settings.active_model,
    )
    sync.start()
    app.state.model_sync = sync
    try:
        yield
    finally:
        await anyio.to_thread.run_sync(sync.stop)
        await anyio.to_thread.run_sync(persistence.close)
        app.state.cache.close()


def create_app(settings: Settings) -> FastAPI:
    """A new app with its own holder, metrics registry and (at startup) cache."""
    logging.getLogger("app").setLevel(settings.log_level.upper())
    app = FastAPI(
        title="tanp-rec",
        summary="Cold-start artist recommendations from a handful of ratings (TaNP).",
        version="1",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.metrics = Metrics()
    app.state.holder = ModelHolder(models_dir=settings.models_dir, device=settings.device)
    app.state.request_log = NullRequestLog()
    app.state.persistence = None
    app.state.session_factory = None
    app.state.model_sync = None
    app.state.startup_error = "model still loading"
    app.state.db_status = "unknown"
    install_error_handlers(app)
    app.include_router(recommend.router)
    app.include_router(items.router)
    app.include_router(health.router)
    app.include_router(admin.router)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Content-Type", "Authorization", "X-Request-ID"],
            expose_headers=["X-Request-ID"],
        )
    # Added last so it runs outermost: ids and size limits apply to CORS replies too.
    app.add_middleware(
        ServiceMiddleware, max_body_bytes=settings.max_body_bytes, metrics=app.state.metrics
    )
    if STATIC_DIR.is_dir():
        # Mounted after every API route so "/" never shadows them.
        app.mount("/", StaticFiles(directory=STATIC_DIR, html=True), name="static")
    return app


def create_app_from_env() -> FastAPI:
    """uvicorn factory (`app.main:create_app_from_env`): settings from the environment."""
    settings = Settings()
    if settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    return create_app(settings)
