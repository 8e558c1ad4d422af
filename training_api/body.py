"""Reading and parsing a fit body without one Python object per point.

simdjson parses the document and hands the two arrays over as typed buffers that numpy
views directly; only `config` and `metadata` become Python objects. A body that simdjson
refuses is parsed again by the standard library only to say precisely what is wrong
(Python clients send NaN and Infinity, which JSON does not allow).
"""

from __future__ import annotations

import json
import sys
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
import simdjson
from pydantic import ValidationError

from core.contracts import JobMetadata, TrainingConfig
from core.errors import InvalidInput, InvalidTimestamp, MalformedBody
from core.validation import validate_training_data

_parsers = threading.local()  # a simdjson parser holds one document at a time
_TOP_LEVEL = {"training_data", "config", "metadata"}
_ARRAYS = {"timestamps", "values"}


@dataclass(frozen=True)
class FitBody:
    timestamps: np.ndarray
    values: np.ndarray
    config: TrainingConfig
    metadata: JobMetadata


def parse_fit_body(raw: bytes) -> FitBody:
    """Parse and validate a fit body; raise a typed error naming the first problem."""
    try:
        doc = _parser().parse(raw)
    except (ValueError, RuntimeError):  # RuntimeError: simdjson's depth and bigint limits
        return _explain_rejected_json(raw)
    try:
        if not isinstance(doc, simdjson.Object):
            raise InvalidInput("the body must be a JSON object")
        _refuse_duplicate_keys(doc, "")
        unknown = set(doc.keys()) - _TOP_LEVEL
        if unknown:
            raise InvalidInput(f"unknown fields: {sorted(unknown)}; expected {sorted(_TOP_LEVEL)}")
        data = doc.get("training_data")
        if not isinstance(data, simdjson.Object):
            raise InvalidInput(
                'training_data must be an object {"timestamps": [...], "values": [...]}'
            )
        _refuse_duplicate_keys(data, "training_data.")
        if set(data.keys()) != _ARRAYS:
            raise InvalidInput(f"training_data must have exactly the fields {sorted(_ARRAYS)}")
        timestamps = _int_array(data["timestamps"])
        values = _float_array(data["values"])
        config = _small_object(doc, "config", TrainingConfig)
        metadata = _small_object(doc, "metadata", JobMetadata)
        _refuse_nested_arrays(raw, doc, data)
    finally:
        del doc
    validate_training_data(timestamps, values)
    return FitBody(timestamps, values, config, metadata)


def _parser() -> simdjson.Parser:
    """This thread's parser, or a new one while a traceback still holds the old document."""
    parser = getattr(_parsers, "parser", None)
    if parser is None or sys.getrefcount(parser) > 3:
        parser = _parsers.parser = simdjson.Parser()
    return parser


def _flat(node: Any, field: str) -> simdjson.Array:
    if not isinstance(node, simdjson.Array):
        raise InvalidInput(f"training_data.{field} must be an array of numbers")
    return node


def _int_array(node: Any) -> np.ndarray:
    array = _flat(node, "timestamps")
    try:
        out = np.frombuffer(array.as_buffer(of_type="i"), dtype=np.int64).copy()
    except (TypeError, ValueError) as exc:
        raise InvalidTimestamp(
            "timestamps must be integer Unix seconds within int64 (no decimals, strings or nulls)"
        ) from exc
    return out


def _float_array(node: Any) -> np.ndarray:
    array = _flat(node, "values")
    try:
        out = np.frombuffer(array.as_buffer(of_type="d"), dtype=np.float64).copy()
    except (TypeError, ValueError) as exc:
        raise InvalidInput("values must be numbers (no strings, booleans or nulls)") from exc
    return out


def _refuse_nested_arrays(raw: bytes, doc: simdjson.Object, data: simdjson.Object) -> None:
    """as_buffer flattens [[1], [2]]; refuse it without touching each element.

    Counting brackets in the raw body is cheap; only when there are more than the two
    arrays and the small objects account for are the elements looked at one by one.
    """
    expected = 2 + sum(doc[key].mini.count(b"[") for key in ("config", "metadata") if key in doc)
    if raw.count(b"[") <= expected:
        return
    for field in sorted(_ARRAYS):
        if any(isinstance(item, simdjson.Array | simdjson.Object) for item in data[field]):
            error = InvalidTimestamp if field == "timestamps" else InvalidInput
            raise error(f"training_data.{field} must be a flat array of numbers")


def _refuse_duplicate_keys(node: simdjson.Object, where: str, nested: bool = False) -> None:
    """simdjson keeps both of a repeated key and reads the first; the standard library keeps
    the last. Stored training data must not depend on which: a repeated key is refused."""
    keys = list(node.keys())
    if len(keys) != len(set(keys)):
        repeated = sorted({k for k in keys if keys.count(k) > 1})
        raise InvalidInput(f"repeated keys in {where.rstrip('.') or 'the body'}: {repeated}")
    if nested:
        for key in keys:
            child = node[key]
            if isinstance(child, simdjson.Object):
                _refuse_duplicate_keys(child, f"{where}{key}.", nested=True)


def _small_object(doc: simdjson.Object, field: str, model: type) -> Any:
    node = doc.get(field)
    if node is None:
        return model()
    if not isinstance(node, simdjson.Object):
        raise InvalidInput(f"{field} must be an object")
    _refuse_duplicate_keys(node, f"{field}.", nested=True)
    try:
        return model.model_validate(node.as_dict())
    except ValidationError as exc:
        raise InvalidInput(
            f"invalid {field}: {exc.error_count()} problem(s)",
            details=[
                {"field": ".".join(str(p) for p in (field, *err["loc"])), "message": err["msg"]}
                for err in exc.errors(include_url=False, include_input=False)
            ],
        ) from None


def _explain_rejected_json(raw: bytes) -> FitBody:
    """simdjson refused the body; find out why, slowly, since this is the error path."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedBody(f"the body is not UTF-8: {exc.reason} at byte {exc.start}") from None
    try:
        parsed = json.loads(text)  # accepts NaN, Infinity and 1e999 (as inf)
    except RecursionError:
        raise MalformedBody("the body is nested too deeply to be parsed") from None
    except json.JSONDecodeError as exc:
        raise MalformedBody(
            f"the body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
            details=[{"line": exc.lineno, "column": exc.colno, "position": exc.pos}],
        ) from None
    data = parsed.get("training_data") if isinstance(parsed, dict) else None
    if isinstance(data, dict):
        try:
            timestamps = np.asarray(data.get("timestamps"), dtype=np.int64)
        except OverflowError:  # integers beyond int64 are valid JSON but not timestamps
            raise InvalidTimestamp("timestamps must be integer Unix seconds within int64") from None
        except (TypeError, ValueError):
            timestamps = None
        try:
            values = np.asarray(data.get("values"), dtype=np.float64)
        except (TypeError, ValueError, OverflowError):
            values = None
        if timestamps is None:
            values = None
        if values is not None and values.ndim == timestamps.ndim == 1:
            validate_training_data(timestamps, values)  # names the first broken rule
    raise MalformedBody("the body is not valid JSON (NaN, Infinity and huge numbers are not JSON)")
