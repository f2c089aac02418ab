"""Settings from the environment. Values that are secret are wrapped so they never print."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

KEY_PROVIDERS = ("local", "aws-secrets-manager", "aws-kms")
# Development only: where the local provider keeps its master key when no file is named.
DEFAULT_LOCAL_MASTER_KEY_FILE = Path(__file__).resolve().parent.parent / ".dev" / "master.key"


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
class CustodySettings:
    """Where the key vault's master key lives (docs/custody.md). Names of keys, never key material:
    AWS credentials come from boto3's usual sources (environment, profile, instance role)."""

    provider: str  # one of KEY_PROVIDERS
    provider_set: bool  # False when PAYOUTS_KEY_PROVIDER was not given (the development default)
    local_master_key_file: Path
    aws_secret_id: str | None
    kms_key_id: str | None
    aws_region: str | None
    aws_endpoint_url: str | None  # an emulator (moto) in tests; unset in production
    data_key_cache_seconds: int

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> CustodySettings:
        env = os.environ if environ is None else environ
        provider = env.get("PAYOUTS_KEY_PROVIDER") or ""
        if provider and provider not in KEY_PROVIDERS:
            raise SettingsError(f"PAYOUTS_KEY_PROVIDER must be one of {', '.join(KEY_PROVIDERS)}")
        key_file = env.get("PAYOUTS_LOCAL_MASTER_KEY_FILE")
        return cls(
            provider=provider or "local",
            provider_set=bool(provider),
            local_master_key_file=Path(key_file) if key_file else DEFAULT_LOCAL_MASTER_KEY_FILE,
            aws_secret_id=env.get("PAYOUTS_AWS_SECRET_ID") or None,
            kms_key_id=env.get("PAYOUTS_KMS_KEY_ID") or None,
            aws_region=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or None,
            aws_endpoint_url=env.get("PAYOUTS_AWS_ENDPOINT_URL") or None,
            data_key_cache_seconds=_int(env, "PAYOUTS_DATA_KEY_CACHE_SECONDS", 300, 0, 3600),
        )

    def production_problems(self) -> list[str]:
        """Why this configuration may not run in production (empty when it may). Checks the
        configuration only; the master key itself is checked by the workers and the CLI, which
        are allowed to reach it (jobs/keyproviders.py `verify`)."""
        if not self.provider_set:
            return ["PAYOUTS_KEY_PROVIDER is not set: production needs aws-secrets-manager or aws-kms"]
        if self.provider == "local":
            return [
                "PAYOUTS_KEY_PROVIDER=local keeps the master key in a file next to the database "
                "credentials; it is for development only: use aws-secrets-manager or aws-kms"
            ]
        problems = []
        if self.provider == "aws-secrets-manager" and not self.aws_secret_id:
            problems.append("PAYOUTS_AWS_SECRET_ID is not set: the Secrets Manager secret that holds the master key")
        if self.provider == "aws-kms" and not self.kms_key_id:
            problems.append("PAYOUTS_KMS_KEY_ID is not set: the KMS key (id, ARN or alias) that wraps data keys")
        if not self.aws_region:
            problems.append("AWS_REGION (or AWS_DEFAULT_REGION) is not set")
        return problems


@dataclass(frozen=True)
class Settings:
    database_url: Secret
    environment: str  # "development" or "production"
    max_body_bytes: int
    db_pool_size: int
    custody: CustodySettings
    # Where alerts go (a Slack-compatible incoming webhook; its URL is a credential).
    alert_webhook_url: Secret | None = None
    # The same alert is sent at most once per this many seconds.
    alert_interval_seconds: int = 3600
    # The bearer token a scraper sends for /metrics (unset: /metrics is off).
    metrics_token: Secret | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        url = env.get("DATABASE_URL")
        if not url:
            raise SettingsError("DATABASE_URL is not set (e.g. postgresql://user@127.0.0.1:5432/payouts)")
        environment = env.get("PAYOUTS_ENV", "development")
        if environment not in ("development", "production"):
            raise SettingsError("PAYOUTS_ENV must be 'development' or 'production'")
        custody = CustodySettings.from_env(env)
        if environment == "production" and (problems := custody.production_problems()):
            raise SettingsError("refusing to start in production: " + "; ".join(problems))
        metrics_token = env.get("PAYOUTS_METRICS_TOKEN") or None
        if metrics_token is not None and len(metrics_token) < 16:
            raise SettingsError("PAYOUTS_METRICS_TOKEN must be at least 16 characters")
        webhook = env.get("PAYOUTS_ALERT_WEBHOOK_URL") or None
        if webhook is not None and not webhook.startswith(("https://", "http://")):
            raise SettingsError("PAYOUTS_ALERT_WEBHOOK_URL must be an http(s) URL")
        return cls(
            database_url=Secret(url),
            environment=environment,
            max_body_bytes=_int(env, "PAYOUTS_MAX_BODY_BYTES", 16 * 1024, 256, 1024 * 1024),
            db_pool_size=_int(env, "PAYOUTS_DB_POOL_SIZE", 10, 1, 200),
            custody=custody,
            alert_webhook_url=Secret(webhook) if webhook else None,
            alert_interval_seconds=_int(env, "PAYOUTS_ALERT_INTERVAL_SECONDS", 3600, 1, 7 * 24 * 3600),
            metrics_token=Secret(metrics_token) if metrics_token else None,
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
