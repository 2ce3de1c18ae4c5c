"""Opening a new embedded MLflow store: a copy of the empty store vs MLflow's own migrations.

    .venv/bin/python bench/mlflow_store.py [ROUNDS]    default 3

Each measurement is a fresh process (as each symbol's process is) that imports MLflow first and
then times, in CPU seconds, `crpbot_assets.tracking.mlflow_client` on a new storage root: once
as the project does it (a copy of `var/cache/mlflow-<version>-empty.db`), once letting MLflow
create and migrate the file itself. The two alternate; prints each and the ratio of the medians.
"""

from __future__ import annotations

import statistics
import subprocess
import sys

PROBE = """
import sys, tempfile, time
import mlflow  # imported before the clock starts in both cases
import crpbot_assets.tracking as tracking
if sys.argv[1] == "migrations":
    tracking._create_embedded_store = lambda folder: None  # MLflow makes the new file itself
with tempfile.TemporaryDirectory() as root:
    start = time.process_time()
    tracking.mlflow_client(tracking.tracking_target(root))
    print(time.process_time() - start)
"""


def measure(way: str) -> float:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, way], capture_output=True, text=True, check=True
    )
    return float(done.stdout.split()[-1])


def main(rounds: int) -> None:
    measure("copy")  # makes the empty store if this checkout has none yet
    seconds: dict[str, list[float]] = {"copy": [], "migrations": []}
    for _ in range(rounds):
        for way, values in seconds.items():
            values.append(measure(way))
    for way, values in seconds.items():
        print(f"{way:>10}: " + " ".join(f"{value:.2f}" for value in values) + " CPU s")
    ratio = statistics.median(seconds["copy"]) / statistics.median(seconds["migrations"])
    print(f"median copy / migrations: {ratio:.2f}x")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3)
