"""The request bodies of the predict routes, for the OpenAPI document only.

Bodies are parsed by orjson into arrays (serving/scoring.py), not by FastAPI, so these models
never validate a request; they tell clients (and the schemathesis fuzz tests) what to send.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from serving.scoring import MAX_POINTS

_INT64_MAX = 2**63 - 1


class Point(BaseModel):
    model_config = ConfigDict(extra="forbid")

    timestamp: int = Field(ge=1, le=_INT64_MAX, description="Unix seconds.")
    value: float = Field(description="A finite number.")


class PointRows(BaseModel):
    model_config = ConfigDict(extra="forbid")

    data: list[Point] = Field(min_length=1, max_length=MAX_POINTS)


class PointColumns(BaseModel):
    model_config = ConfigDict(extra="forbid")

    timestamps: list[int] = Field(min_length=1, max_length=MAX_POINTS)
    values: list[float] = Field(min_length=1, max_length=MAX_POINTS)


def request_body(*models: type[BaseModel]) -> dict[str, Any]:
    """`openapi_extra` of a route whose JSON body is one of `models` (schemas inlined)."""
    schemas = [_inline(model) for model in models]
    schema = schemas[0] if len(schemas) == 1 else {"oneOf": schemas}
    return {"requestBody": {"required": True,
                            "content": {"application/json": {"schema": schema}}}}


def _inline(model: type[BaseModel]) -> dict[str, Any]:
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})
    for field in schema.get("properties", {}).values():
        ref = field.get("items", {}).get("$ref", "")
        if ref:
            field["items"] = defs[ref.rsplit("/", 1)[-1]]
    return schema
