"""Peak memory of the training process against the size of its float32 feature matrix.

For each span of 1-minute candles (default: 1 and 5 years), builds the features file, then runs
`python -m v8_model.train` in a child process under the emulated container contract (one epoch,
no Pipes) and reads the child's peak RSS from the kernel (wait4). Target: peak RSS at most 3× the
float32 feature matrix (rows × 72 × 4 bytes).

The interpreter and its libraries cost a fixed ~370 MiB, which dominates short spans; the bench
prints it and the ratio above it too.

Usage: python bench/memory.py [years ...]      e.g. python bench/memory.py 1 5
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from crpbot_assets.container import emulate_training_container
from v8_model.entrypoint import features_filename
from v8_model.features import FEATURE_NAMES, build_features_dataset
from v8_model.synthetic import MINUTES_PER_DAY, generate_candles

SYMBOL = "BTC"
MIB = 1024 * 1024
TARGET_RATIO = 3.0


def peak_rss_of_training(years: float, work: Path) -> tuple[int, int, float, int]:
    """(rows, matrix bytes, seconds, peak RSS bytes) of one training run on `years` of data."""
    candles = generate_candles(SYMBOL, minutes=int(years * 365 * MINUTES_PER_DAY), seed=3)
    dataset = build_features_dataset(candles)
    del candles
    rows = len(dataset)
    container = emulate_training_container(
        work / "opt_ml",
        job_name=f"bench-memory-{years:g}y",
        hyperparameters={"epochs": "1", "batch-size": "4096", "symbols": SYMBOL},
        channels={"training": "application/x-parquet"},
    )
    dataset.to_parquet(container.channel_dir("training") / features_filename(SYMBOL), index=False)
    del dataset
    started = time.perf_counter()
    child = subprocess.Popen(
        [sys.executable, "-m", "v8_model.train"],
        env={**os.environ, **container.env},
        stdout=subprocess.DEVNULL,
    )
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"training failed: {container.failure_reason()}")
    return rows, rows * len(FEATURE_NAMES) * 4, seconds, usage.ru_maxrss * 1024  # KiB on Linux


def peak_rss_of_imports() -> int:
    """Peak RSS of a process that only imports the entry point (python, torch, pandas, ...)."""
    child = subprocess.Popen([sys.executable, "-c", "import v8_model.entrypoint, torch"])
    _, _, usage = os.wait4(child.pid, 0)
    return usage.ru_maxrss * 1024


def main(argv: list[str]) -> int:
    spans = [float(value) for value in argv] or [1.0, 5.0]
    baseline = peak_rss_of_imports()
    print(f"imports alone (interpreter, torch, pandas, pyarrow): {baseline / MIB:.0f} MiB")
    print(
        f"{'years':>5} {'rows':>10} {'matrix MiB':>10} {'peak RSS MiB':>12} {'ratio':>6} "
        f"{'above imports':>13} {'s':>6}"
    )
    for years in spans:
        with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
            rows, matrix, seconds, peak = peak_rss_of_training(years, Path(tmp))
        verdict = "met" if peak <= TARGET_RATIO * matrix else "NOT met"
        print(
            f"{years:>5g} {rows:>10,} {matrix / MIB:>10.0f} {peak / MIB:>12.0f} "
            f"{peak / matrix:>6.2f} {(peak - baseline) / matrix:>12.2f}x {seconds:>6.1f}  "
            f"target <= {TARGET_RATIO:g}x: {verdict}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
