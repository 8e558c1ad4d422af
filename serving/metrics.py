"""Prometheus metrics of a serving replica (requests and latency come from the
instrumentator; these are the model server's own)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

BREAKER_STATES = {"closed": 0, "half_open": 1, "open": 2}


class ServingMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.cache_hits = Gauge("model_cache_hits", "Cache hits since start.", registry=registry)
        self.cache_misses = Gauge("model_cache_misses", "Cache misses since start.",
                                  registry=registry)
        self.evictions = Gauge("model_cache_evictions", "Models evicted (LRU or byte budget).",
                               registry=registry)
        self.cached_models = Gauge("model_cache_models", "Models in the cache.",
                                   registry=registry)
        self.load_seconds = Histogram(
            "model_load_seconds", "Model load time by source.", ["source"], registry=registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
        )
        self.breaker_state = Gauge("registry_breaker_state",
                                   "Registry breaker: 0 closed, 1 half-open, 2 open.",
                                   registry=registry)
        self.breaker_transitions = Counter("registry_breaker_transitions_total",
                                           "Breaker state changes.", ["to"], registry=registry)
        self.anomalies = Counter("anomalies_flagged_total", "Points flagged anomalous.",
                                 ["confidence"], registry=registry)
        self.points = Counter("points_scored_total", "Points scored.", ["confidence"],
                              registry=registry)
        self.stale_models = Gauge(
            "stale_cached_models",
            "Cached series whose version differs from the registry's production alias "
            "(-1: unknown, registry unreachable).", registry=registry)
        self.inference_seconds = Histogram(
            "inference_seconds", "Scoring time of a request.", ["kind"], registry=registry,
            buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1),
        )

        self.shadow_models = Gauge("shadow_models", "Series scored by a shadow candidate too.",
                                   registry=registry)
        self.shadow_points = Counter(
            "shadow_points_total", "Points scored by a series' shadow (while it is evaluated).",
            ["series_id"], registry=registry)
        self.shadow_agreements = Counter(
            "shadow_agreements_total", "Points where shadow and production flag alike.",
            ["series_id"], registry=registry)
        self.shadow_seconds = Histogram(
            "shadow_comparison_seconds", "Scoring time of a shadowed request, by model.",
            ["model"], registry=registry,
            buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1),
        )
        self.shadow_skipped = Counter(
            "shadow_skipped_total", "Requests not shadowed: too many shadow scorings pending.",
            registry=registry)
        self.shadow_errors = Counter(
            "shadow_errors_total", "Shadow scorings that failed (the candidate did not load).",
            registry=registry)

    def sync_cache(self, stats) -> None:
        """The cache counts for itself; these gauges mirror it when metrics are read."""
        self.cache_hits.set(stats.hits)
        self.cache_misses.set(stats.misses)
        self.evictions.set(stats.evictions)
        self.cached_models.set(stats.size)

    def breaker_changed(self, _name: str, _old: str, new: str) -> None:
        self.breaker_state.set(BREAKER_STATES[new])
        self.breaker_transitions.labels(new).inc()
