"""Real server processes for the integration tests: free ports, the ``keyhouse`` command, and
processes started with their output in a log file and always stopped afterwards."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[1]
# A bound on a failure's wait, not a speed test: a loaded machine takes several seconds just to
# import keyhouse in a fresh process.
STARTUP_SECONDS = 60.0
STOP_SECONDS = 5.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def keyhouse_command() -> list[str]:
    script = Path(sys.executable).with_name("keyhouse")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from app.cli import main; main()"]


def environment_without_settings() -> dict[str, str]:
    """This process's environment minus the developer's own ``KEYHOUSE_*`` settings (Redis, a
    service token...), so that a test sets exactly the ones it means; but for the tests' server
    secret (tests/conftest.py), which every deployment on PostgreSQL needs."""
    return {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("KEYHOUSE_") or name == "KEYHOUSE_SECRET_KEY"
    }


def keyhouse_json(env: dict[str, str], *args: str) -> dict[str, str]:
    done = subprocess.run(
        [*keyhouse_command(), *args, "--json"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, f"keyhouse {' '.join(args)}: {done.stderr}"
    result: dict[str, str] = json.loads(done.stdout)
    return result


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=STOP_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=STOP_SECONDS)


@contextmanager
def started(command: list[str], log: Path, **kwargs: Any) -> Iterator[subprocess.Popen[bytes]]:
    """A process with its output in ``log``, stopped (SIGTERM, then SIGKILL) on exit."""
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, **kwargs)
    try:
        yield process
    finally:
        stop(process)


def wait_until(
    ready: Callable[[], bool], process: subprocess.Popen[bytes], what: str, log: Path
) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"{what} exited with {process.returncode}:\n{log.read_text()}")
        if ready():
            return
        time.sleep(0.05)
    pytest.fail(f"{what} did not start within {STARTUP_SECONDS:g}s:\n{log.read_text()}")


def answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=0.5, trust_env=False).status_code == 200
    except httpx.TransportError:
        return False
