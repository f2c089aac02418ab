"""One error type for the API, rendered as RFC 9457 problem+json with a stable `code`."""

from __future__ import annotations

import logging
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse

log = logging.getLogger("payouts.api")

PROBLEM_TYPE_PREFIX = "urn:payouts:problem:"


class ApiError(Exception):
    """An answer the client should act on: status, stable code, and whether retrying may help."""

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        *,
        title: str | None = None,
        retryable: bool = False,
        errors: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.title = title or code.replace("_", " ").capitalize()
        self.retryable = retryable
        self.errors = errors
        self.headers = headers


def problem(err: ApiError, instance: str | None = None) -> JSONResponse:
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE_PREFIX + err.code,
        "title": err.title,
        "status": err.status,
        "detail": err.detail,
        "code": err.code,
        "retryable": err.retryable,
    }
    if instance:
        body["instance"] = instance
    if err.errors:
        body["errors"] = err.errors
    return JSONResponse(body, status_code=err.status, media_type="application/problem+json", headers=err.headers)


async def handle_api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return problem(exc, request.url.path)


_HTTP_CODES = {
    404: ("not_found", "no such resource"),
    405: ("method_not_allowed", "this method is not allowed here"),
}


async def handle_http_exception(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    code, detail = _HTTP_CODES.get(exc.status_code, ("http_error", str(exc.detail)))
    return problem(ApiError(exc.status_code, code, detail, headers=dict(exc.headers or {})), request.url.path)


async def handle_unexpected(request: Request, exc: Exception) -> JSONResponse:
    # Logged with the traceback for operators; the client gets no internals.
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return problem(
        ApiError(500, "internal_error", "the server failed; the request may be retried", retryable=True),
        request.url.path,
    )
