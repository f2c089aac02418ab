"""The committed contract artifacts must match what the pinned vyper compiles today."""

from jobs.contracts.build import (
    EXPECTED_COMPILER,
    artifact_path,
    compile_contract,
    contract_sources,
    load_artifact,
    render_artifact,
    stale_artifacts,
)


def test_every_contract_has_a_committed_artifact() -> None:
    sources = contract_sources()
    assert [source.stem for source in sources] == ["BatchPayout", "TestToken"]
    for source in sources:
        assert artifact_path(source.stem).is_file(), f"missing artifact for {source.name}"


def test_committed_artifacts_match_a_fresh_compile() -> None:
    for source in contract_sources():
        fresh = compile_contract(source)
        committed = load_artifact(source.stem)
        assert committed["compiler"] == EXPECTED_COMPILER
        assert committed["contract"] == source.stem
        assert committed["abi"] == fresh["abi"]
        assert committed["bytecode"] == fresh["bytecode"]
        assert artifact_path(source.stem).read_text(encoding="utf-8") == render_artifact(fresh)
    assert stale_artifacts() == []


def test_test_token_exposes_the_erc20_interface() -> None:
    abi = load_artifact("TestToken")["abi"]
    functions = {entry["name"] for entry in abi if entry["type"] == "function"}
    events = {entry["name"] for entry in abi if entry["type"] == "event"}
    assert {
        "transfer",
        "transferFrom",
        "approve",
        "allowance",
        "balanceOf",
        "totalSupply",
        "name",
        "symbol",
        "decimals",
        "mint",
    } <= functions
    assert events == {"Transfer", "Approval"}
    constructor = next(entry for entry in abi if entry["type"] == "constructor")
    input_types = [arg["type"] for arg in constructor["inputs"]]
    assert input_types == ["string", "string", "uint8", "uint256"]
