"""Request and response bodies of the public API (pydantic models, also the OpenAPI schemas)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from db.states import WithdrawalStatus


class CreateWithdrawal(BaseModel):
    """A request to pay `amount` of `asset` to `to` on `chain`."""

    model_config = ConfigDict(extra="forbid", strict=True)

    chain: Annotated[str, Field(min_length=1, max_length=32, examples=["localhost"])]
    asset: Annotated[str, Field(min_length=1, max_length=16, examples=["USDT"])]
    to: Annotated[
        str,
        Field(
            min_length=1,
            max_length=64,
            description="Recipient address; EIP-55 checksum enforced when mixed case",
            examples=["0x70997970C51812dc3A010C7d01b50e0d17dc79C8"],
        ),
    ]
    amount: Annotated[
        str,
        Field(
            min_length=1,
            max_length=100,
            description='Decimal string in whole units of the asset, e.g. "12.5"',
            examples=["12.5"],
        ),
    ]
    reference: Annotated[
        str | None,
        Field(
            default=None,
            max_length=128,
            pattern=r"^[\x20-\x7e]*$",
            description="Your own reference for this payout (printable ASCII)",
        ),
    ] = None


class Failure(BaseModel):
    code: str
    reason: str | None


class Withdrawal(BaseModel):
    id: str
    status: WithdrawalStatus
    chain: str
    asset: str
    to: str
    amount: Annotated[str, Field(description="Decimal string in whole units")]
    amount_base_units: Annotated[str, Field(description="Integer string in the asset's base units")]
    reference: str | None
    failure: Failure | None
    status_note: Annotated[str | None, Field(description="What the withdrawal waits for, or what happened last")]
    tx_hash: Annotated[
        str | None, Field(description="The transaction paying it: the mined attempt once mined, else the latest")
    ] = None
    block_number: int | None = None
    confirmations: Annotated[int | None, Field(description="Blocks on top of and including the mining block")] = None
    created_at: datetime
    updated_at: datetime


class WithdrawalPage(BaseModel):
    data: list[Withdrawal]
    next_cursor: Annotated[str | None, Field(description="Pass as `cursor` for the next page; null on the last page")]


class Problem(BaseModel):
    """RFC 9457 problem details, plus a stable machine-readable `code`."""

    type: str
    title: str
    status: int
    detail: str
    code: str
    retryable: bool
    instance: str | None = None
    errors: list[dict[str, str]] | None = None


class Health(BaseModel):
    status: Literal["ok", "unavailable"]
    checks: dict[str, str] | None = None
