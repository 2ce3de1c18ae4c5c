"""CPU seconds for one test's Dagster instance (`tests/conftest.py`, `dagster_instance`): creating
its SQLite tables afresh against copying an empty instance made once, side by side in one process.
Usage: python bench/test_instances.py [instances]
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import dagster as dg


def cpu_per_instance(prepare: Callable[[Path], None], count: int) -> float:
    with tempfile.TemporaryDirectory() as base:
        start = time.process_time()
        for index in range(count):
            home = Path(base) / str(index)
            prepare(home)
            with dg.instance_for_test(temp_dir=str(home)):
                pass
        return (time.process_time() - start) / count


def main(count: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        empty = Path(folder) / "empty"
        empty.mkdir()
        with dg.instance_for_test(temp_dir=str(empty)):
            pass
        fresh = cpu_per_instance(lambda home: home.mkdir(), count)
        copied = cpu_per_instance(lambda home: shutil.copytree(empty, home), count)
    print(f"{count} instances, CPU s per instance:")
    print(f"  tables created afresh   {fresh:.3f}")
    print(f"  empty instance copied   {copied:.3f}")
    print(f"  ratio                   {fresh / copied:.1f}x")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 10)
