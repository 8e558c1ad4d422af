"""The code location loads, with what the UI, the daemon and the schedule expect."""

import dagster as dg

from pipelines.definitions import defs


def test_definitions_load_and_name_the_design():
    repo = defs.get_repository_def()
    assert {"train_models_job", "anomaly_model_job"} <= {j.name for j in repo.get_all_jobs()}
    assert {s.name for s in repo.sensor_defs} == {
        "training_jobs_sensor", "training_run_failed", "training_run_canceled"}
    assert [s.name for s in repo.schedule_defs] == ["retrain_models"]

    model = defs.get_assets_def("anomaly_model")
    assert model.partitions_def.name == "series"
    assert dg.AssetKey("training_data") in model.dependency_keys
    assert {c.name for c in model.check_specs} == {
        "training_data_valid", "model_loads_and_predicts", "anomaly_rate_plausible"}
    assert model.op.retry_policy.max_retries == 3
    for sensor in ("training_jobs_sensor", "training_run_failed"):
        assert repo.get_sensor_def(sensor).default_status == dg.DefaultSensorStatus.RUNNING
