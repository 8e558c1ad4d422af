"""Typed domain errors with their stable codes; the HTTP services map them in one place.

The status code lives with the error so every service answers the same code the same way.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any


class ErrorCode(StrEnum):
    INVALID_INPUT = "INVALID_INPUT"
    INVALID_SERIES_ID = "INVALID_SERIES_ID"
    INSUFFICIENT_DATA = "INSUFFICIENT_DATA"
    TOO_MANY_POINTS = "TOO_MANY_POINTS"
    CONSTANT_SERIES = "CONSTANT_SERIES"
    INVALID_TIMESTAMP = "INVALID_TIMESTAMP"
    NON_FINITE_VALUE = "NON_FINITE_VALUE"
    PAYLOAD_TOO_LARGE = "PAYLOAD_TOO_LARGE"
    UNSUPPORTED_MEDIA_TYPE = "UNSUPPORTED_MEDIA_TYPE"
    RATE_LIMIT_EXCEEDED = "RATE_LIMIT_EXCEEDED"
    REQUEST_TIMEOUT = "REQUEST_TIMEOUT"
    UNAUTHENTICATED = "UNAUTHENTICATED"
    FORBIDDEN = "FORBIDDEN"
    AUTH_UNAVAILABLE = "AUTH_UNAVAILABLE"
    JOB_NOT_FOUND = "JOB_NOT_FOUND"
    JOB_NOT_CANCELLABLE = "JOB_NOT_CANCELLABLE"
    IDEMPOTENCY_KEY_REUSED = "IDEMPOTENCY_KEY_REUSED"
    MODEL_NOT_FOUND = "MODEL_NOT_FOUND"
    INVALID_VERSION = "INVALID_VERSION"
    REGISTRY_UNAVAILABLE = "REGISTRY_UNAVAILABLE"
    QUEUE_UNAVAILABLE = "QUEUE_UNAVAILABLE"
    STORAGE_UNAVAILABLE = "STORAGE_UNAVAILABLE"
    NOT_FOUND = "NOT_FOUND"
    METHOD_NOT_ALLOWED = "METHOD_NOT_ALLOWED"
    TRAINING_FAILED = "TRAINING_FAILED"
    MODEL_CHECK_FAILED = "MODEL_CHECK_FAILED"
    RUN_FAILED = "RUN_FAILED"
    INTERNAL_ERROR = "INTERNAL_ERROR"


class PlatformError(Exception):
    """Base of every error that reaches a client with a code."""

    code: ErrorCode = ErrorCode.INTERNAL_ERROR
    status: int = 500

    def __init__(
        self,
        message: str,
        details: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or []
        self.headers = headers or {}


class InvalidInput(PlatformError):
    code, status = ErrorCode.INVALID_INPUT, 422


class MalformedBody(PlatformError):
    code, status = ErrorCode.INVALID_INPUT, 400


class InvalidSeriesId(PlatformError):
    code, status = ErrorCode.INVALID_SERIES_ID, 422


class InsufficientData(PlatformError):
    code, status = ErrorCode.INSUFFICIENT_DATA, 422


class TooManyPoints(PlatformError):
    code, status = ErrorCode.TOO_MANY_POINTS, 422


class ConstantSeries(PlatformError):
    code, status = ErrorCode.CONSTANT_SERIES, 422


class InvalidTimestamp(PlatformError):
    code, status = ErrorCode.INVALID_TIMESTAMP, 422


class NonFiniteValue(PlatformError):
    code, status = ErrorCode.NON_FINITE_VALUE, 422


class PayloadTooLarge(PlatformError):
    code, status = ErrorCode.PAYLOAD_TOO_LARGE, 413


class UnsupportedMediaType(PlatformError):
    code, status = ErrorCode.UNSUPPORTED_MEDIA_TYPE, 415


class RateLimitExceeded(PlatformError):
    code, status = ErrorCode.RATE_LIMIT_EXCEEDED, 429


class RequestTimeout(PlatformError):
    """The body did not arrive in time (a slow or stalled client)."""

    code, status = ErrorCode.REQUEST_TIMEOUT, 408


class Unauthenticated(PlatformError):
    """No bearer token, or one that does not verify (signature, expiry, issuer, audience)."""

    code, status = ErrorCode.UNAUTHENTICATED, 401


class Forbidden(PlatformError):
    """A valid token whose roles do not allow the route."""

    code, status = ErrorCode.FORBIDDEN, 403


class AuthUnavailable(PlatformError):
    """The signing keys could not be fetched (JWKS endpoint down, no cached key)."""

    code, status = ErrorCode.AUTH_UNAVAILABLE, 503


class JobNotFound(PlatformError):
    code, status = ErrorCode.JOB_NOT_FOUND, 404


class JobNotCancellable(PlatformError):
    code, status = ErrorCode.JOB_NOT_CANCELLABLE, 409


class IdempotencyKeyReused(PlatformError):
    code, status = ErrorCode.IDEMPOTENCY_KEY_REUSED, 409


class ModelNotFound(PlatformError):
    code, status = ErrorCode.MODEL_NOT_FOUND, 404


class InvalidVersion(PlatformError):
    code, status = ErrorCode.INVALID_VERSION, 404


class VersionConflict(PlatformError):
    """The version exists but cannot take this role (shadowing the production version)."""

    code, status = ErrorCode.INVALID_VERSION, 409


class RegistryUnavailable(PlatformError):
    code, status = ErrorCode.REGISTRY_UNAVAILABLE, 503


class QueueUnavailable(PlatformError):
    code, status = ErrorCode.QUEUE_UNAVAILABLE, 503


class StorageUnavailable(PlatformError):
    code, status = ErrorCode.STORAGE_UNAVAILABLE, 503


class ModelCheckFailed(PlatformError):
    """A registered model did not load back or predict; it is not promoted."""

    code, status = ErrorCode.MODEL_CHECK_FAILED, 500
