"""The typed application state: every long-lived object of one app, built by its lifespan.

`app.state.service` holds one `ServiceState`; routes reach its parts through the dependencies
in `app.api.deps`, never by attribute name on `app.state`. Knows nothing about how the parts
are built (that is `app.main`'s lifespan).
"""

from __future__ import annotations

from dataclasses import dataclass

from app.lifecycle.service import ModelService
from app.serving.cache import TaskStateCache
from app.serving.model import ModelHolder
from app.serving.questions import QuestionAsker
from app.serving.recommender import Recommender
from app.settings import Settings
from app.storage.audit_log import AuditLog
from app.storage.db import Database
from app.storage.request_log import SqlRequestLog
from app.telemetry import Metrics


@dataclass(frozen=True)
class ServiceState:
    settings: Settings
    metrics: Metrics
    holder: ModelHolder  # the model this worker serves (read once per request)
    models: ModelService  # start / activate / follow, registry and worker views
    cache: TaskStateCache
    database: Database
    request_log: SqlRequestLog
    audit_log: AuditLog
    recommender: Recommender
    questions: QuestionAsker  # POST /v1/onboarding/questions

    def close(self) -> None:
        """Blocking: stop the model threads, flush the request and audit logs, close DB and
        cache."""
        self.models.stop()
        self.recommender.close()
        self.request_log.close()
        self.audit_log.close()
        self.database.close()
        self.cache.close()
