"""Peak memory of the training process against the size of its float32 feature matrix.

For each span of 1-minute candles (default: 1 and 5 years), builds the features file, then runs
`python -m v8_model.job.train` in a child process under the emulated container contract (one epoch,
no Pipes) and reads the child's own peak RSS (VmHWM in /proc), not wait4's, which also counts
the bench process's memory at the fork.

The child first imports what the trainer imports (the entry point with torch, pandas, pyarrow
and scipy; arch for the bootstrap it runs after training; and what training imports on first
use: scikit-learn's scaler and metrics, and torch._dynamo, which torch loads when the first
optimizer is built, about 75 MiB) and records its RSS at that point; then it runs the entry
point in the same process. That fixed cost, about 670 MiB of libraries, is the same for a day of
data as for five years. Modules the training still imports after that point are printed under
each row: their memory counts as training's.

Targets, both printed:
- above imports: the peak RSS minus the RSS after the imports is at most 3x the float32 feature
  matrix (rows x 72 x 4 bytes), at every span: what training adds for its data.
- absolute: the peak RSS itself is at most 3x the matrix at five years (at one year the matrix,
  about 144 MiB, is smaller than the libraries, so no trainer with torch can meet 3x there).

Usage: python bench/memory.py [years ...]      e.g. python bench/memory.py 1 5
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from crpbot_assets.sagemaker.container import emulate_training_container
from v8_model.data.features import FEATURE_NAMES, build_features_dataset
from v8_model.data.synthetic import generate_candles
from v8_model.defaults import MINUTES_PER_DAY
from v8_model.job.entrypoint import features_filename

SYMBOL = "BTC"
MIB = 1024 * 1024
TARGET_RATIO = 3.0
ABSOLUTE_TARGET_YEARS = 5  # from here on the peak itself must be within TARGET_RATIO


def peak_rss_of_training(years: float, work: Path) -> Measurement:
    """Rows, matrix bytes, seconds, RSS after imports, peak RSS and the modules first imported
    during one training run."""
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
    read_end, write_end = os.pipe()
    started = time.perf_counter()
    child = subprocess.Popen(
        [sys.executable, "-c", TRAIN_AFTER_IMPORTS, str(write_end)],
        env={**os.environ, **container.env},
        stdout=subprocess.DEVNULL,
        pass_fds=(write_end,),
    )
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        reported = pipe.read().split("\n")
    _, status, _ = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0 or len(reported) != 4:
        raise SystemExit(f"training failed: {container.failure_reason()}")
    imports, peak = (int(kib) * 1024 for kib in reported[:2])
    matrix = rows * len(FEATURE_NAMES) * 4
    return Measurement(rows, matrix, seconds, imports, peak, tuple(reported[2].split()))


# The training child: the trainer's imports, its peak RSS then, the entry point run in the same
# process exactly as `python -m v8_model.job.train` runs it, its peak RSS at the end, and the
# modules first imported during training, all written to the pipe named by argv[1].
# VmHWM is this process's own high-water mark; wait4's ru_maxrss would also count the bench
# process's memory at the fork before exec.
TRAIN_AFTER_IMPORTS = """
import os, re, runpy, sys
import arch.bootstrap, sklearn.metrics, sklearn.preprocessing, torch._dynamo
import v8_model.job.entrypoint

def vm_hwm_kib():
    with open("/proc/self/status") as status:
        return re.search(r"VmHWM:\\s+(\\d+) kB", status.read()).group(1)

fd = int(sys.argv[1])
imported = set(sys.modules)
os.write(fd, f"{vm_hwm_kib()}\\n".encode())
sys.argv = ["v8_model.job.train"]
try:
    runpy.run_module("v8_model.job.train", run_name="__main__", alter_sys=True)
finally:
    later = sorted(set(sys.modules) - imported)
    os.write(fd, f"{vm_hwm_kib()}\\n{' '.join(later)}\\n".encode())
"""


@dataclass(frozen=True)
class Measurement:
    rows: int
    matrix: int  # bytes of the float32 feature matrix
    seconds: float
    imports: int  # RSS after the trainer's imports, bytes
    peak: int  # peak RSS of the training process, bytes
    later_imports: tuple[str, ...]  # modules first imported during training

    @property
    def above_imports(self) -> float:
        return (self.peak - self.imports) / self.matrix

    @property
    def ratio(self) -> float:
        return self.peak / self.matrix


def verdict(met: bool) -> str:
    return "met" if met else "NOT met"


def main(argv: list[str]) -> int:
    spans = [float(value) for value in argv] or [1.0, 5.0]
    print(
        f"{'years':>5} {'rows':>10} {'matrix MiB':>10} {'imports MiB':>11} {'peak RSS MiB':>12} "
        f"{'ratio':>6} {'above imports':>13} {'s':>6}"
    )
    for years in spans:
        with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
            m = peak_rss_of_training(years, Path(tmp))
        absolute = (
            f"; absolute <= {TARGET_RATIO:g}x: {verdict(m.ratio <= TARGET_RATIO)}"
            if years >= ABSOLUTE_TARGET_YEARS
            else ""
        )
        print(
            f"{years:>5g} {m.rows:>10,} {m.matrix / MIB:>10.0f} {m.imports / MIB:>11.0f} "
            f"{m.peak / MIB:>12.0f} {m.ratio:>6.2f} {m.above_imports:>12.2f}x {m.seconds:>6.1f}  "
            f"above imports <= {TARGET_RATIO:g}x: {verdict(m.above_imports <= TARGET_RATIO)}"
            + absolute,
            flush=True,
        )
        print(
            f"{'':>5} first imported during training (counted as training's): "
            f"{' '.join(m.later_imports) or 'none'}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
