"""Named SQL: sql/queries.sql parses, every name the code asks for exists, bad files are refused."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from db.queries import QUERIES_FILE, parse_queries, query

REPO_ROOT = Path(__file__).resolve().parents[2]


def shipped() -> dict[str, str]:
    return parse_queries(QUERIES_FILE.read_text(encoding="utf-8"))


def test_shipped_file_parses_into_sql_without_comments() -> None:
    queries = shipped()
    assert "insert_withdrawal" in queries
    for name, sql in queries.items():
        assert sql, name
        assert not any(line.startswith("--") for line in sql.splitlines()), name
        assert sql.split()[0].upper() in {"SELECT", "INSERT", "UPDATE", "DELETE", "WITH"}, name


def test_every_query_the_code_names_exists() -> None:
    used: set[str] = set()
    for folder in ("app", "db", "jobs"):
        for path in (REPO_ROOT / folder).rglob("*.py"):
            used |= set(re.findall(r"""\bquery\(\s*["']([a-z_0-9]+)["']""", path.read_text(encoding="utf-8")))
    assert used, "no query(...) calls found: the scan is broken"
    assert used <= set(shipped()), sorted(used - set(shipped()))


def test_query_returns_the_parsed_block() -> None:
    for name, sql in shipped().items():
        assert query(name) == sql
    # Reads are scoped to the caller: another client's withdrawal is simply not found.
    assert "client_id = %(client_id)s" in query("get_withdrawal")


def test_unknown_name_is_a_key_error_naming_the_file() -> None:
    with pytest.raises(KeyError, match="no query named 'nope'") as exc:
        query("nope")
    assert str(QUERIES_FILE) in str(exc.value)


def test_blocks_are_split_at_names() -> None:
    text = "-- header\n\n-- name: one\n-- what one does\nSELECT 1;\n\n-- name: two\nSELECT\n  2;\n"
    assert parse_queries(text) == {"one": "SELECT 1;", "two": "SELECT\n  2;"}


def test_a_name_defined_twice_is_refused() -> None:
    text = "-- name: one\nSELECT 1;\n-- name: one\nSELECT 2;\n"
    with pytest.raises(ValueError, match="'one' is defined twice"):
        parse_queries(text)


@pytest.mark.parametrize(
    "text",
    [
        "-- name: empty\n-- only a description\n\n-- name: next\nSELECT 1;\n",
        "-- name: next\nSELECT 1;\n-- name: empty\n",
    ],
)
def test_an_empty_block_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="'empty' is empty"):
        parse_queries(text)


def test_the_create_statement_queues_validate_at_its_task_priority() -> None:
    from jobs.queue import PRIORITY

    match = re.search(r"SELECT 'validate', 'validate', (\d+),", query("insert_withdrawal"))
    assert match is not None
    assert int(match.group(1)) == PRIORITY["validate"]
