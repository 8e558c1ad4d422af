"""HTTP plumbing shared by the training API and serving: one table that turns every failure
into the design's error body (needs the api or serving extra: FastAPI)."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

from asgi_correlation_id import correlation_id
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Receive, Scope, Send

from core.contracts import ErrorBody, ErrorInfo, ErrorMetadata
from core.errors import (
    ErrorCode,
    MalformedBody,
    PayloadTooLarge,
    PlatformError,
    RequestTimeout,
    UnsupportedMediaType,
)

log = logging.getLogger(__name__)

_HTTP_CODES = {404: ErrorCode.NOT_FOUND, 405: ErrorCode.METHOD_NOT_ALLOWED}


def error_response(
    status: int,
    code: str,
    message: str,
    details: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = ErrorBody(
        error=ErrorInfo(code=code, message=message, details=details or []),
        metadata=ErrorMetadata(request_id=correlation_id.get()),
    )
    return JSONResponse(body.model_dump(mode="json"), status_code=status, headers=headers)


async def _platform_error(_: Request, exc: PlatformError) -> JSONResponse:
    return error_response(exc.status, exc.code, exc.message, exc.details, exc.headers)


async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
    details = [
        {"field": ".".join(str(p) for p in err["loc"]), "message": err["msg"]}
        for err in exc.errors()
    ]
    return error_response(422, ErrorCode.INVALID_INPUT, "the request is invalid", details)


async def _http_error(_: Request, exc: HTTPException) -> JSONResponse:
    code = _HTTP_CODES.get(exc.status_code, ErrorCode.INVALID_INPUT)
    return error_response(exc.status_code, code, str(exc.detail), headers=exc.headers)


async def _store_down(_: Request, exc: OperationalError) -> JSONResponse:
    log.error("job store unavailable: %s", exc.orig)
    return error_response(503, ErrorCode.STORAGE_UNAVAILABLE, "the job store is unavailable")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(PlatformError, _platform_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(OperationalError, _store_down)


class UnhandledErrors:
    """Answers unexpected exceptions with the error body; sits inside the request-id
    middleware so even a 500 carries X-Request-ID."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def tracking_send(message: dict[str, Any]) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception:
            log.exception("unhandled error on %s %s", scope.get("method"), scope.get("path"))
            if started:
                raise
            response = error_response(500, ErrorCode.INTERNAL_ERROR, "internal error")
            await response(scope, receive, send)


class ProxyRequestId:
    """Request ids behind Ray Serve's HTTP server, which gives each request an X-Request-ID
    (the client's, or a new UUID) and puts that id on the response itself: logs and error
    bodies use it, and the header is not added a second time (CorrelationIdMiddleware would
    answer two, differing when the client's id is not a UUID)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            correlation_id.set(Headers(scope=scope).get("x-request-id") or str(uuid.uuid4()))
        await self.app(scope, receive, send)


async def read_limited(
    chunks: AsyncIterator[bytes], content_length: str | None, limit: int, timeout_s: float
) -> bytes:
    """Read at most `limit` bytes within `timeout_s`; refuse larger bodies before reading
    them when announced. The deadline covers the whole body, so a client trickling a byte
    at a time (slow loris) holds a connection for `timeout_s` at most, then gets 408."""
    if content_length is not None and content_length.isdigit() and int(content_length) > limit:
        raise _too_large(int(content_length), limit)
    body = bytearray()
    try:
        async with asyncio.timeout(timeout_s):
            async for chunk in chunks:
                body += chunk
                if len(body) > limit:
                    raise _too_large(None, limit)
    except ClientDisconnect:  # nobody reads the answer; it only keeps the log quiet
        raise MalformedBody(
            f"the client closed the connection after {len(body)} bytes of the body"
        ) from None
    except TimeoutError:
        raise RequestTimeout(
            f"the request body did not arrive within {timeout_s:g} s "
            f"({len(body)} bytes received)",
            details=[{"timeout_s": timeout_s, "received_bytes": len(body)}],
            headers={"Connection": "close"},
        ) from None
    return bytes(body)


def require_json(content_type: str | None) -> None:
    """Bodies are JSON; anything else (forms, text/plain from a cross-site page) is 415."""
    media = (content_type or "").split(";")[0].strip().lower()
    if media != "application/json" and not media.endswith("+json"):
        raise UnsupportedMediaType(
            f"send the body as application/json (got {content_type or 'no content type'!r})"
        )


def _too_large(size: int | None, limit: int) -> PayloadTooLarge:
    got = f"{size} bytes" if size is not None else "more"
    return PayloadTooLarge(
        f"request body is {got}; the limit is {limit} bytes",
        details=[{"limit_bytes": limit, **({"size_bytes": size} if size is not None else {})}],
    )
