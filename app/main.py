"""The FastAPI application: `create_app(settings)` and the lifespan that builds one
`ServiceState` (off the event loop), starts the startup model and the model threads, and closes
everything at shutdown. A missing or broken model does not stop the app: `/livez` answers,
`/readyz` and `/v1/recommend` say 503 with the reason.
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
from starlette.routing import Match, Mount, Router
from starlette.types import ASGIApp, Scope

from app.api.middleware import ServiceMiddleware
from app.api.routes import admin, health, items, questions, recommend
from app.errors import install_error_handlers
from app.lifecycle.broadcast import ModelBroadcast, worker_id
from app.lifecycle.service import ModelService
from app.server import die_with_parent
from app.serving.cache import ByteStore, MemoryCache, RedisCache, TaskStateCache
from app.serving.model import ModelHolder, ServingModel
from app.serving.pipeline import ScoringLimits
from app.serving.questions import QuestionAsker
from app.serving.recommender import AnswerMemo, Recommender
from app.settings import Settings
from app.state import ServiceState
from app.storage.audit_log import AuditLog
from app.storage.db import open_database
from app.storage.request_log import SqlRequestLog
from app.telemetry import Metrics

logger = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"


def build_cache(settings: Settings, metrics: Metrics) -> TaskStateCache:
    store: ByteStore
    if settings.redis_url:
        store = RedisCache(
            url=settings.redis_url,
            ttl_seconds=settings.cache_ttl_seconds,
            timeout_seconds=settings.redis_timeout_seconds,
            on_error=metrics.cache_errors.inc,
        )
    else:
        store = MemoryCache(ttl_seconds=settings.cache_ttl_seconds)
    return TaskStateCache(store, prefix=settings.broadcast_prefix)


def open_state(settings: Settings, metrics: Metrics) -> ServiceState:
    """Blocking, never raises for a down database or Redis: builds and wires every part,
    loads the startup model and starts the model threads."""
    cache = build_cache(settings, metrics)
    database = open_database(settings.database_url, migrate=settings.migrate_on_start)
    # REQUEST_LOG_SPOOL_BYTES bounds both spools of a worker together
    audit_bytes = settings.request_log_spool_bytes // 8
    request_log = SqlRequestLog(
        database.sessions,
        spool_dir=settings.spool_dir() / "request_log",
        spool_max_bytes=settings.request_log_spool_bytes - audit_bytes,
        on_failure=metrics.request_log_failures.inc,
        on_drop=metrics.request_log_dropped.inc,
    )
    audit_log = AuditLog(
        database.sessions,
        spool_dir=settings.spool_dir() / "admin_audit",
        spool_max_bytes=audit_bytes,
        anonymous_per_minute=settings.audit_anonymous_per_minute,
    )
    metrics.request_log_pending.set_function(request_log.pending)
    worker = worker_id()
    holder = ModelHolder()

    def on_swap(serving: ServingModel) -> None:
        metrics.set_model(serving.version, serving.device)

    models = ModelService(
        holder=holder,
        models_dir=settings.models_dir,
        device=settings.device,
        sessions=database.sessions,
        broadcast=(
            ModelBroadcast(
                redis_url=settings.redis_url,
                worker=worker,
                reconcile_seconds=settings.reconcile_seconds,
                key_prefix=settings.broadcast_prefix,
            )
            if settings.redis_url
            else None
        ),
        worker=worker,
        reconcile_seconds=settings.reconcile_seconds,
        registry_timeout_seconds=settings.registry_timeout_seconds,
        on_swap=on_swap,
        confirm_seconds=settings.reload_confirm_seconds,
    )
    models.start(pinned=settings.active_model)
    models.run_background()
    return ServiceState(
        settings=settings,
        metrics=metrics,
        holder=holder,
        models=models,
        cache=cache,
        database=database,
        request_log=request_log,
        audit_log=audit_log,
        recommender=Recommender(
            cache=cache,
            answers=(
                AnswerMemo(max_bytes=settings.answer_cache_bytes)
                if settings.answer_cache_bytes
                else None
            ),
            metrics=metrics,
            request_log=request_log,
            max_support=settings.max_support,
            limits=ScoringLimits(
                candidates=settings.candidates,
                full_scoring_max_items=settings.full_scoring_max_items,
                shortlist=settings.shortlist,
            ),
            max_batch=settings.batch_max_requests,
            max_pending=settings.batch_max_pending,
            on_model_fault=models.report_fault,
        ),
        questions=QuestionAsker(
            answers=(
                AnswerMemo(max_bytes=settings.answer_cache_bytes)
                if settings.answer_cache_bytes
                else None
            ),
            metrics=metrics,
            max_support=settings.max_support,
            on_model_fault=models.report_fault,
        ),
    )


def create_app(settings: Settings) -> FastAPI:
    """A new app with its own metrics registry; everything else is built by its lifespan."""
    logging.getLogger("app").setLevel(settings.log_level.upper())
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state = await anyio.to_thread.run_sync(open_state, settings, metrics)
        app.state.service = state
        try:
            yield
        finally:
            await anyio.to_thread.run_sync(state.close)

    app = FastAPI(
        title="tanp-rec",
        summary="Cold-start artist recommendations from a handful of ratings (TaNP).",
        version="1",
        lifespan=lifespan,
        # Swagger UI and ReDoc load their scripts from a CDN: off in production (API_DOCS)
        docs_url="/docs" if settings.api_docs else None,
        redoc_url="/redoc" if settings.api_docs else None,
    )
    install_error_handlers(app)
    app.include_router(recommend.router)
    app.include_router(questions.router)
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
    app.add_middleware(ServiceMiddleware, max_body_bytes=settings.max_body_bytes, metrics=metrics)
    if STATIC_DIR.is_dir():
        # Mounted after every API route so "/" never shadows them.
        app.router.routes.append(
            PageMount(app.router, app=StaticFiles(directory=STATIC_DIR, html=True), name="static")
        )
    return app


class PageMount(Mount):
    """The onboarding page's files at "/", behind the API: a path some API route serves under
    another method is left to the router, which answers 405 with `Allow` (a plain mount at
    "/" matches every path and would answer 404)."""

    def __init__(self, router: Router, *, app: ASGIApp, name: str) -> None:
        super().__init__("/", app=app, name=name)
        self._router = router

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        for route in self._router.routes:
            if route is not self and route.matches(scope)[0] != Match.NONE:
                return Match.NONE, {}
        return super().matches(scope)


def create_app_from_env() -> FastAPI:
    """uvicorn factory (`app.main:create_app_from_env`): settings from the environment."""
    die_with_parent()
    settings = Settings()
    if settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    return create_app(settings)
