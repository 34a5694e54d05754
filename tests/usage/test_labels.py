"""Operation labels: identifiers in paths become ``{id}``, and every label is cleaned."""

from __future__ import annotations

import pytest

from app.auth.secret import generate_secret
from app.kit.labels import normalize_path, operation_label, request_label


@pytest.mark.parametrize(
    ("path", "normalized"),
    [
        pytest.param("/poi/123", "/poi/{id}", id="number"),
        pytest.param("/poi/123/photos/7", "/poi/{id}/photos/{id}", id="numbers-nested"),
        pytest.param(
            "/sessions/6f1c2d3e-1111-4a2b-9c3d-123456789abc",
            "/sessions/{id}",
            id="uuid",
        ),
        pytest.param(
            "/sessions/6F1C2D3E-1111-4A2B-9C3D-123456789ABC/stop",
            "/sessions/{id}/stop",
            id="uuid-upper-case",
        ),
        pytest.param("/objects/507f1f77bcf86cd799439011", "/objects/{id}", id="object-id-hex"),
        pytest.param(
            "/commits/da39a3ee5e6b4b0d3255bfef95601890afd80709", "/commits/{id}", id="sha1-hex"
        ),
        pytest.param("/customers/cus_NffrFeUfNV2Hib", "/customers/{id}", id="prefixed-token"),
        pytest.param("/files/3fA9x7QkZ2pLm8Rt4vWy", "/files/{id}", id="base62-run"),
        pytest.param("/poi/123/", "/poi/{id}/", id="trailing-slash"),
    ],
)
def test_an_identifier_segment_becomes_a_placeholder(path: str, normalized: str) -> None:
    assert normalize_path(path) == normalized


def test_a_key_pasted_into_a_path_is_never_part_of_its_label() -> None:
    key = generate_secret("kh")

    assert request_label("GET", f"/v3/poi/{key}") == "GET /v3/poi/{id}"


@pytest.mark.parametrize(
    "path",
    [
        "/v3/poi",
        "/v3/referencedata",
        "/charge-points",
        "/oauth2/token",
        "/api/v1/users/me",
        "/images/logo.png",
        "/poi/123abc",  # a short mix of digits and letters: a name as often as an id
        "/charging-stations-by-operator",
        "/reports/by_organization",
        "/",
    ],
)
def test_a_segment_that_names_a_kind_of_resource_is_kept(path: str) -> None:
    assert normalize_path(path) == path


def test_identifiers_only_replace_whole_segments() -> None:
    assert normalize_path("/v2/poi-123/x123") == "/v2/poi-123/x123"


def test_a_request_label_is_the_method_and_the_normalized_path() -> None:
    assert request_label("POST", "/poi/42/comments") == "POST /poi/{id}/comments"


@pytest.mark.parametrize(
    ("raw", "cleaned"),
    [
        pytest.param("GET /x\x00y", "GET /x\ufffdy", id="nul"),
        pytest.param("graphql:Q\udc00", "graphql:Q\ufffd", id="lone-surrogate"),
        pytest.param("GET /\x1b[31m", "GET /\ufffd[31m", id="escape"),
        pytest.param("GET /a\u202eb", "GET /a\ufffdb", id="bidi-override"),
        pytest.param("GET /a\nb", "GET /a\ufffdb", id="line-break"),
    ],
)
def test_a_label_holding_what_a_value_may_not_hold_is_cleaned_not_refused(
    raw: str, cleaned: str
) -> None:
    assert operation_label(raw) == cleaned


def test_a_path_holding_a_control_character_is_cleaned() -> None:
    assert request_label("GET\x00", "/x\x00y/\x1b") == "GET\ufffd /x\ufffdy/\ufffd"


def test_a_label_is_cut_to_200_characters() -> None:
    assert operation_label("x" * 5000) == "x" * 200
    assert len(request_label("GET", "/" + "x" * 100_000)) == 200


def test_a_long_method_is_cut() -> None:
    assert request_label("X" * 50, "/") == "X" * 10 + " /"
