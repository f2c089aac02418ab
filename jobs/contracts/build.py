"""Compile the Vyper contracts in this directory into committed JSON artifacts.

Usage:
    python -m jobs.contracts.build           # (re)write build/<Name>.json
    python -m jobs.contracts.build --check   # exit 1 if committed artifacts are stale
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import vyper

CONTRACTS_DIR = Path(__file__).resolve().parent
BUILD_DIR = CONTRACTS_DIR / "build"
COMPILER = f"vyper {vyper.__version__}"
EXPECTED_COMPILER = "vyper 0.4.3"


def contract_sources() -> list[Path]:
    """All Vyper sources in the contracts directory, in a stable order."""
    return sorted(CONTRACTS_DIR.glob("*.vy"))


def compile_contract(source_path: Path) -> dict[str, Any]:
    """Compile one Vyper file into the artifact dictionary that gets committed."""
    if COMPILER != EXPECTED_COMPILER:
        raise RuntimeError(f"artifacts must be built with {EXPECTED_COMPILER}, but {COMPILER} is installed")
    output = vyper.compile_code(
        source_path.read_text(encoding="utf-8"),
        # A relative name keeps compiler messages independent of the checkout location.
        contract_path=source_path.name,
        output_formats=["abi", "bytecode", "bytecode_runtime"],
    )
    return {
        "contract": source_path.stem,
        "compiler": COMPILER,
        "abi": output["abi"],
        "bytecode": output["bytecode"],
        "bytecode_runtime": output["bytecode_runtime"],
    }


def render_artifact(artifact: dict[str, Any]) -> str:
    """Serialise an artifact deterministically so diffs only show real changes."""
    return json.dumps(artifact, sort_keys=True, indent=2) + "\n"


def artifact_path(name: str) -> Path:
    return BUILD_DIR / f"{name}.json"


def load_artifact(name: str) -> dict[str, Any]:
    """Read the committed artifact for contract `name` (e.g. "TestToken")."""
    path = artifact_path(name)
    if not path.is_file():
        raise FileNotFoundError(
            f"no compiled artifact for contract {name!r} at {path}; run `python -m jobs.contracts.build`"
        )
    artifact: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return artifact


def stale_artifacts() -> list[str]:
    """Names of contracts whose committed artifact differs from a fresh compile."""
    stale = []
    for source in contract_sources():
        path = artifact_path(source.stem)
        fresh = render_artifact(compile_contract(source))
        committed = path.read_text(encoding="utf-8") if path.is_file() else None
        if committed != fresh:
            stale.append(source.stem)
    return stale


def write_artifacts() -> list[Path]:
    """Compile every contract and write its artifact; returns the written paths."""
    BUILD_DIR.mkdir(exist_ok=True)
    written = []
    for source in contract_sources():
        path = artifact_path(source.stem)
        path.write_text(render_artifact(compile_contract(source)), encoding="utf-8")
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--check",
        action="store_true",
        help="do not write; exit 1 if a committed artifact differs from a fresh compile",
    )
    args = parser.parse_args(argv)

    if args.check:
        stale = stale_artifacts()
        if stale:
            print(
                f"stale contract artifacts: {', '.join(stale)}; "
                "run `python -m jobs.contracts.build` and commit jobs/contracts/build/",
                file=sys.stderr,
            )
            return 1
        print(f"contract artifacts are up to date ({len(contract_sources())} checked)")
        return 0

    for path in write_artifacts():
        print(f"wrote {path.relative_to(CONTRACTS_DIR.parent.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
