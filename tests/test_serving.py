"""What ``keyhouse serve --workers N`` accepts before it starts anything (the workers themselves
run in tests/test_workers.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from app import serving
from app.config import Settings


def test_one_worker_needs_nothing_more() -> None:
    assert serving.workers_problem(Settings(redis_url=None), 1) is None


def test_several_workers_need_redis_and_say_so_in_one_line() -> None:
    problem = serving.workers_problem(Settings(redis_url=None), 4)

    assert problem is not None
    assert "\n" not in problem
    assert "--workers 4 needs Redis (KEYHOUSE_REDIS_URL)" in problem
    assert serving.workers_problem(Settings(redis_url="redis://127.0.0.1:6379/0"), 4) is None


@pytest.mark.parametrize("workers", [0, -1])
def test_fewer_than_one_worker_is_refused(workers: int) -> None:
    assert (
        serving.workers_problem(Settings(redis_url=None), workers)
        == "--workers must be at least 1."
    )


def test_the_operators_metrics_directory_is_emptied_of_an_earlier_runs_counts(
    tmp_path: Path,
) -> None:
    directory = tmp_path / "metrics"
    directory.mkdir()
    (directory / "counter_123.db").write_bytes(b"old")
    (directory / "notes.txt").write_text("kept")

    with serving._metrics_directory(str(directory)) as chosen:
        assert chosen == directory
        assert sorted(path.name for path in directory.iterdir()) == ["notes.txt"]
    assert directory.exists()


def test_without_one_a_directory_of_the_servers_own_is_removed_afterwards() -> None:
    with serving._metrics_directory(None) as made:
        assert made.is_dir()
    assert not made.exists()
