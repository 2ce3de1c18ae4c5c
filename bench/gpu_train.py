"""Full-size training through the real entry point on whatever accelerator is present.

Two years of synthetic 1-minute candles for one symbol (about 1.05 M rows, the size of one of the
seed's parquet files) go through build_features_dataset into an emulated SageMaker container tree,
then `v8_model.entrypoint.main` trains with the seed's batch size and learning rate. Prints the
device, seconds per epoch, training samples per second, and the gates.
Usage: python bench/gpu_train.py [epochs] [symbol]
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from v8_model.entrypoint import main
from v8_model.features import build_features_dataset
from v8_model.layout import features_filename
from v8_model.synthetic import generate_candles


def run() -> int:
    epochs = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    symbol = sys.argv[2] if len(sys.argv) > 2 else "BTC"
    device = "cuda" if torch.cuda.is_available() else "cpu"
    name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    print(f"device={device} name={name} torch={torch.__version__}", flush=True)

    started = time.perf_counter()
    candles = generate_candles(symbol, minutes=2 * 365 * 1440, seed=0, signal=0.1)
    dataset = build_features_dataset(candles)
    print(f"rows={len(dataset)} data_seconds={time.perf_counter() - started:.1f}", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        training = root / "input" / "data" / "training"
        training.mkdir(parents=True)
        dataset.to_parquet(training / features_filename(symbol))
        env = {
            "SM_CHANNEL_TRAINING": str(training),
            "SM_MODEL_DIR": str(root / "model"),
            "SM_OUTPUT_DIR": str(root / "output"),
            "SM_INPUT_CONFIG_DIR": str(root / "input" / "config"),
        }
        args = ["--epochs", str(epochs), "--symbols", symbol, "--patience", str(epochs)]
        code = main(args, env)
        if code != 0:
            print((root / "output" / "failure").read_text())
            return code
        metrics = json.loads((root / "model" / symbol / "metrics.json").read_text())

    train_rows = metrics["segment_rows"]["train"]
    per_epoch = metrics["train_seconds"] / metrics["epochs_run"]
    print(f"train_rows={train_rows} seconds_per_epoch={per_epoch:.2f}")
    print(f"train_samples_per_second={train_rows / per_epoch:,.0f} device={metrics['device']}")
    print(
        f"test_accuracy={metrics['test_accuracy']:.4f} "
        f"baseline_accuracy={metrics['baseline_accuracy']:.4f} macro_f1={metrics['macro_f1']:.4f}"
    )
    for gate, result in metrics["gates"].items():
        print(f"gate {gate}: passed={result['passed']} value={result['value']:.4g}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run())
