"""The OpenAPI 3.1 document (`/openapi.json`) and the interactive docs (`/docs`)."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

from pydantic.json_schema import models_json_schema
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from app.schemas import CreateWithdrawal, Health, Problem, Withdrawal, WithdrawalPage
from db.states import WithdrawalStatus

SWAGGER_DIR = Path(__file__).resolve().parent.parent / "node_modules" / "swagger-ui-dist"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(name: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(name)}}}


def _problem(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/problem+json": {"schema": _ref("Problem")}}}


COMMON_ERRORS = {
    "401": _problem("Missing, unknown or revoked API key (`unauthenticated`, `invalid_api_key`)"),
}
ID_PARAM = {"name": "withdrawal_id", "in": "path", "required": True, "schema": {"type": "string", "format": "uuid"}}


@cache
def document() -> dict[str, Any]:
    _, schemas = models_json_schema(
        [(m, "validation") for m in (CreateWithdrawal,)]
        + [(m, "serialization") for m in (Withdrawal, WithdrawalPage, Problem, Health)],
        ref_template="#/components/schemas/{model}",
    )
    statuses = [s.value for s in WithdrawalStatus]
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Payouts API",
            "version": "1",
            "description": (
                "Withdrawals (payouts) from this system's hot wallets on EVM chains. "
                "Amounts are decimal strings in whole units of the asset. Errors are RFC 9457 "
                "problem+json with a stable `code` and a `retryable` flag."
            ),
        },
        "components": {
            "schemas": schemas["$defs"],
            "securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"apiKey": []}],
        "paths": {
            "/v1/withdrawals": {
                "post": {
                    "operationId": "createWithdrawal",
                    "summary": "Request a withdrawal",
                    "parameters": [
                        {
                            "name": "Idempotency-Key",
                            "in": "header",
                            "required": True,
                            "description": (
                                "Unique per withdrawal; a retry with the same key and body returns the same withdrawal"
                            ),
                            "schema": {"type": "string", "minLength": 1, "maxLength": 255},
                        }
                    ],
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": _ref("CreateWithdrawal")}},
                    },
                    "responses": {
                        "201": _json("Withdrawal", "Created"),
                        "200": _json(
                            "Withdrawal", "Replay of an earlier request with the same Idempotency-Key and body"
                        ),
                        "400": _problem("Malformed JSON, or a missing/invalid Idempotency-Key"),
                        "413": _problem("Body too large"),
                        "415": _problem("Body is not application/json"),
                        "422": _problem("Invalid request: see `code` and `errors`"),
                        "503": _problem("`busy`: more creates are waiting than can be written; retry shortly"),
                        **COMMON_ERRORS,
                    },
                },
                "get": {
                    "operationId": "listWithdrawals",
                    "summary": "List your withdrawals, newest first",
                    "parameters": [
                        {
                            "name": "status",
                            "in": "query",
                            "description": "Comma-separated statuses",
                            "schema": {"type": "string"},
                            "examples": {"one": {"value": "PENDING"}},
                        },
                        {"name": "chain", "in": "query", "schema": {"type": "string"}},
                        {"name": "asset", "in": "query", "schema": {"type": "string"}},
                        {
                            "name": "created_from",
                            "in": "query",
                            "description": "Inclusive, ISO 8601 with time zone",
                            "schema": {"type": "string", "format": "date-time"},
                        },
                        {
                            "name": "created_to",
                            "in": "query",
                            "description": "Exclusive, ISO 8601 with time zone",
                            "schema": {"type": "string", "format": "date-time"},
                        },
                        {"name": "cursor", "in": "query", "schema": {"type": "string"}},
                        {
                            "name": "limit",
                            "in": "query",
                            "schema": {"type": "integer", "minimum": 1, "maximum": 200, "default": 50},
                        },
                    ],
                    "responses": {
                        "200": _json("WithdrawalPage", f"A page of withdrawals (statuses: {', '.join(statuses)})"),
                        "400": _problem("Invalid query parameter or cursor"),
                        **COMMON_ERRORS,
                    },
                },
            },
            "/v1/withdrawals/{withdrawal_id}": {
                "get": {
                    "operationId": "getWithdrawal",
                    "summary": "One of your withdrawals",
                    "parameters": [ID_PARAM],
                    "responses": {
                        "200": _json("Withdrawal", "The withdrawal"),
                        "404": _problem("No such withdrawal (or another client's)"),
                        **COMMON_ERRORS,
                    },
                }
            },
            "/v1/withdrawals/{withdrawal_id}/cancel": {
                "post": {
                    "operationId": "cancelWithdrawal",
                    "summary": "Cancel a withdrawal",
                    "description": (
                        "Before signing, the withdrawal is CANCELED at once (200). Once signed and not yet "
                        "mined, a 0-value transaction at the same nonce is sent to compete with the payment "
                        "(202): the withdrawal ends CANCELED if the cancel is mined, CONFIRMED if the payment is."
                    ),
                    "parameters": [ID_PARAM],
                    "responses": {
                        "200": _json("Withdrawal", "Canceled (or already canceled)"),
                        "202": _json("Withdrawal", "Cancel requested on chain; follow the status"),
                        "404": _problem("No such withdrawal"),
                        "409": _problem(
                            "Too late (`withdrawal_not_cancelable`: mined or finished), paid in one "
                            "transaction with others (`withdrawal_in_batch`), or being signed this moment "
                            "(`withdrawal_being_signed`, retryable)"
                        ),
                        **COMMON_ERRORS,
                    },
                }
            },
            "/healthz": {
                "get": {
                    "operationId": "healthz",
                    "security": [],
                    "summary": "Process is alive",
                    "responses": {"200": _json("Health", "Alive")},
                }
            },
            "/readyz": {
                "get": {
                    "operationId": "readyz",
                    "security": [],
                    "summary": "Database and chains reachable",
                    "responses": {"200": _json("Health", "Ready"), "503": _json("Health", "Not ready")},
                }
            },
        },
    }


async def openapi_json(request: Request) -> Response:
    return JSONResponse(document())


DOCS_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Payouts API</title>
<link rel="stylesheet" href="/docs/assets/swagger-ui.css"></head>
<body><div id="ui"></div>
<script src="/docs/assets/swagger-ui-bundle.js"></script>
<script>SwaggerUIBundle({url: "/openapi.json", dom_id: "#ui", persistAuthorization: true});</script>
</body></html>"""

MISSING_ASSETS_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Payouts API</title></head><body>
<h1>Payouts API</h1><p>The interactive docs need the swagger-ui-dist package: run <code>npm ci</code>
in the project folder. The OpenAPI document is at <a href="/openapi.json">/openapi.json</a>.</p>
</body></html>"""


async def docs(request: Request) -> Response:
    return HTMLResponse(DOCS_PAGE if SWAGGER_DIR.is_dir() else MISSING_ASSETS_PAGE)


def routes() -> list[Route | Mount]:
    found: list[Route | Mount] = [
        Route("/openapi.json", openapi_json, methods=["GET"]),
        Route("/docs", docs, methods=["GET"]),
    ]
    if SWAGGER_DIR.is_dir():
        found.append(Mount("/docs/assets", app=StaticFiles(directory=SWAGGER_DIR), name="docs-assets"))
    return found
