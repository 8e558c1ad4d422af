import pytest

from core.errors import InvalidSeriesId
from core.naming import is_valid_series_id, model_name, require_series_id
from core.topology import completed_key, job_routing_key


@pytest.mark.parametrize("good", ["sensor_001_radial", "A", "a" * 64, "0_9"])
def test_valid_series_ids(good):
    assert require_series_id(good) == good


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "a" * 65,
        "../etc",
        "a/b",
        "a b",
        "sensör",
        "a.b",
        "a-b",
        "x\n",
        "a\x00b",
        "%2e%2e",
        None,
        5,
    ],
)
def test_invalid_series_ids(bad):
    assert not is_valid_series_id(bad)
    with pytest.raises(InvalidSeriesId):
        require_series_id(bad)


def test_derived_names():
    assert model_name("sensor_1") == "model_od_sensor_1"
    assert completed_key("sensor_1") == "training.completed.sensor_1"
    assert job_routing_key("high") == "training.job.priority"
    assert job_routing_key("normal") == "training.job.standard"
    with pytest.raises(InvalidSeriesId):
        model_name("a.b")
