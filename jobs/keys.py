"""Where the signer finds a wallet's key, by the wallet's `key_ref`.

A key is loaded only inside the signing step and never logged, stored or passed to a job.
Schemes:
  dev-mnemonic:N   account N of the well-known anvil mnemonic; development only
"""

from __future__ import annotations

import os

from eth_account.signers.local import LocalAccount


class KeyUnavailable(Exception):
    """The signer cannot get the key behind a key_ref; the message never contains key material."""


def load_signer(key_ref: str | None, *, address: str) -> LocalAccount:
    if not key_ref:
        raise KeyUnavailable(f"wallet {address} has no key reference")
    scheme, _, rest = key_ref.partition(":")
    if scheme == "dev-mnemonic":
        if os.environ.get("PAYOUTS_ENV", "development") == "production":
            raise KeyUnavailable("dev-mnemonic keys are refused in production")
        from jobs.devchain import dev_account

        if not rest.isdigit():
            raise KeyUnavailable(f"bad key reference scheme for wallet {address}")
        account = dev_account(int(rest))
    else:
        raise KeyUnavailable(f"unknown key reference scheme {scheme!r} for wallet {address}")
    if account.address != address:
        raise KeyUnavailable(f"the key for wallet {address} derives another address")
    return account
