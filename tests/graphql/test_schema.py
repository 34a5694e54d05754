"""``schema.graphql`` at the repository root is the schema the code serves, exactly."""

from __future__ import annotations

import difflib
from pathlib import Path

from graphql import build_schema as parse_sdl

from app.config import Settings
from app.graphql.schema import build_schema

SCHEMA_FILE = Path(__file__).resolve().parents[2] / "schema.graphql"


def exported_schema() -> str:
    """What ``keyhouse export-schema`` (``make schema``) writes."""
    return build_schema(Settings()).as_str() + "\n"


def test_schema_graphql_equals_the_schema_exported_from_the_code() -> None:
    assert SCHEMA_FILE.is_file(), f"{SCHEMA_FILE} is missing: run `make schema` and commit it."
    committed = SCHEMA_FILE.read_text()
    exported = exported_schema()
    if committed != exported:
        diff = "".join(
            difflib.unified_diff(
                committed.splitlines(keepends=True),
                exported.splitlines(keepends=True),
                fromfile="schema.graphql (committed)",
                tofile="schema exported from the code",
            )
        )
        raise AssertionError(
            "schema.graphql is out of date with the code: run `make schema` "
            f"(keyhouse export-schema --output schema.graphql) and commit the result.\n{diff}"
        )


def test_schema_graphql_is_valid_sdl_with_the_root_operations() -> None:
    schema = parse_sdl(SCHEMA_FILE.read_text())
    assert schema.query_type is not None
    assert schema.query_type.name == "Query"
    assert schema.mutation_type is not None
    assert schema.mutation_type.name == "Mutation"
    assert {"organization", "apiKeys", "apiKey", "scopes"} <= set(schema.query_type.fields)
    assert {"createApiKey", "revokeApiKey"} <= set(schema.mutation_type.fields)
