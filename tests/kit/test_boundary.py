"""The boundary's one check: what a value, a name and a traffic label may hold."""

from __future__ import annotations

import pytest

from app.kit.boundary import (
    EXCERPT_LENGTH,
    MAX_VALUE_LENGTH,
    excerpt,
    label,
    name_key,
    name_problem,
    problems_in,
    value_problem,
)


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("GET /x\x00y", "holds a NUL character at position 6"),
        ("Q\udc00", "holds a lone surrogate at position 1"),
        ("a\x1b[31m", "holds a control character at position 1"),
        ("a\x7f", "holds a control character at position 1"),
        ("a\x85", "holds a control character at position 1"),
        ("abc\u202edcb", "holds a bidirectional control character at position 3"),
        ("x" * (MAX_VALUE_LENGTH + 1), f"is longer than {MAX_VALUE_LENGTH} characters (4097)"),
    ],
)
def test_a_value_with_a_character_no_store_should_hold_is_refused(value: str, problem: str) -> None:
    assert value_problem(value) == problem


@pytest.mark.parametrize(
    "value", ["deploy-bot", "Zürich östra", "línea\nnueva\ttab", "😀 keys", "", "x" * 4096]
)
def test_ordinary_values_pass(value: str) -> None:
    assert value_problem(value) is None


@pytest.mark.parametrize(
    "name",
    [
        "adm\u200bin",
        "a\u200db",
        "line\nbreak",
        "tab\there",
        "soft\u00adhyphen",
        "a\u2028b",
        "\ufeffbom",
    ],
)
def test_a_name_refuses_invisible_characters_and_line_breaks(name: str) -> None:
    assert name_problem(name, max_length=128) is not None


def test_a_name_may_hold_any_visible_character() -> None:
    assert name_problem("Zürich 北京 déploiement ☃", max_length=128) is None


def test_a_name_longer_than_its_limit_is_refused() -> None:
    assert name_problem("x" * 129, max_length=128) == "can have at most 128 characters, got 129"


@pytest.mark.parametrize("other", ["ａdmin", "ADMIN", "Admin", "ａｄｍｉｎ"])
def test_names_are_compared_under_nfkc_and_case_folding(other: str) -> None:
    assert name_key(other) == name_key("admin")


def test_distinct_names_stay_distinct() -> None:
    assert name_key("admin") != name_key("admins")


def test_a_label_is_cleaned_and_cut_never_refused() -> None:
    assert label("GET /x\x00y\udc00z\u202e", 100) == "GET /x\ufffdy\ufffdz\ufffd"
    assert label("Q" * 150, 100) == "Q" * 100
    assert label("GET /poi", 100) == "GET /poi"


def test_an_excerpt_is_short_and_clean() -> None:
    quoted = excerpt("\x00" + "x" * 10_000)
    assert len(quoted) == EXCERPT_LENGTH + 1
    assert quoted.startswith("\ufffd")
    assert quoted.endswith("…")
    assert excerpt("short") == "short"


def test_problems_are_found_anywhere_in_a_json_value_with_their_path() -> None:
    data = {"input": {"name": "ok", "scopes": ["read", "bad\x00"]}, "k\x00": 1}
    assert list(problems_in(data)) == [
        ("input.scopes.1", "holds a NUL character at position 3"),
        ("value (a field name)", "holds a NUL character at position 1"),
    ]
