"""Telling a database outage from a statement the database refused."""

from __future__ import annotations

import sqlite3

import pytest
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

from app.kit.db import is_outage, outages_as_unavailable
from app.kit.errors import Unavailable


@pytest.mark.parametrize(
    "error",
    [
        ConnectionRefusedError(111, "Connection refused"),
        TimeoutError(),
        OperationalError("SELECT 1", {}, RuntimeError("gone"), connection_invalidated=True),
        OperationalError("SELECT 1", {}, sqlite3.OperationalError("database is locked")),
    ],
    ids=["refused", "timeout", "connection lost", "sqlite locked"],
)
def test_a_database_that_does_not_answer_is_an_outage(error: Exception) -> None:
    assert is_outage(error)


@pytest.mark.parametrize(
    "error",
    [
        OperationalError("SELECT x", {}, sqlite3.OperationalError("no such column: x")),
        ProgrammingError("SELECT x", {}, RuntimeError("column x does not exist")),
        IntegrityError("INSERT", {}, RuntimeError("duplicate key")),
        ValueError("a bug"),
    ],
    ids=["sqlite bad statement", "bad statement", "constraint", "bug"],
)
def test_a_refused_statement_or_a_bug_is_not_an_outage(error: Exception) -> None:
    assert not is_outage(error)


def test_an_outage_becomes_unavailable_with_its_cause_kept_for_the_log() -> None:
    cause = ConnectionResetError(104, "Connection reset by peer")

    with pytest.raises(Unavailable) as raised, outages_as_unavailable():
        raise cause

    assert raised.value.code == "UNAVAILABLE"
    assert raised.value.__cause__ is cause


def test_other_errors_pass_through_unchanged() -> None:
    with pytest.raises(ValueError, match="a bug"), outages_as_unavailable():
        raise ValueError("a bug")
