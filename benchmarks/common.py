"""Shared helpers for the benchmarks: ports, server subprocesses, wrk, keyhouse set-up, tables.

Everything runs on loopback. Every subprocess started here is stopped when its ``with`` block
ends, also on errors, Ctrl-C and SIGTERM; every wait is bounded.
"""

from __future__ import annotations

import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from types import FrameType
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
PYTHON = sys.executable
HOST = "127.0.0.1"

SERVER_START_TIMEOUT = 30.0
SERVER_STOP_TIMEOUT = 10.0
INIT_TIMEOUT = 120.0


class BenchmarkError(Exception):
    """The benchmark could not measure what it set out to measure."""


# --- process hygiene ------------------------------------------------------------------------


def _exit_on_sigterm(signum: int, _frame: FrameType | None) -> None:
    # SystemExit unwinds the ``with`` blocks, which stop the servers.
    raise SystemExit(128 + signum)


def install_signal_handlers() -> None:
    signal.signal(signal.SIGTERM, _exit_on_sigterm)


def require_wrk() -> str:
    path = shutil.which("wrk")
    if path is None:
        sys.exit(
            "error: the benchmarks need the HTTP load generator `wrk`, which is not installed.\n"
            "  Debian/Ubuntu: sudo apt-get install -y wrk\n"
            "  macOS:         brew install wrk"
        )
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


# --- servers --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Server:
    name: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    def url(self, path: str = "/") -> str:
        return f"http://{HOST}:{self.port}{path}"


def _log_tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(empty log)"


def _responds(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1.0):  # noqa: S310 - loopback http only
            return True
    except urllib.error.HTTPError as error:
        # Any HTTP answer means the server is up (a GraphQL endpoint may answer GET with 400).
        return error.code < 500
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return False


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.terminate()  # uvicorn shuts down gracefully (runs the lifespan's shutdown)
    try:
        process.wait(timeout=SERVER_STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=SERVER_STOP_TIMEOUT)


@contextmanager
def uvicorn_server(
    name: str,
    target: Sequence[str],
    *,
    log_dir: Path,
    env: Mapping[str, str] | None = None,
    ready_path: str = "/",
) -> Iterator[Server]:
    """One uvicorn worker serving ``target`` (e.g. ``["app.main:create_app", "--factory"]``)."""
    port = free_port()
    command = [
        PYTHON,
        "-m",
        "uvicorn",
        *target,
        "--host",
        HOST,
        "--port",
        str(port),
        "--no-access-log",
        "--log-level",
        "warning",
        "--loop",
        "uvloop",
        "--http",
        "httptools",
    ]
    log_path = log_dir / f"{name}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command,
            cwd=REPO_ROOT,
            env=dict(env if env is not None else os.environ),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            server = Server(name, port, process, log_path)
            deadline = time.monotonic() + SERVER_START_TIMEOUT
            while not _responds(server.url(ready_path)):
                if process.poll() is not None:
                    raise BenchmarkError(
                        f"{name} exited with code {process.returncode} while starting:\n"
                        + _log_tail(log_path)
                    )
                if time.monotonic() > deadline:
                    raise BenchmarkError(
                        f"{name} did not answer within {SERVER_START_TIMEOUT:g}s:\n"
                        + _log_tail(log_path)
                    )
                time.sleep(0.1)
            yield server
            if process.poll() is not None:
                raise BenchmarkError(f"{name} exited during the benchmark:\n" + _log_tail(log_path))
        finally:
            _stop(process)


def keyhouse_server(env: Mapping[str, str], *, log_dir: Path) -> AbstractContextManager[Server]:
    """keyhouse itself, as ``keyhouse serve`` runs it, ready once /healthz answers."""
    return uvicorn_server(
        "keyhouse",
        ["app.main:create_app", "--factory"],
        env=env,
        log_dir=log_dir,
        ready_path="/healthz",
    )


def baseline_server(name: str, app: str, *, log_dir: Path) -> AbstractContextManager[Server]:
    """A baseline app of benchmarks/ (``module:attribute``)."""
    return uvicorn_server(name, [app, "--app-dir", str(Path(__file__).parent)], log_dir=log_dir)


def _lower(items: Iterable[tuple[str, str]]) -> dict[str, str]:
    return {name.lower(): value for name, value in items}


def http_request(
    url: str,
    *,
    method: str = "GET",
    body: bytes | None = None,
    headers: Mapping[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """One request (for the sanity checks around each measurement); any status is returned,
    header names in lower case."""
    request = urllib.request.Request(url, data=body, method=method, headers=dict(headers or {}))  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=10.0) as response:  # noqa: S310
            return response.status, _lower(response.headers.items()), response.read()
    except urllib.error.HTTPError as error:
        return error.code, _lower(error.headers.items()), error.read()


# --- wrk ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadSettings:
    connections: int = 32
    threads: int = 2
    duration_s: float = 10.0
    warmup_s: float = 2.0


@dataclass(frozen=True)
class WrkResult:
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    requests: int
    non_2xx: int
    socket_errors: int


@dataclass(frozen=True)
class CpuUse:
    """Where the CPU went during a measured run (Linux /proc; None elsewhere).

    On a shared machine throughput follows whatever CPU the server gets; the server's CPU time
    per request does not, and ``other_cores`` says how much of the machine something else took.
    """

    server_us_per_request: float | None
    server_cores: float | None
    wrk_cores: float | None
    other_cores: float | None


@dataclass(frozen=True)
class Measurement:
    target: str
    url: str
    result: WrkResult
    cpu: CpuUse

    def as_json(self) -> dict[str, Any]:
        return {"target": self.target, "url": self.url, **asdict(self.result), **asdict(self.cpu)}


_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}


def _latency_ms(output: str, percentile: int) -> float:
    match = re.search(rf"^\s*{percentile}%\s+([\d.]+)(us|ms|s|m|h)\s*$", output, re.MULTILINE)
    if match is None:
        raise BenchmarkError(f"no {percentile}% latency in wrk's output:\n{output}")
    return float(match.group(1)) * _UNIT_MS[match.group(2)]


def parse_wrk(output: str) -> WrkResult:
    rate = re.search(r"^Requests/sec:\s+([\d.]+)", output, re.MULTILINE)
    total = re.search(r"^\s*(\d+) requests in ", output, re.MULTILINE)
    if rate is None or total is None:
        raise BenchmarkError(f"unexpected wrk output:\n{output}")
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    sockets = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    return WrkResult(
        requests_per_second=float(rate.group(1)),
        p50_ms=_latency_ms(output, 50),
        p99_ms=_latency_ms(output, 99),
        requests=int(total.group(1)),
        non_2xx=0 if non_2xx is None else int(non_2xx.group(1)),
        socket_errors=0 if sockets is None else sum(int(n) for n in sockets.groups()),
    )


def _lua_string(value: str) -> str:
    out = []
    for char in value:
        if char in '\\"':
            out.append("\\" + char)
        elif 32 <= ord(char) < 127:
            out.append(char)
        else:
            out.extend(f"\\{byte}" for byte in char.encode())
    return '"' + "".join(out) + '"'


def write_wrk_script(
    path: Path, *, method: str, body: str | None = None, headers: Mapping[str, str] | None = None
) -> Path:
    """A wrk Lua script sending the same request every time."""
    lines = [f"wrk.method = {_lua_string(method)}"]
    if body is not None:
        lines.append(f"wrk.body = {_lua_string(body)}")
    for name, value in (headers or {}).items():
        lines.append(f"wrk.headers[{_lua_string(name)}] = {_lua_string(value)}")
    path.write_text("\n".join(lines) + "\n")
    return path


def run_wrk(url: str, *, load: LoadSettings, duration_s: float, script: Path | None) -> WrkResult:
    command = [
        require_wrk(),
        f"-t{load.threads}",
        f"-c{load.connections}",
        f"-d{max(1, round(duration_s))}s",
        "--timeout",
        "5s",
        "--latency",
    ]
    if script is not None:
        command += ["-s", str(script)]
    command.append(url)
    completed = subprocess.run(
        command, capture_output=True, text=True, timeout=duration_s + 60, check=False
    )
    if completed.returncode != 0:
        raise BenchmarkError(f"wrk failed ({completed.returncode}):\n{completed.stderr}")
    return parse_wrk(completed.stdout)


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _process_cpu_seconds(pid: int) -> float | None:
    """User + system time of a process and all its threads."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()  # fields from the 3rd (state) on
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def _machine_busy_seconds() -> float | None:
    """CPU time the whole machine spent busy since boot (all cores)."""
    try:
        first = Path("/proc/stat").read_text().splitlines()[0].split()
    except (OSError, IndexError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in first[1:9])
    return (user + nice + system + irq + softirq + steal) / _CLOCK_TICKS


def _own_and_children_seconds() -> tuple[float, float]:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, children.ru_utime + children.ru_stime


def _delta(after: float | None, before: float | None) -> float | None:
    return None if after is None or before is None else after - before


def measure(
    target: str,
    server: Server,
    path: str,
    *,
    load: LoadSettings,
    script: Path | None = None,
) -> Measurement:
    """A short warm-up run (discarded), then the measured run, with the CPU it cost."""
    url = server.url(path)
    print(f"  {target}: warm-up {load.warmup_s:g}s, then {load.duration_s:g}s ...", flush=True)
    if load.warmup_s > 0:
        run_wrk(url, load=load, duration_s=load.warmup_s, script=script)
    server_before = _process_cpu_seconds(server.process.pid)
    machine_before = _machine_busy_seconds()
    own_before, children_before = _own_and_children_seconds()
    started = time.monotonic()
    result = run_wrk(url, load=load, duration_s=load.duration_s, script=script)
    wall = time.monotonic() - started
    own_after, children_after = _own_and_children_seconds()
    server_s = _delta(_process_cpu_seconds(server.process.pid), server_before)
    machine_s = _delta(_machine_busy_seconds(), machine_before)
    wrk_s = children_after - children_before  # wrk is the only child waited for meanwhile
    own_s = own_after - own_before
    other_s = None if machine_s is None or server_s is None else machine_s - server_s - wrk_s
    cpu = CpuUse(
        server_us_per_request=(
            None if server_s is None or not result.requests else server_s / result.requests * 1e6
        ),
        server_cores=None if server_s is None else server_s / wall,
        wrk_cores=wrk_s / wall,
        other_cores=None if other_s is None else max(0.0, other_s - own_s) / wall,
    )
    return Measurement(target, url, result, cpu)


@dataclass(frozen=True)
class Target:
    """One thing to load: a path on a running server, with an optional wrk script."""

    name: str
    server: Server
    path: str
    script: Path | None = None


# One dict per round: target name -> its measurement in that round.
Rounds = list[dict[str, Measurement]]


def measure_in_rounds(targets: Sequence[Target], *, load: LoadSettings, rounds: int) -> Rounds:
    """Every target in turn, ``rounds`` times over. With the servers all running (an idle one
    costs nothing), a noisy spell on the shared machine hits one round, not one target."""
    measured: Rounds = []
    for number in range(1, rounds + 1):
        print(f"Round {number} of {rounds}", flush=True)
        measured.append(
            {
                target.name: measure(
                    target.name, target.server, target.path, load=load, script=target.script
                )
                for target in targets
            }
        )
    return measured


def median_ratio(rounds: Rounds, target: str, baseline: str) -> float:
    """The median over rounds of each round's own throughput ratio."""
    return statistics.median(throughput_ratio(each[target], each[baseline]) for each in rounds)


def median_cpu_ratio(rounds: Rounds, target: str, baseline: str) -> float | None:
    known = [
        ratio
        for ratio in (cpu_ratio(each[target], each[baseline]) for each in rounds)
        if ratio is not None
    ]
    return statistics.median(known) if known else None


def median_measurement(rounds: Rounds, target: str) -> Measurement:
    """The target's round of median throughput (what the tables show)."""
    measured = sorted((each[target] for each in rounds), key=lambda m: m.result.requests_per_second)
    return measured[len(measured) // 2]


# --- keyhouse -------------------------------------------------------------------------------

HUGE_RATE_LIMIT = 1_000_000_000


def keyhouse_env(database_path: Path) -> dict[str, str]:
    """The environment of a keyhouse process on a private SQLite database, with a default rate
    limit no benchmark can reach, and no Redis."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("KEYHOUSE_")}
    env.update(
        {
            "KEYHOUSE_DATABASE_URL": f"sqlite+aiosqlite:///{database_path}",
            "KEYHOUSE_DEFAULT_RATE_LIMIT_REQUESTS": str(HUGE_RATE_LIMIT),
            "KEYHOUSE_DEFAULT_RATE_LIMIT_PER_SECONDS": "1",
            "KEYHOUSE_LOG_LEVEL": "WARNING",
        }
    )
    return env


@dataclass(frozen=True)
class Tenant:
    organization_id: str
    api_key: str


def keyhouse_init(env: Mapping[str, str], organization: str = "Bench") -> Tenant:
    """``keyhouse init --organization NAME --json``: migrations, an organization, its admin key."""
    executable = Path(PYTHON).with_name("keyhouse")
    command = (
        [str(executable)]
        if executable.exists()
        else [PYTHON, "-c", "from app.cli import main; main()"]
    )
    completed = subprocess.run(
        [*command, "init", "--organization", organization, "--json"],
        cwd=REPO_ROOT,
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=INIT_TIMEOUT,
        check=False,
    )
    if completed.returncode != 0:
        raise BenchmarkError(f"keyhouse init failed:\n{completed.stderr}{completed.stdout}")
    created = json.loads(completed.stdout)
    return Tenant(created["organizationId"], created["apiKey"])


# --- reporting ------------------------------------------------------------------------------


def print_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        first, *rest = cells
        return "  ".join(
            [first.ljust(widths[0]), *(c.rjust(w) for c, w in zip(rest, widths[1:], strict=True))]
        )

    print(line(headers))
    print("  ".join("-" * width for width in widths))
    for row in rows:
        print(line(row))


def _optional(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def measurement_rows(measurements: Sequence[Measurement]) -> list[list[str]]:
    return [
        [
            m.target,
            f"{m.result.requests_per_second:,.0f}",
            f"{m.result.p50_ms:.2f} ms",
            f"{m.result.p99_ms:.2f} ms",
            f"{m.result.non_2xx + m.result.socket_errors}",
            _optional(m.cpu.server_us_per_request, ".0f"),
            _optional(m.cpu.server_cores, ".2f"),
            _optional(m.cpu.other_cores, ".2f"),
        ]
        for m in measurements
    ]


MEASUREMENT_HEADERS = [
    "target",
    "req/s",
    "p50",
    "p99",
    "errors",
    "server CPU us/req",
    "server cores",
    "other load (cores)",
]

MEASUREMENT_LEGEND = (
    "errors: non-2xx responses + socket errors. server CPU us/req: the server process's CPU time "
    "per request (all threads), independent of what else runs on the machine. other load: CPU "
    "used meanwhile by processes other than the server and wrk (a busy machine makes req/s and "
    "p99 worse for reasons outside the code)."
)


def throughput_ratio(measurement: Measurement, baseline: Measurement) -> float:
    return measurement.result.requests_per_second / baseline.result.requests_per_second


def cpu_ratio(measurement: Measurement, baseline: Measurement) -> float | None:
    """Baseline's server CPU per request over the measurement's: the throughput ratio the two
    would show with a core each to themselves."""
    ours, theirs = measurement.cpu.server_us_per_request, baseline.cpu.server_us_per_request
    return None if ours is None or theirs is None or ours == 0 else theirs / ours


def percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0%}"


def wrap(text: str) -> str:
    return textwrap.fill(text, width=100)


def verdict(passed: bool) -> str:
    return "PASS" if passed else "FAIL"


BUSY_MACHINE_CORES = 0.25


def check_clean(measurement: Measurement) -> None:
    """A run with failed requests measured something else than it claims; a run on a busy
    machine measured the machine as much as the code."""
    if measurement.result.non_2xx or measurement.result.socket_errors:
        print(
            f"  warning: {measurement.target}: {measurement.result.non_2xx} non-2xx responses, "
            f"{measurement.result.socket_errors} socket errors",
            file=sys.stderr,
        )
    other = measurement.cpu.other_cores
    if other is not None and other > BUSY_MACHINE_CORES:
        print(
            f"  warning: {measurement.target}: other processes used {other:.2f} cores during "
            "the run; req/s and latency are lower than on a quiet machine",
            file=sys.stderr,
        )


def _wrk_version() -> str:
    wrk = shutil.which("wrk")
    if wrk is None:
        return "missing"
    completed = subprocess.run([wrk, "-v"], capture_output=True, text=True, timeout=10, check=False)
    first = (completed.stdout or completed.stderr).strip().splitlines()
    return first[0] if first else "unknown"


def environment() -> dict[str, Any]:
    packages: dict[str, str | None] = {}
    for name in ("starlette", "fastapi", "strawberry-graphql", "uvicorn", "sqlalchemy", "limits"):
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            packages[name] = None
    return {
        "time": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "wrk": _wrk_version(),
        "packages": packages,
    }


def write_results(name: str, results: Mapping[str, Any]) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps({"environment": environment(), **results}, indent=2) + "\n")
    return path
