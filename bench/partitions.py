"""Benchmark of the Dagster side at fleet scale: where do the `series` partitions bend?

Builds a real Dagster instance (a copy of dagster.yaml: SQLite storage under a temporary
DAGSTER_HOME) and grows it to each scale in `--scales` (default 1,000, 10,000 and 100,000
partitions of the `series` dynamic partitions definition, keys `sensor_NNNNNN_{axis}`):

- partitions are added with `instance.add_dynamic_partitions` in chunks of 10,000;
- `--materialized` (10 %) of them get an `anomaly_model` materialization, recorded with
  `instance.report_runless_asset_event` (what the sensor daemon does with the sensor's
  asset events; the index rows the UI reads are the same as a run's);
- the run storage gets one finished batch run per `--max-jobs-per-run` (25) partitions,
  tagged like the sensor's runs (run key, job ids, priorities): a week in which every
  series was trained once.

At each scale it measures:

1. **Sensor tick.** A private RabbitMQ node and the training API (uvicorn) run beside the
   instance. Per tick, `--jobs-per-tick` (25) fits are posted (`--new-per-tick` of them for
   series that have no partition yet, the others for existing ones), so the job rows, the
   Parquet files and the messages are the real ones. Then `training_jobs_sensor` is
   evaluated in this process through `dagster.build_sensor_context(instance=...,
   resources=...)` with the real resources, and what the sensor daemon does with its
   result is done the way the daemon does it (dagster/_daemon/sensor.py): each asset event
   reported, `has_dynamic_partition` per requested key then `add_dynamic_partitions`, one
   `get_runs` per run key, then the run is added to the run storage (a not-started run
   that nothing launches; the daemon also stores the job's snapshots, whose cost does not
   depend on partitions). The messages of the previous tick come back in the next one and are
   acknowledged after their run-key lookup, so a measured tick holds 25 new jobs and 25
   acknowledgements, the steady state. The first tick of each scale is not counted.
   Reported: the whole tick, the sensor evaluation (queue reads, job store, Parquet spans,
   `get_existing_dynamic_partitions`, run-key lookups) and the daemon's share, with the
   calls that could scale with partitions or runs timed on their own.
2. **UI queries** against a running dagster-webserver on the same instance, sent as the UI
   sends them (text taken from the webserver's bundle): `PartitionHealthQuery` (the asset
   page's partition bar: every key plus the materialized/failed/materializing lists),
   `FullPartitionsQuery` (the list of partition keys) and the asset catalog's
   `partitionStats`. The first query after the instance grew (which refreshes Dagster's
   asset status cache) is reported apart from the median of the next `--repeats`.
3. In this process: listing every key (`get_dynamic_partitions`) and the set of
   materialized partitions (`get_materialized_partitions`).

It prints a table per scale; the last line is one JSON object.

    .venv/bin/python bench/partitions.py [--scales 1000,10000,100000] [--ticks 5]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.integration.services import Dagster, RabbitMQ, TrainingApi, wait_until  # noqa: E402

# Other than the tests', the local stack's and bench/training.py's ports.
AMQP_PORT, MGMT_PORT, API_PORT, DAGSTER_PORT = 5712, 15712, 8070, 3030
AXES = ("radial", "axial", "tangential")
CHUNK = 10_000
START = 1_733_000_000
MODEL = "anomaly_model"

# As the Dagster UI (dagster-webserver 1.13) sends them.
PARTITION_HEALTH_QUERY = """query PartitionHealthQuery($assetKey: AssetKeyInput!) {
    assetNodeOrError(assetKey: $assetKey) {
      ... on AssetNode {
        id
        partitionKeysByDimension {
          name
          type
          partitionKeys
        }
        assetPartitionStatuses {
          ... on TimePartitionStatuses {
            ranges {
              status
              startTime
              endTime
              startKey
              endKey
            }
          }
          ... on DefaultPartitionStatuses {
            materializedPartitions
            materializingPartitions
            failedPartitions
          }
          ... on MultiPartitionStatuses {
            primaryDimensionName
            ranges {
              primaryDimStartKey
              primaryDimEndKey
              primaryDimStartTime
              primaryDimEndTime
              secondaryDim {
                ... on TimePartitionStatuses {
                  ranges {
                    status
                    startTime
                    endTime
                    startKey
                    endKey
                  }
                }
                ... on DefaultPartitionStatuses {
                  materializedPartitions
                  materializingPartitions
                  failedPartitions
                }
              }
            }
          }
        }
      }
    }
  }"""
FULL_PARTITIONS_QUERY = """query FullPartitionsQuery($assetKey: AssetKeyInput!) {
    assetNodeOrError(assetKey: $assetKey) {
      ... on AssetNode {
        id
        partitionKeysByDimension {
          name
          type
          partitionKeys
        }
      }
    }
  }"""
PARTITION_STATS_QUERY = """query AssetStaleStatusQuery($assetKeys: [AssetKeyInput!]!) {
    assetNodes(assetKeys: $assetKeys) {
      id
      assetKey {
        path
      }
      isMaterializable
      staleStatus
      partitionStats {
        numMaterialized
        numMaterializing
        numPartitions
        numFailed
      }
    }
  }"""
UI_QUERIES = {
    "partition_health": (PARTITION_HEALTH_QUERY, {"assetKey": {"path": [MODEL]}}),
    "partition_keys": (FULL_PARTITIONS_QUERY, {"assetKey": {"path": [MODEL]}}),
    "partition_stats": (PARTITION_STATS_QUERY, {"assetKeys": [{"path": [MODEL]}]}),
}


def series_key(i: int) -> str:
    return f"sensor_{i // 3:06d}_{AXES[i % 3]}"


def fit_body(points: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    return orjson.dumps(
        {
            "training_data": {
                "timestamps": np.arange(START, START + 300 * points, 300),
                "values": 0.3 + 0.05 * rng.standard_normal(points),
            }
        },
        option=orjson.OPT_SERIALIZE_NUMPY,
    )


class Timings:
    """Wall time spent in chosen methods of an object, by name, since the last reset."""

    def __init__(self) -> None:
        self.spent: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)

    def wrap(self, obj: object, name: str) -> None:
        inner = getattr(obj, name)

        def timed(*args, **kwargs):
            started = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                self.spent[name] += time.perf_counter() - started
                self.calls[name] += 1

        setattr(obj, name, timed)

    def reset(self) -> None:
        self.spent.clear()
        self.calls.clear()


def timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


class Bench:
    def __init__(self, work: Path, args: argparse.Namespace) -> None:
        self.args = args
        state = work / "state"
        state.mkdir()
        self.broker = RabbitMQ(work / "rabbitmq", AMQP_PORT, MGMT_PORT)
        self.api = TrainingApi(
            state,
            API_PORT,
            {
                "RABBITMQ_URL": self.broker.url,
                "LOG_LEVEL": "WARNING",
                "OUTBOX_POLL_S": "0.2",
                "FIT_RATE_LIMIT": "1000/minute",  # the same series may come back in a tick
            },
        )
        self.dagster = Dagster(
            work / "dagster_home",
            DAGSTER_PORT,
            {"STATE_DIR": str(state), "RABBITMQ_URL": self.broker.url},
        )
        self.state = state
        self.partitions = 0  # keys series_key(0 .. partitions-1) exist
        self.materialized = 0
        self.history_runs = 0
        self.new_series = 0
        self.timings = Timings()
        self.instance = None
        self.rng = np.random.default_rng(0)

    # -- services ---------------------------------------------------------------------

    def start(self) -> None:
        self.broker.start()
        self.api.start()
        os.environ["DAGSTER_HOME"] = str(self.dagster.home)
        import dagster as dg

        self.instance = dg.DagsterInstance.get()  # creates the storage before the webserver
        # Only the webserver: the sensor is evaluated here, and no run may be launched.
        self.dagster.webserver.start()
        wait_until(self._webserver_loaded, 180, "dagster-webserver and its code location")
        for name in (
            "get_existing_dynamic_partitions",
            "has_dynamic_partition",
            "add_dynamic_partitions",
            "get_runs",
            "get_runs_count",
            "report_runless_asset_event",
            "add_run",
        ):
            self.timings.wrap(self.instance, name)

    def _webserver_loaded(self) -> bool:
        proc = self.dagster.webserver.proc
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"dagster-webserver exited:\n{self.dagster.webserver.log_tail()}")
        try:
            data = self.dagster.graphql(
                "{ workspaceOrError { ... on Workspace { locationEntries {"
                " locationOrLoadError { __typename } } } } }",
                timeout=3,
            )
        except httpx.HTTPError:
            return False
        entries = data["workspaceOrError"]["locationEntries"]
        return bool(entries) and all(
            e["locationOrLoadError"]["__typename"] == "RepositoryLocation" for e in entries
        )

    def stop(self) -> None:
        for stop in (self.dagster.webserver.stop, self.api.stop, self.broker.stop):
            try:
                stop()
            except Exception as exc:  # stop the others whatever happens to one
                sys.stderr.write(f"stopping: {exc}\n")

    # -- growing the instance -----------------------------------------------------------

    def grow(self, target: int) -> dict:
        import dagster as dg
        from dagster._core.storage.dagster_run import DagsterRun, DagsterRunStatus
        from dagster._core.storage.tags import RUN_KEY_TAG, SENSOR_NAME_TAG

        from pipelines.jobs import JOB_IDS_TAG, PRIORITY_TAG
        from pipelines.partitions import SERIES

        first = self.partitions
        keys = [series_key(i) for i in range(first, target)]
        add_s = 0.0
        for start in range(0, len(keys), CHUNK):
            add_s += timed(
                lambda s=start: self.instance.add_dynamic_partitions(SERIES, keys[s : s + CHUNK])
            )
        self.partitions = target

        step = max(1, round(1 / self.args.materialized))
        to_materialize = [k for i, k in enumerate(keys, start=first) if i % step == 0]
        began = time.perf_counter()
        for key in to_materialize:
            self.instance.report_runless_asset_event(
                dg.AssetMaterialization(MODEL, partition=key, metadata={"version": 1})
            )
        events_s = time.perf_counter() - began
        self.materialized += len(to_materialize)

        runs_target = target // self.args.max_jobs_per_run
        began = time.perf_counter()
        for _ in range(self.history_runs, runs_target):
            job_ids = [str(uuid.uuid4()) for _ in range(self.args.max_jobs_per_run)]
            self.instance.add_run(
                DagsterRun(
                    job_name="train_models_job",
                    run_id=str(uuid.uuid4()),
                    status=DagsterRunStatus.SUCCESS,
                    tags={
                        RUN_KEY_TAG: "batch-" + uuid.uuid4().hex,
                        SENSOR_NAME_TAG: "training_jobs_sensor",
                        JOB_IDS_TAG: ",".join(job_ids),
                        PRIORITY_TAG: "normal",
                        "dagster/priority": "0",
                        "adp/kind": "training",
                    },
                )
            )
        runs_s = time.perf_counter() - began
        added_runs = max(0, runs_target - self.history_runs)
        self.history_runs = max(self.history_runs, runs_target)
        return {
            "added_partitions": len(keys),
            "add_partitions_s": round(add_s, 2),
            "added_materializations": len(to_materialize),
            "add_materializations_s": round(events_s, 2),
            "added_runs": added_runs,
            "add_runs_s": round(runs_s, 2),
        }

    # -- sensor ticks -------------------------------------------------------------------

    def post_fits(self, scale: int, tick: int) -> None:
        count, new = self.args.jobs_per_tick, self.args.new_per_tick
        existing = self.rng.choice(self.partitions, size=count - new, replace=False)
        series = [series_key(int(i)) for i in existing]
        series += [f"new_{scale}_{tick}_{j}" for j in range(new)]
        self.new_series += new
        with httpx.Client(base_url=self.api.base_url, timeout=60) as client:
            for j, series_id in enumerate(series):
                r = client.post(
                    f"/fit/{series_id}",
                    content=fit_body(self.args.points, seed=scale * 1000 + tick * 100 + j),
                    headers={"content-type": "application/json"},
                )
                if r.status_code != 202:
                    raise RuntimeError(f"fit answered {r.status_code}: {r.text[:300]}")
            wait_until(
                lambda: client.get("/health").json()["outbox_backlog"] == 0, 30, "outbox drained"
            )

    def tick(self) -> dict:
        """One tick: the sensor's evaluation, then what the sensor daemon does with it."""
        import dagster as dg
        from dagster._core.storage.dagster_run import DagsterRun, DagsterRunStatus
        from dagster._core.storage.tags import RUN_KEY_TAG, SENSOR_NAME_TAG

        from pipelines.resources import BrokerResource, JobStoreResource, TrainingDataResource
        from pipelines.sensors import training_jobs_sensor

        resources = {
            "broker": BrokerResource(url=self.broker.url),
            "jobs": JobStoreResource(url=f"sqlite:///{self.state / 'jobs.db'}"),
            "data": TrainingDataResource(root=str(self.state / "data")),
        }
        self.timings.reset()
        began = time.perf_counter()
        with dg.build_sensor_context(instance=self.instance, resources=resources) as context:
            result = training_jobs_sensor(context)
        evaluated = time.perf_counter()
        sensor_timings = dict(self.timings.spent)
        self.timings.reset()
        if not isinstance(result, dg.SensorResult):
            raise RuntimeError(f"the sensor skipped: {result}")
        # The sensor daemon's handling of the result (dagster/_daemon/sensor.py).
        for event in result.asset_events or []:
            self.instance.report_runless_asset_event(event)
        for request in result.dynamic_partitions_requests or []:
            missing = [
                key
                for key in request.partition_keys
                if not self.instance.has_dynamic_partition(request.partitions_def_name, key)
            ]
            if missing:
                self.instance.add_dynamic_partitions(request.partitions_def_name, missing)
        existing = {
            r.run_key
            for r in result.run_requests or []
            if self.instance.get_runs(filters=dg.RunsFilter(tags={RUN_KEY_TAG: r.run_key}))
        }
        for request in result.run_requests or []:
            if request.run_key in existing:
                continue
            self.instance.add_run(
                DagsterRun(
                    job_name="train_models_job",
                    run_id=str(uuid.uuid4()),
                    run_config=request.run_config,
                    # started, as a launched run is by the next tick: a pending one makes
                    # the sensor hold new jobs back for a bigger batch
                    status=DagsterRunStatus.STARTED,
                    tags={
                        **request.tags,
                        RUN_KEY_TAG: request.run_key,
                        SENSOR_NAME_TAG: "training_jobs_sensor",
                    },
                )
            )
        done = time.perf_counter()
        daemon = self.timings.spent
        return {
            "tick_s": done - began,
            "sensor_eval_s": evaluated - began,
            "daemon_s": done - evaluated,
            "existing_partitions_lookup_s": sensor_timings.get(
                "get_existing_dynamic_partitions", 0.0
            ),
            "sensor_run_key_lookups_s": sensor_timings.get("get_runs_count", 0.0),
            "daemon_run_key_lookups_s": daemon.get("get_runs", 0.0),
            "daemon_partition_requests_s": daemon.get("has_dynamic_partition", 0.0)
            + daemon.get("add_dynamic_partitions", 0.0),
            "daemon_asset_events_s": daemon.get("report_runless_asset_event", 0.0),
            "run_requests": len(result.run_requests or []),
            "asset_events": len(result.asset_events or []),
        }

    def queue_depth(self) -> int:
        import asyncio

        import aio_pika

        from core.topology import JOBS_QUEUE

        async def depth() -> int:
            connection = await aio_pika.connect(self.broker.url)
            async with connection:
                channel = await connection.channel()
                queue = await channel.declare_queue(JOBS_QUEUE, passive=True)
                return queue.declaration_result.message_count or 0

        return asyncio.run(depth())

    def ticks(self, scale: int) -> dict:
        samples: list[dict] = []
        depths = []
        for t in range(self.args.ticks + 1):
            self.post_fits(scale, t)
            sample = self.tick()
            depths.append(self.queue_depth())
            if t > 0:  # the first tick of a scale follows the growth of the instance
                samples.append(sample)
        out = {}
        for key in samples[0]:
            values = [s[key] for s in samples]
            if key.endswith("_s"):
                out[f"{key[:-2]}_p50_s"] = round(statistics.median(values), 4)
            else:
                out[key] = round(statistics.mean(values), 1)
        out["tick_max_s"] = round(max(s["tick_s"] for s in samples), 4)
        out["queue_depth_after_tick"] = max(depths[1:])  # the tick's new jobs only
        return out

    # -- the UI's queries ---------------------------------------------------------------

    def ui_queries(self) -> dict:
        out: dict = {}
        url = f"{self.dagster.url}/graphql"
        with httpx.Client(timeout=600) as client:
            for name, (query, variables) in UI_QUERIES.items():
                seconds, size, data = [], 0, None
                for _ in range(self.args.repeats + 1):
                    began = time.perf_counter()
                    r = client.post(url, json={"query": query, "variables": variables})
                    seconds.append(time.perf_counter() - began)
                    r.raise_for_status()
                    body = r.json()
                    if body.get("errors"):
                        raise RuntimeError(f"{name}: {body['errors']}")
                    size, data = len(r.content), body["data"]
                out[f"ui_{name}_first_s"] = round(seconds[0], 3)
                out[f"ui_{name}_p50_s"] = round(statistics.median(seconds[1:]), 3)
                out[f"ui_{name}_kb"] = round(size / 1024, 1)
                self._check(name, data)
        return out

    def _check(self, name: str, data: dict) -> None:
        """The answers must describe the instance as built, or the timings mean nothing."""
        total = self.partitions + self.new_series
        if name == "partition_health":
            node = data["assetNodeOrError"]
            keys = node["partitionKeysByDimension"][0]["partitionKeys"]
            done = node["assetPartitionStatuses"]["materializedPartitions"]
            if len(keys) != total or len(done) != self.materialized:
                raise RuntimeError(
                    f"partition health: {len(keys)} keys, {len(done)} materialized; "
                    f"expected {total}, {self.materialized}"
                )
        elif name == "partition_stats":
            stats = data["assetNodes"][0]["partitionStats"]
            if stats["numPartitions"] != total or stats["numMaterialized"] != self.materialized:
                raise RuntimeError(f"partition stats: {stats}")

    def in_process(self) -> dict:
        import dagster as dg

        from pipelines.partitions import SERIES

        key = dg.AssetKey(MODEL)
        return {
            "list_keys_in_process_s": round(
                timed(lambda: self.instance.get_dynamic_partitions(SERIES)), 3
            ),
            "materialized_set_in_process_s": round(
                timed(lambda: self.instance.get_materialized_partitions(key)), 3
            ),
        }


ROWS = [
    ("partitions added / seconds", "added_partitions", "add_partitions_s"),
    ("materializations added / seconds", "added_materializations", "add_materializations_s"),
    ("runs added / seconds", "added_runs", "add_runs_s"),
    ("sensor tick p50 / max (s)", "tick_p50_s", "tick_max_s"),
    ("  sensor evaluation p50 (s)", "sensor_eval_p50_s", None),
    ("    get_existing_dynamic_partitions", "existing_partitions_lookup_p50_s", None),
    ("    run-key lookups (sensor)", "sensor_run_key_lookups_p50_s", None),
    ("  daemon's handling p50 (s)", "daemon_p50_s", None),
    ("    asset events reported", "daemon_asset_events_p50_s", None),
    ("    partition requests", "daemon_partition_requests_p50_s", None),
    ("    run-key lookups (daemon)", "daemon_run_key_lookups_p50_s", None),
    ("  runs requested / asset events", "run_requests", "asset_events"),
    ("  messages left after a tick", "queue_depth_after_tick", None),
    ("UI partition health 1st / p50", "ui_partition_health_first_s", "ui_partition_health_p50_s"),
    ("  response size (KB)", "ui_partition_health_kb", None),
    ("UI partition keys 1st / p50", "ui_partition_keys_first_s", "ui_partition_keys_p50_s"),
    ("UI partition stats 1st / p50", "ui_partition_stats_first_s", "ui_partition_stats_p50_s"),
    ("list keys in process (s)", "list_keys_in_process_s", None),
    ("materialized set in process (s)", "materialized_set_in_process_s", None),
]  # fmt: skip


def report(results: dict[int, dict]) -> None:
    for scale, figures in results.items():
        print(f"\n== {scale:,} partitions ({figures['materialized']:,} materialized, "
              f"{figures['runs']:,} runs)")
        for label, a, b in ROWS:
            value = f"{figures[a]}" + (f" / {figures[b]}" if b else "")
            print(f"{label:40s} {value}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--scales", default="1000,10000,100000", help="partition counts, ascending"
    )
    parser.add_argument("--materialized", type=float, default=0.1, help="share materialized")
    parser.add_argument("--ticks", type=int, default=5, help="measured sensor ticks per scale")
    parser.add_argument("--jobs-per-tick", type=int, default=25, help="fits posted per tick")
    parser.add_argument("--new-per-tick", type=int, default=5, help="of them for new series")
    parser.add_argument("--max-jobs-per-run", type=int, default=25, help="as MAX_JOBS_PER_RUN")
    parser.add_argument("--repeats", type=int, default=5, help="UI queries after the first")
    parser.add_argument("--points", type=int, default=10_000, help="points per fit")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args()
    scales = sorted(int(s) for s in args.scales.split(","))

    work = Path(tempfile.mkdtemp(prefix="adp-bench-partitions-"))
    work.chmod(0o755)  # the RabbitMQ node runs as its own user
    bench = Bench(work, args)
    results: dict[int, dict] = {}
    os.environ["MAX_JOBS_PER_RUN"] = str(args.max_jobs_per_run)
    try:
        bench.start()
        for scale in scales:
            figures = bench.grow(scale)
            figures |= bench.ticks(scale)
            figures |= bench.ui_queries()
            figures |= bench.in_process()
            figures |= {"materialized": bench.materialized, "runs": bench.history_runs}
            results[scale] = figures
            report({scale: figures})
    finally:
        bench.stop()
        if args.keep:
            sys.stderr.write(f"work folder kept: {work}\n")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print(json.dumps({"scales": {str(k): v for k, v in results.items()}}))


if __name__ == "__main__":
    main()
