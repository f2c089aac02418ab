"""The chain registry: the shipped chains.toml, environment overrides, and refused files."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.registry import DEFAULT_REGISTRY_FILE, RegistryError, load_registry, redact_url

SHIPPED_CHAINS = {
    "localhost": 31337,
    "polygon": 137,
    "polygon-amoy": 80002,
    "ethereum": 1,
    "sepolia": 11155111,
    "bsc": 56,
    "bsc-testnet": 97,
    "arbitrum": 42161,
    "arbitrum-sepolia": 421614,
}

VALID_CHAIN = """
[chains.{name}]
chain_id = {chain_id}
enabled = true
rpc_urls = ["http://127.0.0.1:8545"]
confirmations = 2
block_time_seconds = 1
fee_model = "eip1559"
max_fee_per_gas_gwei = "100"
max_priority_fee_per_gas_gwei = "1.5"
native = {{ symbol = "ETH", decimals = 18, min = "0.001", max = "10" }}
[chains.{name}.tokens.USDT]
address = "0x700b6A60ce7EaaEA56F065753d8dcB9653dbAD35"
decimals = 6
min = "{min}"
max = "{max}"
"""


def chain_toml(name: str = "dev", chain_id: int = 31337, min: str = "0.01", max: str = "1000") -> str:
    return VALID_CHAIN.format(name=name, chain_id=chain_id, min=min, max=max)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "chains.toml"
    path.write_text(text, encoding="utf-8")
    return path


def refused(path: Path, environ: dict[str, str] | None = None) -> str:
    with pytest.raises(RegistryError) as exc:
        load_registry(path, environ={} if environ is None else environ)
    return str(exc.value)


def test_shipped_registry_has_every_chain() -> None:
    registry = load_registry(DEFAULT_REGISTRY_FILE, environ={})
    assert {name: chain.chain_id for name, chain in registry.chains.items()} == SHIPPED_CHAINS
    assert [c.name for c in registry.enabled] == ["localhost"]
    assert registry.get("solana") is None


def test_shipped_registry_details() -> None:
    registry = load_registry(DEFAULT_REGISTRY_FILE, environ={})
    bsc = registry.chains["bsc"]
    assert bsc.fee_model == "legacy"
    assert registry.chains["bsc-testnet"].fee_model == "legacy"
    assert {c.fee_model for n, c in registry.chains.items() if not n.startswith("bsc")} == {"eip1559"}
    # BEP-20 stablecoins on BSC have 18 decimals, elsewhere 6.
    assert bsc.asset("USDT") is not None and bsc.asset("USDT").decimals == 18  # type: ignore[union-attr]
    assert bsc.max_fee_per_gas == 20 * 10**9
    localhost = registry.chains["localhost"]
    assert localhost.native.is_native and localhost.native.symbol == "ETH"
    usdt = localhost.asset("USDT")
    assert usdt is not None
    assert usdt.address == "0x700b6A60ce7EaaEA56F065753d8dcB9653dbAD35"
    assert (usdt.decimals, usdt.min_units, usdt.max_units) == (6, 10_000, 1_000_000 * 10**6)
    assert registry.chains["arbitrum"].block_time_seconds == 0.25
    assert registry.chains["polygon"].native.symbol == "POL"


def test_rpc_url_override_from_the_environment() -> None:
    environ = {"PAYOUTS_RPC_URLS_POLYGON_AMOY": "https://a.example/key1, https://b.example/key2"}
    registry = load_registry(DEFAULT_REGISTRY_FILE, environ=environ)
    assert registry.chains["polygon-amoy"].rpc_urls == (
        "https://a.example/key1",
        "https://b.example/key2",
    )
    assert registry.chains["polygon"].rpc_urls == ("https://polygon-rpc.com",)


def test_rpc_url_override_must_be_http() -> None:
    message = refused(DEFAULT_REGISTRY_FILE, {"PAYOUTS_RPC_URLS_POLYGON_AMOY": "wss://a.example"})
    assert "chains.polygon-amoy.rpc_urls" in message


def test_enabled_chains_override() -> None:
    registry = load_registry(DEFAULT_REGISTRY_FILE, environ={"PAYOUTS_ENABLED_CHAINS": "polygon, bsc"})
    assert sorted(c.name for c in registry.enabled) == ["bsc", "polygon"]
    assert registry.chains["localhost"].enabled is False


def test_enabled_chains_override_may_disable_everything() -> None:
    registry = load_registry(DEFAULT_REGISTRY_FILE, environ={"PAYOUTS_ENABLED_CHAINS": ""})
    assert registry.enabled == []


def test_enabled_chains_override_with_an_unknown_chain() -> None:
    message = refused(DEFAULT_REGISTRY_FILE, {"PAYOUTS_ENABLED_CHAINS": "localhost,solana"})
    assert "PAYOUTS_ENABLED_CHAINS" in message and "solana" in message


def test_chains_file_from_the_environment(tmp_path: Path) -> None:
    path = write(tmp_path, chain_toml("dev", 1337))
    registry = load_registry(environ={"PAYOUTS_CHAINS_FILE": str(path)})
    assert list(registry.chains) == ["dev"]


def test_a_minimal_valid_file_loads(tmp_path: Path) -> None:
    registry = load_registry(write(tmp_path, chain_toml()), environ={})
    dev = registry.chains["dev"]
    assert dev.max_priority_fee_per_gas == 1_500_000_000
    assert dev.asset("USDT") is not None and dev.asset("DOGE") is None


def test_missing_field(tmp_path: Path) -> None:
    text = chain_toml().replace("confirmations = 2\n", "")
    message = refused(write(tmp_path, text))
    assert "chains.dev.confirmations is missing" in message
    assert str(tmp_path / "chains.toml") in message


def test_wrong_type(tmp_path: Path) -> None:
    message = refused(write(tmp_path, chain_toml().replace("chain_id = 31337", 'chain_id = "31337"')))
    assert "chains.dev.chain_id has the wrong type" in message


def test_bad_address_checksum(tmp_path: Path) -> None:
    text = chain_toml().replace(
        "0x700b6A60ce7EaaEA56F065753d8dcB9653dbAD35", "0x700B6A60ce7EaaEA56F065753d8dcB9653dbAD35"
    )
    message = refused(write(tmp_path, text))
    assert "chains.dev.tokens.USDT.address" in message
    assert "checksum" in message


def test_duplicate_chain_id(tmp_path: Path) -> None:
    message = refused(write(tmp_path, chain_toml("one", 5) + chain_toml("two", 5)))
    assert "one" in message and "two" in message and "share chain_id 5" in message


def test_min_above_max(tmp_path: Path) -> None:
    message = refused(write(tmp_path, chain_toml(min="10", max="1")))
    assert "chains.dev.tokens.USDT" in message and "min <= max" in message


def test_amount_more_precise_than_the_asset(tmp_path: Path) -> None:
    message = refused(write(tmp_path, chain_toml(min="0.0000001")))
    assert "chains.dev.tokens.USDT" in message and "decimal places" in message


def test_unknown_fee_model(tmp_path: Path) -> None:
    message = refused(write(tmp_path, chain_toml().replace('"eip1559"', '"eip4844"')))
    assert "chains.dev.fee_model" in message


def test_tokens_that_are_not_a_table(tmp_path: Path) -> None:
    text = chain_toml().split("[chains.dev.tokens.USDT]")[0] + 'tokens = "USDT"\n'
    message = refused(write(tmp_path, text))
    assert "chains.dev.tokens" in message


def test_not_toml(tmp_path: Path) -> None:
    message = refused(write(tmp_path, "[chains.dev\n"))
    assert "cannot read the chain registry" in message


def test_no_chains(tmp_path: Path) -> None:
    assert "no [chains.<name>] tables" in refused(write(tmp_path, "title = 'x'\n"))


def test_missing_file(tmp_path: Path) -> None:
    assert "cannot read the chain registry" in refused(tmp_path / "absent.toml")


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "https://polygon-mainnet.g.alchemy.com/v2/SECRETKEY",
            "https://polygon-mainnet.g.alchemy.com",
        ),
        ("https://rpc.example/?apikey=SECRETKEY", "https://rpc.example"),
        ("https://user:SECRETKEY@rpc.example:8443/x", "https://rpc.example:8443"),
        ("http://127.0.0.1:8545", "http://127.0.0.1:8545"),
    ],
)
def test_redact_url_hides_paths_and_keys(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    assert "SECRETKEY" not in redact_url(url)


def test_account_manager_settings(tmp_path: Path) -> None:
    dev = load_registry(write(tmp_path, chain_toml()), environ={}).chains["dev"]
    assert (dev.account_check_seconds, dev.gas_station_transfers) == (15, 50)
    text = chain_toml().replace("confirmations = 2\n", "confirmations = 2\naccount_check_seconds = 0\n")
    assert "chains.dev.account_check_seconds must be an integer from 1 to 3600" in refused(write(tmp_path, text))
    text = chain_toml().replace("confirmations = 2\n", 'confirmations = 2\ngas_station_transfers = "50"\n')
    assert "chains.dev.gas_station_transfers must be an integer" in refused(write(tmp_path, text))
