"""Settings from the environment. Values that are secret are wrapped so they never print."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit


class Secret:
    """A string that shows as '**********' in repr, str and logs."""

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__


def redact_dsn(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


class SettingsError(ValueError):
    """A setting is missing or invalid; the message names the variable."""


@dataclass(frozen=True)
class Settings:
    database_url: Secret
    environment: str  # "development" or "production"
    max_body_bytes: int
    db_pool_size: int

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        url = env.get("DATABASE_URL")
        if not url:
            raise SettingsError("DATABASE_URL is not set (e.g. postgresql://user@127.0.0.1:5432/payouts)")
        environment = env.get("PAYOUTS_ENV", "development")
        if environment not in ("development", "production"):
            raise SettingsError("PAYOUTS_ENV must be 'development' or 'production'")
        return cls(
            database_url=Secret(url),
            environment=environment,
            max_body_bytes=_int(env, "PAYOUTS_MAX_BODY_BYTES", 16 * 1024, 256, 1024 * 1024),
            db_pool_size=_int(env, "PAYOUTS_DB_POOL_SIZE", 10, 1, 200),
        )


def _int(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = env.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise SettingsError(f"{name} must be an integer") from exc
    if not low <= value <= high:
        raise SettingsError(f"{name} must be between {low} and {high}")
    return value
