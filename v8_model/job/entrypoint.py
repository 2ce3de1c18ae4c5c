"""`python -m v8_model.job.train`: the SageMaker training-container contract, also run locally.

Contract, read from the environment, never from hard-coded paths when a variable is set:
- training data: `{SYMBOL}_features.parquet` in SM_CHANNEL_TRAINING;
- optional fitted processors: `processor_{SYMBOL}_v8.json` in SM_CHANNEL_PROCESSOR;
- hyperparameters: `hyperparameters.json` in SM_INPUT_CONFIG_DIR (or SM_HPS), string or
  JSON-encoded values, overridden by `--key value` flags (how SageMaker's driver passes them):
  every `v8_model.config.TrainConfig` setting, plus `symbols`;
- output: SM_MODEL_DIR/{SYMBOL}/ (weights.npz, config.json, processor, metrics.json) and
  SM_MODEL_DIR/training_summary.json;
- checkpoints: with CRPBOT_CHECKPOINT_DIR set (the SageMaker trainer sets it to the checkpoint
  path of spot jobs), each symbol's training state is saved there after every epoch and resumed
  after a restart; it is removed once the symbol's model is written;
- environment: the packages of `v8_model/job/requirements.txt` and torch >= MIN_TORCH_VERSION are
  checked first; what is missing is named in the failure reason;
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

import numpy as np
import pyarrow.parquet as pq

from v8_model.config import (
    SYMBOLS_HYPERPARAMETER,
    HyperparameterError,
    TrainConfig,
    add_hyperparameter_arguments,
    decode_hyperparameters,
)
from v8_model.data.features import FEATURE_NAMES, FEATURES_DATASET_COLUMNS
from v8_model.data.processor import V8FeatureProcessor
from v8_model.data.segments import FeatureMatrix
from v8_model.evaluation.gates import GATE_NAMES
from v8_model.evaluation.metrics import EpochStats, Evaluation
from v8_model.job import contract
from v8_model.job.requirements import check_job_environment
from v8_model.layout import (
    METRICS_FILE,
    SUMMARY_FILE,
    features_filename,
    processor_filename,
)
from v8_model.model.heap import release_freed_memory
from v8_model.model.net import save_model
from v8_model.model.pipeline import SymbolOutcome, train_symbol
from v8_model.record import strict_json
from v8_model.storage import atomic_write_text
from v8_model.symbols import SYMBOLS


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
        tree = contract.ContainerTree(Path(env.get(contract.BASE_DIR_ENV, contract.ML_ROOT)))
        output_dir = Path(env.get(contract.OUTPUT_DIR_ENV, tree.output_dir))
        training = contract.channel_env(contract.TRAINING_CHANNEL)
        processor = env.get(contract.channel_env(contract.PROCESSOR_CHANNEL))
        checkpoints = env.get("CRPBOT_CHECKPOINT_DIR")
        return cls(
            config_dir=Path(env.get(contract.INPUT_CONFIG_DIR_ENV, tree.config_dir)),
            training_channel=Path(env.get(training, tree.channel_dir(contract.TRAINING_CHANNEL))),
            processor_channel=Path(processor) if processor else None,
            model_dir=Path(env.get(contract.MODEL_DIR_ENV, tree.model_dir)),
            failure_file=Path(env.get(contract.FAILURE_FILE_ENV, output_dir / "failure")),
            checkpoint_dir=Path(checkpoints) if checkpoints else None,
        )


def _file_hyperparameters(paths: ContainerPaths, env: Mapping[str, str]) -> tuple[str, dict]:
    """Where the hyperparameters came from and the raw values, SageMaker's own keys left out."""
    path = paths.config_dir / contract.HYPERPARAMETERS_FILE
    if path.is_file():
        source, text = str(path), path.read_text(encoding="utf-8")
    elif contract.HYPERPARAMETERS_ENV in env:
        source, text = contract.HYPERPARAMETERS_ENV, env[contract.HYPERPARAMETERS_ENV]
    else:
        return "defaults", {}
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as error:
        raise HyperparameterError(f"{source}: not valid JSON ({error})") from error
    if not isinstance(raw, dict):
        raise HyperparameterError(f"{source}: expected a JSON object of hyperparameters")
    # sagemaker_* keys are set by SageMaker's own tooling, not ours.
    return source, {k: v for k, v in raw.items() if not k.startswith("sagemaker_")}


class _RaisingParser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse would sys.exit(2) without a failure file
        raise HyperparameterError(f"command line: {message}")


def _command_line(argv: Sequence[str]) -> dict[str, str]:
    """The `--name value` flags given, by hyperparameter name."""
    parser = _RaisingParser(prog="python -m v8_model.job.train", description=__doc__)
    add_hyperparameter_arguments(parser)
    parser.add_argument(f"--{SYMBOLS_HYPERPARAMETER}", dest=SYMBOLS_HYPERPARAMETER, default=None)
    return {k: v for k, v in vars(parser.parse_args(list(argv))).items() if v is not None}


def resolve_hyperparameters(
    argv: Sequence[str], paths: ContainerPaths, env: Mapping[str, str]
) -> tuple[TrainConfig, str]:
    """The training settings and the raw `symbols` value: defaults, then the file, then flags."""
    source, from_file = _file_hyperparameters(paths, env)
    flags = _command_line(argv)
    symbols = flags.pop(SYMBOLS_HYPERPARAMETER, from_file.pop(SYMBOLS_HYPERPARAMETER, ""))
    settings = {  # a flag wins over the file; each is checked, even one a flag overrides
        **decode_hyperparameters(from_file, source),
        **decode_hyperparameters(flags, "command line"),
    }
    return TrainConfig(**settings), _symbols_text(symbols)


def _symbols_text(raw: object) -> str:
    """`symbols` as SageMaker may encode it: 'BTC,ETH', '"BTC,ETH"' or a JSON list."""
    if isinstance(raw, str):
        with contextlib.suppress(json.JSONDecodeError):
            raw = json.loads(raw)
    if isinstance(raw, list):
        raw = ",".join(str(item) for item in raw)
    return str(raw)


def _symbols(text: str, pipes_partition: str | None) -> list[str]:
    text = text.strip()
    symbols = [s.strip().upper() for s in text.split(",") if s.strip()] if text else []
    if pipes_partition:
        if symbols and symbols != [pipes_partition]:
            raise HyperparameterError(
                f"launched for partition {pipes_partition!r} but symbols={text!r}; "
                "a Dagster run trains exactly its partition's symbol"
            )
        return [pipes_partition]
    return symbols or list(SYMBOLS)


def read_features_dataset(path: Path, rows: int | None = None) -> FeatureMatrix:
    """Read a `{SYMBOL}_features.parquet` file (its first `rows` rows when given) into what
    training reads, refusing one without the expected columns."""
    if not path.is_file():
        raise FileNotFoundError(
            f"training data {path} not found: upload {path.name} to the training channel"
        )
    parquet = pq.ParquetFile(path)
    present = set(parquet.schema_arrow.names)
    missing = [column for column in FEATURES_DATASET_COLUMNS if column not in present]
    if missing:
        raise ValueError(
            f"{path}: missing {len(missing)} of {len(FEATURES_DATASET_COLUMNS)} columns, "
            f"first {missing[:5]}; rebuild it with v8_model.data.features.build_features_dataset"
        )
    # Only what training reads, one column at a time into one float32 matrix: the decoded
    # column is the only transient, and no Arrow table or pandas frame of it is ever held.
    n_rows = parquet.metadata.num_rows if rows is None else min(rows, parquet.metadata.num_rows)

    def column(name: str):
        return parquet.read(columns=[name]).column(0).slice(0, n_rows)

    features = np.empty((n_rows, len(FEATURE_NAMES)), dtype=np.float32)
    for position, name in enumerate(FEATURE_NAMES):
        features[:, position] = column(name).to_numpy()
    dataset = FeatureMatrix(
        features,
        close=column("close").to_numpy(),
        timestamps=column("timestamp").to_pandas().rename("timestamp"),
    )
    # The decoded columns' buffers sit freed in Arrow's pool and glibc's heap (~10% of the
    # matrix); handed back now, before scaling makes the run's largest allocation.
    release_freed_memory()
    return dataset


@contextlib.contextmanager
def _pipes_session(env: Mapping[str, str]) -> Iterator[object | None]:
    """Dagster Pipes context when launched by Dagster, else None (plain SageMaker or CLI run)."""
    if "DAGSTER_PIPES_CONTEXT" not in env:
        yield None
        return
    from v8_model.job.pipes import open_pipes

    with open_pipes() as pipes:
        yield pipes


def _report_to_pipes(pipes, evaluation: Evaluation, model_dir: Path) -> None:
    pipes.report_asset_materialization(
        metadata={
            "model_dir": {"raw_value": str(model_dir), "type": "path"},
            "test_accuracy": evaluation.test_accuracy,
            "baseline_accuracy": evaluation.baseline_accuracy,
            "macro_f1": evaluation.macro_f1,
            "ece": evaluation.ece,
            "train_seconds": evaluation.train_seconds,
            "device": evaluation.device,
            "epochs_run": evaluation.epochs_run,
            "best_epoch": evaluation.best_epoch,
            "best_val_loss": evaluation.best_val_loss,
            "class_mix": {"raw_value": evaluation.class_mix, "type": "json"},
            "all_gates_passed": evaluation.all_gates_passed,
            **_worth_metadata(evaluation),
        }
    )
    for name in GATE_NAMES:
        gate = evaluation.gates[name]
        pipes.report_asset_check(
            check_name=name,
            passed=gate.passed,
            severity="ERROR",
            metadata={"value": gate.value, "threshold": gate.threshold, **gate.details},
        )


def _worth_metadata(evaluation: Evaluation) -> dict:
    """The headline worth figures as flat metadata (the full record is in metrics.json)."""
    if evaluation.worth is None:
        return {}
    skill, backtest = evaluation.worth.skill, evaluation.worth.backtest
    return {
        "rank_ic": skill.rank_ic,
        "rank_ic_p_value": skill.p_value,
        "walk_forward_folds": len(evaluation.worth.folds),
        "net_return": backtest.net_return,
        "buy_and_hold_return": backtest.buy_and_hold_return,
        "break_even_fee_bps": backtest.break_even_fee_bps,
    }


def _train_symbol(symbol, paths, config, pipes) -> tuple[SymbolOutcome, Path]:
    processor = None
    if paths.processor_channel is not None:
        processor = V8FeatureProcessor.load(paths.processor_channel / processor_filename(symbol))
    features_path = paths.training_channel / features_filename(symbol)

    def log(line: str) -> None:
        print(line, flush=True)
        if pipes is not None:
            pipes.log.info(line)

    def on_epoch(stats: EpochStats) -> None:
        log(f"symbol={symbol} {stats.line()}")

    checkpoint_dir = paths.checkpoint_dir / symbol if paths.checkpoint_dir else None
    # The dataset is read once per walk-forward fold into one float32 matrix, which is scaled in
    # place into the segments: training holds one copy of the feature matrix, never two.
    outcome = train_symbol(
        lambda rows: read_features_dataset(features_path, rows),
        symbol=symbol,
        config=config,
        processor=processor,
        on_epoch=on_epoch,
        on_fold=log,
        checkpoint_dir=checkpoint_dir,
    )
    symbol_dir = paths.model_dir / symbol
    save_model(outcome.training.model, symbol_dir)
    outcome.processor.save(symbol_dir / processor_filename(symbol))
    atomic_write_text(symbol_dir / METRICS_FILE, outcome.evaluation.to_json())
    if checkpoint_dir is not None and checkpoint_dir.exists():
        shutil.rmtree(checkpoint_dir)  # done: a later job must not resume a finished training
    return outcome, symbol_dir


def run(argv: Sequence[str], paths: ContainerPaths, env: Mapping[str, str], written: list) -> None:
    check_job_environment()  # a missing package or an old torch: say which, before any work
    with _pipes_session(env) as pipes:
        config, symbols_text = resolve_hyperparameters(argv, paths, env)
        partition = getattr(pipes, "partition_key", None) if pipes is not None else None
        symbols = _symbols(symbols_text, partition)
        summary = {"symbols": symbols, "hyperparameters": config.to_dict(), "models": {}}
        for symbol in symbols:
            written.append(paths.model_dir / symbol)
            outcome, symbol_dir = _train_symbol(symbol, paths, config, pipes)
            evaluation = outcome.evaluation
            summary["models"][symbol] = evaluation.summary()
            skill = evaluation.worth.skill if evaluation.worth is not None else None
            print(
                f"symbol={symbol} test_accuracy={evaluation.test_accuracy:.4f} "
                f"baseline_accuracy={evaluation.baseline_accuracy:.4f} "
                + (f"rank_ic={skill.rank_ic:.4f} p_value={skill.p_value:.4f} " if skill else "")
                + f"gates_passed={evaluation.all_gates_passed}",
                flush=True,
            )
            if pipes is not None:
                _report_to_pipes(pipes, evaluation, symbol_dir)
        written.append(paths.model_dir / SUMMARY_FILE)
        atomic_write_text(paths.model_dir / SUMMARY_FILE, strict_json(summary, indent=1))


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
        paths.failure_file.write_text(reason[: contract.FAILURE_REASON_LIMIT], encoding="utf-8")
        print(f"training failed: {reason}", file=sys.stderr, flush=True)
        return 1
    return 0
