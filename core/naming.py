"""Names that cross process boundaries: the series id rule and what is derived from it.

Anything that becomes a path, a queue name or a model name goes through
`require_series_id` first.
"""

from __future__ import annotations

import re

from core.errors import InvalidSeriesId

SERIES_ID_PATTERN = r"^[A-Za-z0-9_]{1,64}$"
# fullmatch, not match: "$" would also accept a trailing newline.
_SERIES_ID = re.compile(r"[A-Za-z0-9_]{1,64}")

MODEL_PREFIX = "model_od_"
PRODUCTION_ALIAS = "production"
SHADOW_ALIAS = "shadow"  # a candidate scored beside production, never answered with
EXPERIMENT_NAME = "anomaly-detection"


def is_valid_series_id(series_id: object) -> bool:
    return isinstance(series_id, str) and _SERIES_ID.fullmatch(series_id) is not None


def require_series_id(series_id: object) -> str:
    if not is_valid_series_id(series_id):
        shown = repr(series_id)[:80]
        raise InvalidSeriesId(
            f"series_id {shown} is invalid: use 1 to 64 ASCII letters, digits or underscores",
            details=[{"field": "series_id", "pattern": SERIES_ID_PATTERN}],
        )
    return series_id  # type: ignore[return-value]


def model_name(series_id: str) -> str:
    """Registered MLflow model name of a series."""
    return MODEL_PREFIX + require_series_id(series_id)
