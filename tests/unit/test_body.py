"""Parsing fit bodies into arrays, and the error each malformed body gets."""

import asyncio
import json
import time

import numpy as np
import orjson
import pytest

from core.contracts import Algorithm, Priority
from core.errors import (
    InvalidInput,
    InvalidTimestamp,
    MalformedBody,
    NonFiniteValue,
    PayloadTooLarge,
    RequestTimeout,
)
from core.http import read_limited
from training_api.body import parse_fit_body

N = 10_000


def body(**overrides) -> dict:
    rng = np.random.default_rng(1)
    doc = {
        "training_data": {
            "timestamps": list(range(1_700_000_000, 1_700_000_000 + 300 * N, 300)),
            "values": rng.normal(size=N).tolist(),
        }
    }
    doc.update(overrides)
    return doc


def test_arrays_and_defaults():
    doc = body()
    parsed = parse_fit_body(orjson.dumps(doc))
    assert parsed.timestamps.dtype == np.int64 and parsed.values.dtype == np.float64
    np.testing.assert_array_equal(parsed.timestamps, doc["training_data"]["timestamps"])
    np.testing.assert_array_equal(parsed.values, doc["training_data"]["values"])
    assert parsed.config.algorithm is Algorithm.STATISTICAL
    assert parsed.config.window_hours == 168
    assert parsed.config.hyperparameters == {"threshold_sigma": 3.0}
    assert parsed.metadata.priority is Priority.NORMAL


def test_integer_values_are_accepted_as_floats():
    doc = body()
    doc["training_data"]["values"] = [i % 7 for i in range(N)]
    assert parse_fit_body(orjson.dumps(doc)).values[8] == 1.0


def test_config_and_metadata():
    doc = body(
        config={
            "algorithm": "isolation_forest",
            "window_hours": 24,
            "hyperparameters": {"n_estimators": 50},
        },
        metadata={"triggered_by": "ops", "tags": ["a"], "priority": "high"},
    )
    parsed = parse_fit_body(orjson.dumps(doc))
    assert parsed.config.hyperparameters["n_estimators"] == 50
    assert parsed.config.hyperparameters["contamination"] == 0.01
    assert parsed.metadata.priority is Priority.HIGH


def test_a_parser_is_reused_after_an_error():
    with pytest.raises(InvalidTimestamp):
        parse_fit_body(b'{"training_data": {"timestamps": [1.5], "values": [1]}}')
    assert len(parse_fit_body(orjson.dumps(body())).values) == N


@pytest.mark.parametrize(
    ("doc", "error", "message"),
    [
        (
            {"training_data": {"timestamps": [1, "2"], "values": [1, 2]}},
            InvalidTimestamp,
            "integer",
        ),
        (
            {"training_data": {"timestamps": [1.0, 2.0], "values": [1, 2]}},
            InvalidTimestamp,
            "integer",
        ),
        (
            {"training_data": {"timestamps": [1, 2**63], "values": [1, 2]}},
            InvalidTimestamp,
            "int64",
        ),
        ({"training_data": {"timestamps": [[1], [2]], "values": [1, 2]}}, InvalidTimestamp, "flat"),
        ({"training_data": {"timestamps": [1, 2], "values": [1, [2, 3]]}}, InvalidInput, "flat"),
        ({"training_data": {"timestamps": [1], "values": [1], "x": 1}}, InvalidInput, "exactly"),
        ({"training_data": {"timestamps": [1, 2], "values": [1, None]}}, InvalidInput, "numbers"),
        ({"training_data": {"timestamps": [1, 2], "values": [True, 1]}}, InvalidInput, "numbers"),
        ({"training_data": {"timestamps": [1, 2], "values": "12"}}, InvalidInput, "array"),
        ({"training_data": [1, 2]}, InvalidInput, "training_data must be an object"),
        ({}, InvalidInput, "training_data must be an object"),
        (
            {"training_data": {"timestamps": [1], "values": [1]}, "extra": 1},
            InvalidInput,
            "unknown",
        ),
        ([1, 2], InvalidInput, "JSON object"),
    ],
)
def test_shape_errors(doc, error, message):
    with pytest.raises(error, match=message):
        parse_fit_body(json.dumps(doc).encode())


def test_unknown_hyperparameter_is_refused():
    doc = body(config={"algorithm": "robust", "hyperparameters": {"threshold_sigm": 3}})
    with pytest.raises(InvalidInput) as err:
        parse_fit_body(orjson.dumps(doc))
    assert err.value.details[0]["field"] == "config.threshold_sigm"


def test_nan_from_a_python_client_is_named():
    doc = body()
    doc["training_data"]["values"][42] = float("nan")
    with pytest.raises(NonFiniteValue, match=r"values\[42\]"):
        parse_fit_body(json.dumps(doc).encode())  # json.dumps writes NaN


@pytest.mark.parametrize("raw", [b"{", b"", b"\xff\xfe", b'{"a": 1} trailing', b"1e999"])
def test_malformed_json(raw):
    with pytest.raises(MalformedBody):
        parse_fit_body(raw)


async def _chunks(*parts: bytes):
    for part in parts:
        yield part


async def test_announced_size_is_refused_before_reading():
    async def never():
        raise AssertionError("read although Content-Length was too large")
        yield b""

    with pytest.raises(PayloadTooLarge) as err:
        await read_limited(never(), str(11 * 2**20), 10 * 2**20, 5)
    assert err.value.details[0]["limit_bytes"] == 10 * 2**20


async def test_streamed_size_is_cut_at_the_limit():
    with pytest.raises(PayloadTooLarge):
        await read_limited(_chunks(b"x" * 600, b"x" * 600), None, 1024, 5)
    assert await read_limited(_chunks(b"ab", b"cd"), "4", 1024, 5) == b"abcd"


async def test_a_trickling_body_is_cut_at_the_deadline():
    async def slow_loris():
        while True:
            yield b" "
            await asyncio.sleep(0.05)  # each byte is in time; the body never ends

    started = time.monotonic()
    with pytest.raises(RequestTimeout) as err:
        await read_limited(slow_loris(), None, 1024, 0.5)
    assert 0.5 <= time.monotonic() - started < 2
    assert err.value.status == 408 and err.value.headers == {"Connection": "close"}
    assert 5 <= err.value.details[0]["received_bytes"] <= 11


@pytest.mark.parametrize("raw", [
    b"[" * 100_000,  # simdjson refuses, the standard library would recurse to the end
    b'{"a":' * 5_000 + b"1" + b"}" * 5_000,  # simdjson's own depth limit
    b'{"training_data": {"timestamps": ' + b"[" * 3_000 + b"]" * 3_000 + b"}}",
])
def test_deep_nesting_is_a_malformed_body_not_a_crash(raw):
    with pytest.raises(MalformedBody):
        parse_fit_body(raw)


def test_repeated_keys_are_refused_at_every_level():
    good = json.dumps(body()["training_data"])
    for raw in (
        f'{{"training_data": {good}, "training_data": {good}}}',
        '{"training_data": ' + good.replace('"values"', '"timestamps": [1], "values"') + "}",
        f'{{"training_data": {good}, "config": {{"algorithm": "robust", "algorithm": "robust"}}}}',
        f'{{"training_data": {good}, "config": {{"hyperparameters": {{"a": 1, "a": 2}}}}}}',
        f'{{"training_data": {good}, "metadata": {{"tags": [], "tags": ["x"]}}}}',
    ):
        with pytest.raises(InvalidInput, match="repeated keys"):
            parse_fit_body(raw.encode())


@pytest.mark.parametrize("first", [2**63, 2**64, 10**30])
def test_timestamps_beyond_int64_are_invalid_timestamps(first):
    doc = body()
    doc["training_data"]["timestamps"][0] = first
    with pytest.raises(InvalidTimestamp, match="int64"):
        parse_fit_body(json.dumps(doc).encode())


def test_values_whose_statistics_overflow_are_refused():
    doc = body()
    doc["training_data"]["values"][:2] = [1e308, -1e308]
    with pytest.raises(NonFiniteValue, match="overflows"):
        parse_fit_body(json.dumps(doc).encode())
    doc["training_data"]["values"][:2] = [-0.0, 5e-324]  # tiny and signed zeros are numbers
    assert parse_fit_body(json.dumps(doc).encode()).values[0] == 0.0
