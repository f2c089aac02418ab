"""Public API v1: withdrawals."""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from datetime import datetime
from typing import Any

from pydantic import ValidationError
from pydantic_core import to_json
from starlette.datastructures import QueryParams
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from app.amounts import format_units
from app.auth import bearer_key, client_of, require_client
from app.errors import ApiError
from app.intake import Busy
from app.schemas import CreateWithdrawal
from app.validation import request_hash, validate_order
from db import withdrawals as repo
from db.clients import hash_key
from db.states import WithdrawalStatus

MAX_IDEMPOTENCY_KEY = 255
DEFAULT_PAGE = 50
MAX_PAGE = 200
LIST_PARAMS = {"status", "chain", "asset", "created_from", "created_to", "cursor", "limit"}


def render(request: Request, row: dict[str, Any]) -> dict[str, Any]:
    """A withdrawal row as the API shows it: the fields of schemas.Withdrawal (the OpenAPI
    schema), for json_response. A plain dict rather than the model: the row is ours, and
    validating it again cost about as much as writing the text (render and dump: 9.6 us as the
    model, 5.4 us so). tests/unit/test_render.py holds the two texts equal."""
    chain = request.app.state.registry.get(row["chain"])
    asset = chain.asset(row["asset"]) if chain else None
    units = int(row["amount"])
    # A withdrawal outlives registry edits: without its asset's decimals, show base units.
    amount = format_units(units, asset.decimals) if asset else str(units)
    code = row["failure_code"]
    return {
        "id": str(row["id"]),
        "status": row["status"],
        "chain": row["chain"],
        "asset": row["asset"],
        "to": row["to_address"],
        "amount": amount,
        "amount_base_units": str(units),
        "reference": row["reference"],
        "failure": {"code": code, "reason": row["failure_reason"]} if code else None,
        "status_note": row["status_note"],
        "tx_hash": row.get("tx_hash"),
        "block_number": row.get("block_number"),
        "confirmations": row.get("confirmations"),
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
    }


def json_response(body: dict[str, Any], status_code: int = 200, headers: dict[str, str] | None = None) -> Response:
    """The body as compact UTF-8 JSON, written in one C call (pydantic_core): the text pydantic
    gives for the response models, datetimes included; every create's answer is one."""
    return Response(to_json(body), status_code=status_code, headers=headers, media_type="application/json")


async def read_body(request: Request) -> bytes:
    """The body, 413 when it is larger than the limit (declared or as it arrives).

    Read from the ASGI messages directly: a create's small body comes in one, and Starlette's
    stream() (an async generator) cost more than the rest of this function."""
    limit: int = request.app.state.settings.max_body_bytes
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise body_too_large(limit)
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise body_too_large(limit)
        if not message.get("more_body", False):
            return b"".join(chunks) + chunk if chunks else chunk
        chunks.append(chunk)


def body_too_large(limit: int) -> ApiError:
    return ApiError(413, "body_too_large", f"the request body is larger than {limit} bytes")


def parse_create(body: bytes, content_type: str | None) -> CreateWithdrawal:
    if content_type is None or content_type.split(";")[0].strip().lower() != "application/json":
        raise ApiError(415, "unsupported_media_type", "send the body as Content-Type: application/json")
    try:
        create = CreateWithdrawal.model_validate_json(body)
    except ValidationError as exc:
        refuse_duplicate_keys(body)  # said first, as for a body that matches the schema
        errors = [_field_error(e) for e in exc.errors(include_url=False, include_input=False)]
        if any(e["code"] == "json_invalid" for e in errors):
            raise ApiError(400, "malformed_json", "the body is not valid JSON", errors=errors) from None
        raise ApiError(422, "invalid_request", "the body does not match the schema", errors=errors) from None
    # The body is one object of string or null fields, all known (else the schema refused it), so
    # a key given twice shows as its name in quotes twice, unless escapes spell it: only then is
    # the body parsed again (a value that spells a key's name costs that parse, nothing more).
    if b"\\" in body or any(body.count(_QUOTED[name]) != 1 for name in create.model_fields_set):
        refuse_duplicate_keys(body)
    return create


_QUOTED = {name: f'"{name}"'.encode() for name in CreateWithdrawal.model_fields}


def refuse_duplicate_keys(body: bytes) -> None:
    """400 duplicate_key when an object of the body has a key twice: with {"amount": "1",
    "amount": "2"} a proxy or log that reads the first value would see another amount than the
    one paid. A body that is not JSON passes (the schema validation says so precisely)."""
    try:
        json.loads(body, object_pairs_hook=_refuse_duplicate_keys)
    except _DuplicateKey as exc:
        detail = f"the key {exc.key!r} appears twice in one object"
        raise ApiError(
            400, "duplicate_key", detail, errors=[{"field": exc.key, "code": "duplicate_key", "message": detail}]
        ) from None
    except (ValueError, RecursionError):
        pass


class _DuplicateKey(Exception):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _refuse_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise _DuplicateKey(key)
        seen[key] = value
    return seen


def _field_error(e: Any) -> dict[str, str]:
    kind = e["type"]
    code = {"extra_forbidden": "unknown_field", "missing": "missing_field"}.get(kind, kind)
    field = ".".join(str(p) for p in e["loc"]) or "body"
    return {"field": field, "code": code, "message": e["msg"]}


def idempotency_key(request: Request) -> str:
    key = request.headers.get("idempotency-key")
    if key is None or not key.strip():
        raise ApiError(400, "idempotency_key_missing", "send an Idempotency-Key header (e.g. a UUID) with every create")
    if len(key) > MAX_IDEMPOTENCY_KEY or not key.isprintable() or not key.isascii():
        raise ApiError(
            400,
            "idempotency_key_invalid",
            f"Idempotency-Key must be 1-{MAX_IDEMPOTENCY_KEY} printable ASCII characters",
        )
    return key


def own_wallet_error() -> ApiError:
    return ApiError(
        422,
        "address_is_own_wallet",
        "the recipient is one of this system's own wallets",
        errors=[{"field": "to", "code": "address_is_own_wallet", "message": "own wallet"}],
    )


async def create_withdrawal(request: Request) -> Response:
    key = bearer_key(request)
    try:
        idempotency = idempotency_key(request)
        body = parse_create(await read_body(request), request.headers.get("content-type"))
    except ApiError:
        await require_client(request)  # an unknown key hears 401 before anything about its request
        raise
    fingerprint = request_hash(body)
    refusal: ApiError | None = None
    try:
        order = validate_order(request.app.state.registry, body)
    except ApiError as exc:
        refusal = exc
    if refusal is None:
        new = repo.NewWithdrawal(
            idempotency_key=idempotency,
            request_hash=fingerprint,
            chain=order.chain.name,
            asset=order.asset.symbol,
            to_address=order.to,
            amount=order.amount,
            reference=body.reference,
        )
        # The outbox: the row and its first job commit together or not at all (app/intake.py).
        try:
            row = await request.app.state.intake.create(hash_key(key), new)
        except Busy:
            raise ApiError(
                503,
                "busy",
                "more withdrawals are waiting to be written than the server can take now; retry shortly",
                retryable=True,
                headers={"Retry-After": "1"},
            ) from None
        if row is not None and row.pop("replayed"):
            return replay(request, row, fingerprint)
        if row is not None:
            location = {"Location": f"/v1/withdrawals/{row['id']}"}
            return json_response(render(request, row), status_code=201, headers=location)
    # Nothing was inserted: the key is unknown or revoked, a create with the same idempotency
    # key committed while this one was written, or the order is refused (a retry of an earlier
    # create still gets its withdrawal, even if the rules changed since).
    async with request.app.state.pool.connection() as conn:
        client = await client_of(conn, key)
        existing = await repo.get_by_idempotency_key(conn, client.id, idempotency)
    if existing is not None:
        return replay(request, existing, fingerprint)
    raise refusal or own_wallet_error()


def replay(request: Request, existing: dict[str, Any], fingerprint: bytes) -> Response:
    if bytes(existing["request_hash"]) != fingerprint:
        raise ApiError(
            422,
            "idempotency_key_reused",
            "this Idempotency-Key was already used with a different request body",
        )
    return json_response(render(request, existing), headers={"Idempotent-Replayed": "true"})


def path_id(request: Request) -> uuid.UUID:
    raw = request.path_params["withdrawal_id"]
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise ApiError(404, "withdrawal_not_found", "no withdrawal with this id") from None


async def get_withdrawal(request: Request) -> Response:
    client = await require_client(request)
    async with request.app.state.pool.connection() as conn:
        row = await repo.get_withdrawal(conn, client.id, path_id(request))
    if row is None:
        raise ApiError(404, "withdrawal_not_found", "no withdrawal with this id")
    return json_response(render(request, row))


async def cancel_withdrawal(request: Request) -> Response:
    client = await require_client(request)
    withdrawal_id = path_id(request)
    async with request.app.state.pool.connection() as conn:
        row = await repo.cancel_withdrawal(conn, client.id, withdrawal_id, "canceled by the client")
        if row is None:
            row = await repo.get_withdrawal(conn, client.id, withdrawal_id)
            if row is None:
                raise ApiError(404, "withdrawal_not_found", "no withdrawal with this id")
            if row["status"] in repo.CANCELABLE_ON_CHAIN:
                outcome = await repo.request_onchain_cancel(conn, withdrawal_id)
                if outcome == "in_batch":
                    raise ApiError(
                        409,
                        "withdrawal_in_batch",
                        "the withdrawal is signed in one transaction with others; it cannot be canceled alone",
                    )
                if outcome == "requested":
                    row = await repo.get_withdrawal(conn, client.id, withdrawal_id)
                    assert row is not None
                    return json_response(render(request, row), status_code=202)
            if row["status"] == WithdrawalStatus.SIGNING:
                raise ApiError(
                    409,
                    "withdrawal_being_signed",
                    "the withdrawal is being signed right now; retry in a moment",
                    retryable=True,
                )
            if row["status"] != WithdrawalStatus.CANCELED:
                raise ApiError(
                    409,
                    "withdrawal_not_cancelable",
                    f"the withdrawal is {row['status']}: it is already mined or finished",
                )
    return json_response(render(request, row))


def encode_cursor(row: dict[str, Any]) -> str:
    raw = json.dumps([row["created_at"].isoformat(), str(row["id"])]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(text: str) -> tuple[datetime, uuid.UUID]:
    bad = ApiError(400, "invalid_cursor", "the cursor is not one this API returned")
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        created_at, ident = json.loads(raw)
        when = datetime.fromisoformat(created_at)
        if when.tzinfo is None:
            raise bad
        return when, uuid.UUID(ident)
    except (binascii.Error, ValueError, TypeError):
        raise bad from None


def query_error(param: str, detail: str) -> ApiError:
    return ApiError(400, "invalid_query", detail, errors=[{"field": param, "code": "invalid_query", "message": detail}])


def text_param(params: QueryParams, param: str) -> str | None:
    value = params.get(param)
    # Postgres text cannot hold NUL: refuse it here rather than fail in the query.
    if value is not None and "\x00" in value:
        raise query_error(param, f"{param} must not contain NUL characters")
    return value


def parse_time(param: str, text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise query_error(param, f"{param} must be an ISO 8601 date-time such as 2026-01-31T00:00:00Z") from None
    if value.tzinfo is None:
        raise query_error(param, f"{param} must include a time zone (e.g. Z or +00:00)")
    return value


async def list_withdrawals(request: Request) -> Response:
    client = await require_client(request)
    params = request.query_params
    unknown = set(params.keys()) - LIST_PARAMS
    if unknown:
        raise query_error(
            sorted(unknown)[0], f"unknown query parameters: {sorted(unknown)}; known: {sorted(LIST_PARAMS)}"
        )
    statuses: list[str] | None = None
    if params.getlist("status"):
        statuses = [s.strip() for value in params.getlist("status") for s in value.split(",") if s.strip()]
        valid = {s.value for s in WithdrawalStatus}
        wrong = [s for s in statuses if s not in valid]
        if wrong or not statuses:
            raise query_error("status", f"unknown status {wrong}; one of {sorted(valid)}")
    limit = DEFAULT_PAGE
    if "limit" in params:
        text = params["limit"]
        # ASCII and short: isdigit() also accepts "²", and int() refuses that and >4300 digits.
        digits = text.isascii() and text.isdigit() and len(text) <= 9
        if not digits or not 1 <= int(text) <= MAX_PAGE:
            raise query_error("limit", f"limit must be an integer from 1 to {MAX_PAGE}")
        limit = int(text)
    after_created_at, after_id = decode_cursor(params["cursor"]) if "cursor" in params else (None, None)
    page = repo.PageQuery(
        client_id=client.id,
        limit=limit + 1,  # one more tells whether a next page exists
        statuses=statuses,
        chain=text_param(params, "chain"),
        asset=text_param(params, "asset"),
        created_from=parse_time("created_from", params["created_from"]) if "created_from" in params else None,
        created_to=parse_time("created_to", params["created_to"]) if "created_to" in params else None,
        after_created_at=after_created_at,
        after_id=after_id,
    )
    async with request.app.state.pool.connection() as conn:
        rows = await repo.list_withdrawals(conn, page)
    more = len(rows) > limit
    rows = rows[:limit]
    return json_response(
        {"data": [render(request, r) for r in rows], "next_cursor": encode_cursor(rows[-1]) if more else None}
    )


routes = [
    Route("/v1/withdrawals", create_withdrawal, methods=["POST"]),
    Route("/v1/withdrawals", list_withdrawals, methods=["GET"]),
    Route("/v1/withdrawals/{withdrawal_id}", get_withdrawal, methods=["GET"]),
    Route("/v1/withdrawals/{withdrawal_id}/cancel", cancel_withdrawal, methods=["POST"]),
]
