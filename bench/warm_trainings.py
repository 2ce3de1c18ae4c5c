"""CPU seconds of one training forked from a warm process: after the entry point's own imports
only (each child imports scikit-learn, arch and pyarrow's pandas conversion on first use), and
after all of `crpbot_assets.warm_trainer.WARM_IMPORTS`, as the warm trainer server does. Side by
side in one process (the parent imports the rest between the two rounds); the ratio is what to
compare (the machine is shared). The training is the suite's small run: ETH, 50 days, one epoch,
two folds, one thread.
Usage: python bench/warm_trainings.py [trainings per round]
"""

from __future__ import annotations

import gc
import importlib
import os
import resource
import sys

os.environ["OMP_NUM_THREADS"] = "1"  # before torch loads: what the suite's trainings use

from crpbot_assets.warm_trainer import ENTRY_POINT_IMPORTS, FIRST_USE_IMPORTS  # noqa: E402


def forked_training_cpu(dataset, rounds: int) -> list[float]:
    """CPU seconds of each of `rounds` trainings, each in a child forked from this process."""
    from v8_model.config import TrainConfig
    from v8_model.model.pipeline import train_and_evaluate

    config = TrainConfig(epochs=1, batch_size=1024, seed=5, folds=2)
    seconds = []
    for _ in range(rounds):
        gc.freeze()  # as the server does before it forks
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        pid = os.fork()
        if pid == 0:
            train_and_evaluate(dataset, symbol="ETH", config=config)
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            sys.exit("a forked training failed")
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        seconds.append(
            after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime,
        )
    return seconds


def main(rounds: int) -> None:
    for module in ENTRY_POINT_IMPORTS:
        importlib.import_module(module)
    from v8_model.data.features import build_features_dataset
    from v8_model.data.synthetic import generate_candles
    from v8_model.defaults import MINUTES_PER_DAY

    candles = generate_candles("ETH", minutes=50 * MINUTES_PER_DAY, seed=5, signal=0.3)
    dataset = build_features_dataset(candles)
    # Building the dataset already imported pyarrow's part: only the others are measured.
    missing = [module for module in FIRST_USE_IMPORTS if module not in sys.modules]
    entry_point_only = forked_training_cpu(dataset, rounds)
    for module in missing:
        importlib.import_module(module)
    warm = forked_training_cpu(dataset, rounds)
    ratio = sorted(entry_point_only)[rounds // 2] / sorted(warm)[rounds // 2]
    print(f"{rounds} forked trainings each, CPU s per training:")
    print(f"  the entry point's imports only   {' '.join(f'{s:.2f}' for s in entry_point_only)}")
    print(f"  then {', '.join(missing)}:")
    print(f"  all of WARM_IMPORTS              {' '.join(f'{s:.2f}' for s in warm)}")
    print(f"  ratio of the medians             {ratio:.2f}x")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3)
