"""Per-series fit rate limit, on the `limits` library (moving window).

Storage is in memory by default; a shared storage URI (redis://...) makes the limit hold
across API replicas.
"""

from __future__ import annotations

import math
import time

from limits import parse
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter

from core.errors import RateLimitExceeded


class FitRateLimiter:
    def __init__(self, limit: str, storage_uri: str = "memory://") -> None:
        self.limit = parse(limit)  # a bad expression fails the start
        self._limiter = MovingWindowRateLimiter(storage_from_string(storage_uri))

    def hit(self, series_id: str) -> None:
        """Count one fit for the series; raise RateLimitExceeded with a retry delay."""
        if self._limiter.hit(self.limit, "fit", series_id):
            return
        reset_at, _ = self._limiter.get_window_stats(self.limit, "fit", series_id)
        retry_after = max(1, math.ceil(reset_at - time.time()))
        raise RateLimitExceeded(
            f"series {series_id} may be fitted {self.limit.amount} times per "
            f"{self.limit.get_expiry()} s; retry in {retry_after} s",
            details=[{"limit": str(self.limit), "retry_after_s": retry_after}],
            headers={"Retry-After": str(retry_after)},
        )
