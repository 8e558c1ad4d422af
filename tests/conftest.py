import uuid

import numpy as np
import pytest

N_POINTS = 10_000


def make_series(n: int = N_POINTS, seed: int | None = None) -> dict:
    """A valid training_data block: 5-minute samples of a noisy vibration level."""
    rng = np.random.default_rng(seed)
    start = 1_733_000_000
    return {
        "timestamps": list(range(start, start + 300 * n, 300)),
        "values": (0.3 + 0.05 * rng.standard_normal(n)).tolist(),
    }


@pytest.fixture
def series_id() -> str:
    return f"test_{uuid.uuid4().hex[:12]}"
