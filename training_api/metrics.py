"""Prometheus metrics of the training API (requests and latency come from the instrumentator)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class ApiMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.fits_accepted = Counter(
            "fits_accepted_total", "Fits answered 202 (new jobs).", registry=registry
        )
        self.fits_deduplicated = Counter(
            "fits_deduplicated_total", "Fits answered with an existing job.", registry=registry
        )
        self.fits_rejected = Counter(
            "fits_rejected_total", "Fits refused, by error code.", ["code"], registry=registry
        )
        self.outbox_backlog = Gauge(
            "outbox_backlog",
            "Job messages committed but not yet confirmed by the broker.",
            registry=registry,
        )
