"""Every Prometheus collector of the service, all named `tanp_*`, in one per-app registry.

`create_app` builds one `Metrics`; several apps in one process (tests) never share collectors.
Knows nothing about routes or models beyond the label values it is given.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

# Latency budgets are tens of milliseconds, so the buckets are dense below 100 ms.
LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5,
)  # fmt: skip

METRICS_CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    """The service's collectors, registered in a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "tanp_requests",
            "HTTP requests by route template, method and status code.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.request_latency = Histogram(
            "tanp_request_latency_seconds",
            "Wall time from the first byte of the request to the end of the response.",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.inference_latency = Histogram(
            "tanp_inference_latency_seconds",
            "Time in tanp.scoring per recommend request (encode on a miss, decode, sampling).",
            ["path"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.cache_hits = Counter(
            "tanp_cache_hits", "Task-embedding cache hits.", registry=self.registry
        )
        self.cache_misses = Counter(
            "tanp_cache_misses", "Task-embedding cache misses.", registry=self.registry
        )
        self.cache_errors = Counter(
            "tanp_cache_errors",
            "Cache backend failures (errors, timeouts); each one was served as a miss.",
            registry=self.registry,
        )
        self.model_info = Gauge(
            "tanp_model_info",
            "1 for the model version being served, labelled with its device.",
            ["version", "device"],
            registry=self.registry,
        )
        self.model_faults = Counter(
            "tanp_model_faults",
            "Requests the served model could not answer because it broke an invariant "
            "(non_finite: NaN or infinite scores; error: scoring raised).",
            ["version", "reason"],
            registry=self.registry,
        )
        self.request_log_failures = Counter(
            "tanp_request_log_failures",
            "Failed request-log writes to SQL; their rows stay spooled and are retried.",
            registry=self.registry,
        )
        self.request_log_dropped = Counter(
            "tanp_request_log_dropped",
            "Request-log rows lost: past the spool's bound (REQUEST_LOG_SPOOL_BYTES) or the "
            "memory queue's, or refused by a broken sink.",
            registry=self.registry,
        )
        self.overloaded = Counter(
            "tanp_overloaded",
            "Recommend calls refused with 503 because BATCH_MAX_PENDING calls already waited.",
            registry=self.registry,
        )
        self.admin_audit_sampled = Counter(
            "tanp_admin_audit_sampled",
            "Anonymous admin refusals (401/404) past AUDIT_ANONYMOUS_PER_MINUTE: logged, not "
            "written to the audit table.",
            registry=self.registry,
        )
        self.request_log_pending = Gauge(
            "tanp_request_log_pending_rows",
            "Request-log rows recorded but not yet in SQL (queued or spooled), this worker.",
            registry=self.registry,
        )

    def set_model(self, version: str | None, device: str | None) -> None:
        """Point the model info gauge at the version now served (none: no series)."""
        self.model_info.clear()
        if version is not None:
            self.model_info.labels(version=version, device=device or "unknown").set(1)

    def render(self) -> bytes:
        return generate_latest(self.registry)
