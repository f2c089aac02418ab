"""Where the signer finds a wallet's key, by the wallet's `key_ref`.

A key is loaded only inside the signing step and never logged, stored or passed to a job.
Schemes:
  vault:<wallet uuid>   the wallet's key sealed in the key vault (jobs/vault.py, docs/custody.md)
  dev-mnemonic:N        account N of the well-known anvil mnemonic; development only
"""

from __future__ import annotations

import os
import threading
import uuid
from functools import cache

from eth_account import Account
from eth_account.signers.local import LocalAccount

from app.settings import Settings, SettingsError

# The well-known anvil/hardhat mnemonic, behind the dev-mnemonic scheme (jobs/devchain.py starts
# anvil with it). Kept here, not in devchain: that module pulls in web3, and a worker signing with
# dev keys would load it on its first signature, in the middle of a job.
ANVIL_MNEMONIC = "test test test test test test test test test test test junk"


@cache
def dev_account(index: int) -> LocalAccount:
    """The anvil dev account at BIP-44 `index` of ANVIL_MNEMONIC."""
    if index < 0:
        raise ValueError(f"account index must be >= 0, got {index}")
    Account.enable_unaudited_hdwallet_features()
    return Account.from_mnemonic(ANVIL_MNEMONIC, account_path=f"m/44'/60'/0'/0/{index}")


class KeyUnavailable(Exception):
    """The signer cannot get the key behind a key_ref; the message never contains key material."""


_signer_keys = None  # jobs.vault.SignerKeys, made on first use in this process
_signer_keys_lock = threading.Lock()


def signer_keys():  # type: ignore[no-untyped-def]
    """This process's vault access: provider, data-key cache, and a connection of its own."""
    global _signer_keys
    with _signer_keys_lock:
        if _signer_keys is None:
            from jobs.keyproviders import ProviderError, provider_from_settings
            from jobs.vault import DataKeyCache, SignerKeys

            try:
                settings = Settings.from_env()
                provider = provider_from_settings(settings.custody)
            except (SettingsError, ProviderError) as exc:
                raise KeyUnavailable(f"the key vault is not usable: {exc}") from None
            _signer_keys = SignerKeys(
                settings.database_url.reveal(), provider, DataKeyCache(settings.custody.data_key_cache_seconds)
            )
        return _signer_keys


def load_signer(key_ref: str | None, *, address: str) -> LocalAccount:
    if not key_ref:
        raise KeyUnavailable(f"wallet {address} has no key reference")
    scheme, _, rest = key_ref.partition(":")
    if scheme == "vault":
        account = _from_vault(rest, address)
    elif scheme == "dev-mnemonic":
        if os.environ.get("PAYOUTS_ENV", "development") == "production":
            raise KeyUnavailable("dev-mnemonic keys are refused in production")
        if not rest.isdigit():
            raise KeyUnavailable(f"bad key reference scheme for wallet {address}")
        account = dev_account(int(rest))
    else:
        raise KeyUnavailable(f"unknown key reference scheme {scheme!r} for wallet {address}")
    if account.address != address:
        raise KeyUnavailable(f"the key for wallet {address} derives another address")
    return account


def _from_vault(rest: str, address: str) -> LocalAccount:
    from jobs.vault import VaultError

    try:
        wallet_id = uuid.UUID(rest)
    except ValueError:
        raise KeyUnavailable(f"bad vault key reference for wallet {address}") from None
    try:
        # The plain key lives in this frame and in the account the signer uses, nowhere else.
        return Account.from_key(signer_keys().open(wallet_id))
    except VaultError as exc:
        raise KeyUnavailable(f"wallet {address}: {exc}") from None


def custody_check(settings: Settings) -> None:
    """At worker and CLI start in production: the master key itself must be there and strong.
    Raises SettingsError saying why not. (The API checks the configuration only: it needs no
    access to the master key, and in production should have none.)"""
    if settings.environment != "production":
        return
    from jobs.keyproviders import ProviderError, provider_from_settings

    try:
        provider_from_settings(settings.custody).verify()
    except ProviderError as exc:
        raise SettingsError(f"refusing to start in production: {exc}") from None
