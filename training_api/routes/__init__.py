"""Routers of the training API, one module per resource."""

from core.contracts import ErrorBody


# Documents the error body for the statuses a route can answer.
def errors(*statuses: int) -> dict[int | str, dict]:
    return {status: {"model": ErrorBody} for status in statuses}
