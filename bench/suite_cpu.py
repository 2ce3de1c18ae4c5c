"""Where the test suite's CPU goes: every test's CPU seconds, its own and its children's.

    .venv/bin/python bench/suite_cpu.py [PYTEST ARGS]    default: the whole suite as `make test`

A test's CPU seconds, not its wall seconds (which include waiting for the cores the other workers
use), say what making it cheaper would save; the workers' "done at" column shows a suite kept
waiting on one worker's last files. Each pytest-xdist worker writes one line per test: the CPU
time of the worker and of the child processes it reaped (trainings, servers, the main command)
from the test's setup to its teardown. Prints the totals, the workers, and the files and tests
that cost most.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import pytest

OUTPUT_ENV_VAR = "CRPBOT_SUITE_CPU_DIR"
SHOWN = 20


def _cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None):
    """The plugin's one hook: CPU and wall seconds around each test, to this worker's file."""
    cpu, wall = _cpu_seconds(), time.monotonic()
    yield
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    line = {
        "test": item.nodeid,
        "cpu": _cpu_seconds() - cpu,
        "wall": time.monotonic() - wall,
        "ended": time.time(),
    }
    with open(Path(os.environ[OUTPUT_ENV_VAR]) / f"{worker}.jsonl", "a") as out:
        out.write(json.dumps(line, allow_nan=False) + "\n")


def report(folder: Path) -> None:
    by_worker = {
        path.stem: [json.loads(line) for line in path.open()]
        for path in sorted(folder.glob("*.jsonl"))
    }
    tests = [test for mine in by_worker.values() for test in mine]
    by_file: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0])
    for test in tests:
        entry = by_file[test["test"].split("::")[0]]
        entry[0] += test["cpu"]
        entry[1] += test["wall"]
        entry[2] += 1
    total = sum(test["cpu"] for test in tests)
    print(f"{len(tests)} tests, {total:.0f} CPU s in tests (collection and workers not counted)")
    first = min(test["ended"] - test["wall"] for test in tests)
    print(f"\n{'worker':>8} {'tests':>5} {'CPU s':>7} {'busy s':>7} {'done at s':>9}")
    for worker, mine in by_worker.items():
        cpu, busy = sum(t["cpu"] for t in mine), sum(t["wall"] for t in mine)
        done = max(t["ended"] for t in mine) - first
        print(f"{worker:>8} {len(mine):5d} {cpu:7.1f} {busy:7.1f} {done:9.1f}")
    print(f"\n{'CPU s':>7} {'wall s':>7} {'tests':>5}  file (the {SHOWN} costliest)")
    for name, (cpu, wall, count) in sorted(by_file.items(), key=lambda kv: -kv[1][0])[:SHOWN]:
        print(f"{cpu:7.1f} {wall:7.1f} {count:5d}  {name}")
    print(f"\n{'CPU s':>7} {'wall s':>7}  test (the {SHOWN} costliest)")
    for test in sorted(tests, key=lambda t: -t["cpu"])[:SHOWN]:
        print(f"{test['cpu']:7.1f} {test['wall']:7.1f}  {test['test']}")


def main(args: list[str]) -> int:
    repo = Path(__file__).resolve().parents[1]
    workers = max(3, os.cpu_count() or 1)  # as `make test`
    with tempfile.TemporaryDirectory(prefix="suite-cpu-") as folder:
        # This file alone on the workers' path (bench/'s other scripts stay off it).
        plugins = Path(folder) / "plugins"
        plugins.mkdir()
        (plugins / "suite_cpu.py").symlink_to(Path(__file__).resolve())
        lines = Path(folder) / "lines"
        lines.mkdir()
        path = [str(plugins), *filter(None, [os.environ.get("PYTHONPATH")])]
        env = {**os.environ, OUTPUT_ENV_VAR: str(lines), "PYTHONPATH": os.pathsep.join(path)}
        env.pop("PYTHONDONTWRITEBYTECODE", None)  # as `make test`: .pyc written on first import
        command = [sys.executable, "-m", "pytest", "-p", "suite_cpu"]
        command += args or [
            "-n",
            str(workers),
            "--dist",
            "loadfile",
            "--no-loadscope-reorder",
            "-q",
        ]
        start = time.monotonic()
        code = subprocess.call(command, cwd=repo, env=env)
        print(f"\npytest exited {code} after {time.monotonic() - start:.0f} s wall\n")
        report(lines)
    return code


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
