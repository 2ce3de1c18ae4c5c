"""`python -m v8_model.train`: the SageMaker training-container contract, also run locally.

Contract (SPEC §7), read from the environment, never from hard-coded paths when a variable is set:
- training data: `{SYMBOL}_features.parquet` in SM_CHANNEL_TRAINING;
- optional fitted processors: `processor_{SYMBOL}_v8.json` in SM_CHANNEL_PROCESSOR;
- hyperparameters: `hyperparameters.json` in SM_INPUT_CONFIG_DIR (or SM_HPS), string or
  JSON-encoded values, overridden by `--key value` flags (how SageMaker's driver passes them);
- output: SM_MODEL_DIR/{SYMBOL}/ (weights.npz, config.json, processor, metrics.json) and
  SM_MODEL_DIR/training_summary.json;
- checkpoints: with CRPBOT_CHECKPOINT_DIR set (the SageMaker trainer sets it to the checkpoint
  path of spot jobs), each symbol's training state is saved there after every epoch and resumed
  after a restart; it is removed once the symbol's model is written;
- environment: the packages of `job-requirements.txt` and torch >= MIN_TORCH_VERSION are checked
  first; what is missing is named in the failure reason;
- failure: on any error the reason goes to the failure file (SM_OUTPUT_FAILURE, else
  SM_OUTPUT_DIR/failure), every output this run wrote is removed, and the exit code is 1.
  It never exits 0 with a model missing.

Under Dagster Pipes (DAGSTER_PIPES_CONTEXT set) it also streams each epoch line to the run's logs
and reports the materialization metadata and one asset check per gate.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import traceback
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from v8_model.defaults import DEFAULT_PATIENCE, DEFAULT_SEED, SYMBOLS
from v8_model.features import FEATURES_DATASET_COLUMNS
from v8_model.gates import GATE_NAMES
from v8_model.job_requirements import check_job_environment
from v8_model.net import save_model
from v8_model.pipeline import SymbolOutcome, train_and_evaluate
from v8_model.processor import V8FeatureProcessor, processor_filename
from v8_model.storage import atomic_write_text
from v8_model.train import EpochStats, TrainConfig

SUMMARY_FILE = "training_summary.json"
METRICS_FILE = "metrics.json"
FAILURE_REASON_LIMIT = 1024  # SageMaker keeps the first 1024 characters as FailureReason


class HyperparameterError(ValueError):
    """A hyperparameter that is unknown or has a value of the wrong kind."""


def features_filename(symbol: str) -> str:
    return f"{symbol}_features.parquet"


@dataclass(frozen=True)
class ContainerPaths:
    config_dir: Path
    training_channel: Path
    processor_channel: Path | None
    model_dir: Path
    failure_file: Path
    checkpoint_dir: Path | None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ContainerPaths:
        base = Path(env.get("SM_BASE_DIR", "/opt/ml"))  # the container's default root
        output_dir = Path(env.get("SM_OUTPUT_DIR", base / "output"))
        processor = env.get("SM_CHANNEL_PROCESSOR")
        checkpoints = env.get("CRPBOT_CHECKPOINT_DIR")
        return cls(
            config_dir=Path(env.get("SM_INPUT_CONFIG_DIR", base / "input" / "config")),
            training_channel=Path(
                env.get("SM_CHANNEL_TRAINING", base / "input" / "data" / "training")
            ),
            processor_channel=Path(processor) if processor else None,
            model_dir=Path(env.get("SM_MODEL_DIR", base / "model")),
            failure_file=Path(env.get("SM_OUTPUT_FAILURE", output_dir / "failure")),
            checkpoint_dir=Path(checkpoints) if checkpoints else None,
        )


# name → (converter, default); names as SageMaker and the seed spell them.
HYPERPARAMETERS = {
    "epochs": (int, TrainConfig.epochs),
    "batch-size": (int, TrainConfig.batch_size),
    "learning-rate": (float, TrainConfig.learning_rate),
    "weight-decay": (float, TrainConfig.weight_decay),
    "patience": (int, DEFAULT_PATIENCE),
    "seed": (int, DEFAULT_SEED),
    "dropout": (float, TrainConfig.dropout),
    "temperature-init": (float, TrainConfig.temperature_init),
    "symbols": (str, ""),
    "device": (str, ""),
}


def _decode(name: str, raw: object) -> object:
    """Undo SageMaker's encoding: values are strings, sometimes JSON-encoded ('"BTC"', '100')."""
    if isinstance(raw, str):
        with contextlib.suppress(json.JSONDecodeError):
            raw = json.loads(raw)
    if name == "symbols" and isinstance(raw, list):
        raw = ",".join(str(item) for item in raw)
    converter = HYPERPARAMETERS[name][0]
    try:
        if converter is int and isinstance(raw, float) and not raw.is_integer():
            raise ValueError
        return converter(raw)
    except (TypeError, ValueError) as error:
        raise HyperparameterError(
            f"hyperparameter {name!r}: expected {converter.__name__}, got {raw!r}"
        ) from error


def _file_hyperparameters(paths: ContainerPaths, env: Mapping[str, str]) -> dict[str, object]:
    path = paths.config_dir / "hyperparameters.json"
    if path.is_file():
        source, text = str(path), path.read_text(encoding="utf-8")
    elif "SM_HPS" in env:
        source, text = "SM_HPS", env["SM_HPS"]
    else:
        return {}
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as error:
        raise HyperparameterError(f"{source}: not valid JSON ({error})") from error
    if not isinstance(raw, dict):
        raise HyperparameterError(f"{source}: expected a JSON object of hyperparameters")
    values = {}
    for key, value in raw.items():
        name = key.replace("_", "-")
        if key.startswith("sagemaker_"):  # set by SageMaker's own tooling, not ours
            continue
        if name not in HYPERPARAMETERS:
            raise HyperparameterError(
                f"{source}: unknown hyperparameter {key!r}; known: {', '.join(HYPERPARAMETERS)}"
            )
        values[name] = _decode(name, value)
    return values


class _RaisingParser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse would sys.exit(2) without a failure file
        raise HyperparameterError(f"command line: {message}")


def resolve_hyperparameters(
    argv: Sequence[str], paths: ContainerPaths, env: Mapping[str, str]
) -> dict[str, object]:
    """Defaults, then hyperparameters.json / SM_HPS, then command-line flags."""
    values = {name: default for name, (_, default) in HYPERPARAMETERS.items()}
    values.update(_file_hyperparameters(paths, env))
    parser = _RaisingParser(prog="python -m v8_model.train", description=__doc__)
    for name in HYPERPARAMETERS:
        parser.add_argument(f"--{name}", f"--{name.replace('-', '_')}", dest=name, default=None)
    for name, raw in vars(parser.parse_args(list(argv))).items():
        if raw is not None:
            values[name] = _decode(name, raw)
    return values


def _symbols(values: Mapping[str, object], pipes_partition: str | None) -> list[str]:
    text = str(values["symbols"]).strip()
    symbols = [s.strip().upper() for s in text.split(",") if s.strip()] if text else []
    if pipes_partition:
        if symbols and symbols != [pipes_partition]:
            raise HyperparameterError(
                f"launched for partition {pipes_partition!r} but symbols={text!r}; "
                "a Dagster run trains exactly its partition's symbol"
            )
        return [pipes_partition]
    return symbols or list(SYMBOLS)


def _train_config(values: Mapping[str, object]) -> TrainConfig:
    return TrainConfig(
        epochs=values["epochs"],
        batch_size=values["batch-size"],
        learning_rate=values["learning-rate"],
        weight_decay=values["weight-decay"],
        patience=values["patience"],
        seed=values["seed"],
        dropout=values["dropout"],
        temperature_init=values["temperature-init"],
        device=values["device"] or None,
    )


def read_features_dataset(path: Path) -> pd.DataFrame:
    """Read a `{SYMBOL}_features.parquet` file, refusing one without the expected columns."""
    if not path.is_file():
        raise FileNotFoundError(
            f"training data {path} not found: upload {path.name} to the training channel"
        )
    dataset = pd.read_parquet(path)
    missing = [column for column in FEATURES_DATASET_COLUMNS if column not in dataset.columns]
    if missing:
        raise ValueError(
            f"{path}: missing {len(missing)} of {len(FEATURES_DATASET_COLUMNS)} columns, "
            f"first {missing[:5]}; rebuild it with v8_model.features.build_features_dataset"
        )
    return dataset


@contextlib.contextmanager
def _pipes_session(env: Mapping[str, str]) -> Iterator[object | None]:
    """Dagster Pipes context when launched by Dagster, else None (plain SageMaker or CLI run)."""
    if "DAGSTER_PIPES_CONTEXT" not in env:
        yield None
        return
    from v8_model.pipes import open_pipes

    with open_pipes() as pipes:
        yield pipes


def _report_to_pipes(pipes, outcome: SymbolOutcome, model_dir: Path) -> None:
    metrics = outcome.metrics
    pipes.report_asset_materialization(
        metadata={
            "model_dir": {"raw_value": str(model_dir), "type": "path"},
            "test_accuracy": metrics["test_accuracy"],
            "baseline_accuracy": metrics["baseline_accuracy"],
            "macro_f1": metrics["macro_f1"],
            "ece": metrics["ece"],
            "train_seconds": metrics["train_seconds"],
            "device": metrics["device"],
            "epochs_run": metrics["epochs_run"],
            "best_epoch": metrics["best_epoch"],
            "best_val_loss": metrics["best_val_loss"],
            "class_mix": {"raw_value": metrics["class_mix"], "type": "json"},
            "all_gates_passed": metrics["all_gates_passed"],
        }
    )
    for name in GATE_NAMES:
        gate = outcome.gates[name]
        pipes.report_asset_check(
            check_name=name,
            passed=gate.passed,
            severity="ERROR",
            metadata={"value": gate.value, "threshold": gate.threshold, **gate.details},
        )


def _train_symbol(symbol, paths, config, pipes) -> tuple[SymbolOutcome, Path]:
    dataset = read_features_dataset(paths.training_channel / features_filename(symbol))
    processor = None
    if paths.processor_channel is not None:
        processor = V8FeatureProcessor.load(paths.processor_channel / processor_filename(symbol))

    def on_epoch(stats: EpochStats) -> None:
        line = f"symbol={symbol} {stats.line()}"
        print(line, flush=True)
        if pipes is not None:
            pipes.log.info(line)

    checkpoint_dir = paths.checkpoint_dir / symbol if paths.checkpoint_dir else None
    outcome = train_and_evaluate(
        dataset,
        symbol=symbol,
        config=config,
        processor=processor,
        on_epoch=on_epoch,
        checkpoint_dir=checkpoint_dir,
    )
    symbol_dir = paths.model_dir / symbol
    save_model(outcome.training.model, symbol_dir)
    outcome.processor.save(symbol_dir / processor_filename(symbol))
    atomic_write_text(symbol_dir / METRICS_FILE, json.dumps(outcome.metrics, indent=1))
    if checkpoint_dir is not None and checkpoint_dir.exists():
        shutil.rmtree(checkpoint_dir)  # done: a later job must not resume a finished training
    return outcome, symbol_dir


def run(argv: Sequence[str], paths: ContainerPaths, env: Mapping[str, str], written: list) -> None:
    check_job_environment()  # a missing package or an old torch: say which, before any work
    with _pipes_session(env) as pipes:
        values = resolve_hyperparameters(argv, paths, env)
        partition = getattr(pipes, "partition_key", None) if pipes is not None else None
        symbols = _symbols(values, partition)
        config = _train_config(values)
        summary = {"symbols": symbols, "hyperparameters": config.to_dict(), "models": {}}
        for symbol in symbols:
            written.append(paths.model_dir / symbol)
            outcome, symbol_dir = _train_symbol(symbol, paths, config, pipes)
            summary["models"][symbol] = {
                key: outcome.metrics[key]
                for key in (
                    "test_accuracy",
                    "baseline_accuracy",
                    "macro_f1",
                    "ece",
                    "class_mix",
                    "train_seconds",
                    "device",
                    "all_gates_passed",
                    "gates",
                )
            }
            print(
                f"symbol={symbol} test_accuracy={outcome.metrics['test_accuracy']:.4f} "
                f"baseline_accuracy={outcome.metrics['baseline_accuracy']:.4f} "
                f"gates_passed={outcome.all_gates_passed}",
                flush=True,
            )
            if pipes is not None:
                _report_to_pipes(pipes, outcome, symbol_dir)
        written.append(paths.model_dir / SUMMARY_FILE)
        atomic_write_text(paths.model_dir / SUMMARY_FILE, json.dumps(summary, indent=1))


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    env = os.environ if env is None else env
    argv = sys.argv[1:] if argv is None else argv
    paths = ContainerPaths.from_env(env)
    written: list[Path] = []
    try:
        run(argv, paths, env, written)
    except Exception as error:  # every failure must reach the failure file and a non-zero exit
        traceback.print_exc()
        for path in written:  # leave no half-written model behind
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
        reason = f"{type(error).__name__}: {error}"
        paths.failure_file.parent.mkdir(parents=True, exist_ok=True)
        paths.failure_file.write_text(reason[:FAILURE_REASON_LIMIT], encoding="utf-8")
        print(f"training failed: {reason}", file=sys.stderr, flush=True)
        return 1
    return 0
