"""The asset graph of SPEC §3, one partition per symbol, every artifact under the storage root.

    candles → features → processor → model → production_model
                                          └─(all partitions)→ gate_report

Assets hand data to each other through the storage root (the layout in crpbot_assets.storage),
not through an IO manager: the trainer — local or SageMaker — reads the very files the seed names.
"""

import hashlib
import io
import json
import tempfile
from pathlib import Path

import dagster as dg
import pandas as pd
from pydantic import Field

from crpbot_assets.checks import GATE_CHECK_SPECS
from crpbot_assets.partitions import symbol_partitions
from crpbot_assets.profiles import (
    SYNTHETIC_SIGNAL,
    SYNTHETIC_START,
    ProfileResource,
)
from crpbot_assets.report import build_report, render_markdown
from crpbot_assets.sagemaker.dagster_objects import TRAINING_POOL
from crpbot_assets.storage import (
    PROMOTION_FILE,
    REPORT_JSON_KEY,
    REPORT_MARKDOWN_KEY,
    RUN_INFO_FILE,
    StorageResource,
    candles_key,
    features_key,
    model_folder,
    processor_key,
    production_folder,
)
from crpbot_assets.trainers import ModelTrainer, utc_now
from v8_model.data import CandleValidationError, validate_candles
from v8_model.entrypoint import HYPERPARAMETERS, METRICS_FILE
from v8_model.features import FEATURE_NAMES, build_features_dataset
from v8_model.gates import GATE_NAMES
from v8_model.net import CONFIG_FILE, WEIGHTS_FILE
from v8_model.pipeline import fit_processor
from v8_model.processor import processor_filename
from v8_model.storage import open_store
from v8_model.synthetic import MINUTES_PER_DAY, generate_candles

GROUP = "crpbot_v8"
SYNTHETIC = "synthetic"
MIB = 1024 * 1024
PREVIEW_ROWS = 5
PREVIEW_COLUMNS = ("timestamp", "close", "volume", *FEATURE_NAMES[:4])


class CandlesConfig(dg.Config):
    source: str = Field(
        default=SYNTHETIC,
        description="'synthetic' for the synthetic market, or a parquet path / s3:// URI of "
        "1-minute candles; '{symbol}' in it is replaced by the partition's symbol",
    )
    days: int | None = Field(
        default=None, description="synthetic days per symbol; default: the profile's"
    )
    seed: int | None = Field(default=None, description="synthetic seed; default: the profile's")
    signal: float = Field(default=SYNTHETIC_SIGNAL, description="synthetic planted signal, [0, 1)")
    volatility_clustering: bool = True
    start: str = SYNTHETIC_START


class ModelConfig(dg.Config):
    hyperparameters: dict[str, str] = Field(
        default_factory=dict,
        description="overrides of the profile's hyperparameters, by the entry point's names "
        "(e.g. {'epochs': '5', 'temperature-init': '2.5'})",
    )


def _read_source(source: str) -> pd.DataFrame:
    """A parquet file by path or URI, through the same store code as the root."""
    folder, _, name = source.rstrip("/").rpartition("/")
    return pd.read_parquet(io.BytesIO(open_store(folder or ".").read_bytes(name)))


@dg.asset(
    partitions_def=symbol_partitions,
    group_name=GROUP,
    kinds={"pandas", "parquet"},
    description="Validated 1-minute OHLCV candles: synthetic market or an existing parquet file",
)
def candles(
    context: dg.AssetExecutionContext,
    config: CandlesConfig,
    storage: StorageResource,
    profile: ProfileResource,
) -> dg.MaterializeResult:
    symbol = context.partition_key
    settings = profile.get()
    if config.source == SYNTHETIC:
        days = config.days or settings.days
        seed = settings.seed if config.seed is None else config.seed
        source = f"synthetic(days={days}, seed={seed}, signal={config.signal})"
        frame = generate_candles(
            symbol,
            start=config.start,
            minutes=days * MINUTES_PER_DAY,
            seed=seed,
            signal=config.signal,
            volatility_clustering=config.volatility_clustering,
        )
    else:
        source = config.source.format(symbol=symbol)
        frame = _read_source(source)
    try:
        validate_candles(frame, source=source)
    except CandleValidationError as error:
        raise dg.Failure(
            description=str(error),
            metadata={"rule": error.rule, "columns": list(error.columns), "rows": list(error.rows)},
        ) from error
    key = candles_key(symbol)
    size = storage.write_parquet(key, frame)
    return dg.MaterializeResult(
        metadata={
            "source": source,
            "uri": storage.uri(key),
            "rows": len(frame),
            "MiB": round(size / MIB, 3),
            "first_timestamp": str(frame["timestamp"].iloc[0]),
            "last_timestamp": str(frame["timestamp"].iloc[-1]),
        }
    )


@dg.asset(
    partitions_def=symbol_partitions,
    deps=[candles],
    group_name=GROUP,
    kinds={"pandas", "parquet"},
    description="timestamp + OHLCV + the 72 features: data/{SYMBOL}_features.parquet",
)
def features(context: dg.AssetExecutionContext, storage: StorageResource) -> dg.MaterializeResult:
    symbol = context.partition_key
    dataset = build_features_dataset(storage.read_parquet(candles_key(symbol)))
    key = features_key(symbol)
    size = storage.write_parquet(key, dataset)
    preview = dataset.loc[: PREVIEW_ROWS - 1, list(PREVIEW_COLUMNS)]
    return dg.MaterializeResult(
        metadata={
            "uri": storage.uri(key),
            "rows": len(dataset),
            "MiB": round(size / MIB, 3),
            "feature_columns": len(FEATURE_NAMES),
            "first_timestamp": str(dataset["timestamp"].iloc[0]),
            "last_timestamp": str(dataset["timestamp"].iloc[-1]),
            "dagster/column_schema": dg.TableSchema(
                columns=[
                    dg.TableColumn(str(name), str(dtype)) for name, dtype in dataset.dtypes.items()
                ]
            ),
            "preview": dg.MetadataValue.md(preview.to_markdown(index=False, floatfmt=".5g")),
        }
    )


@dg.asset(
    partitions_def=symbol_partitions,
    deps=[features],
    group_name=GROUP,
    kinds={"scikitlearn"},
    description="Scaler and label thresholds fitted on the training segment only",
)
def processor(context: dg.AssetExecutionContext, storage: StorageResource) -> dg.MaterializeResult:
    symbol = context.partition_key
    fitted = fit_processor(storage.read_parquet(features_key(symbol)), symbol)
    key = processor_key(symbol)
    with tempfile.TemporaryDirectory() as tmp:
        storage.store.upload_file(fitted.save(Path(tmp) / processor_filename(symbol)), key)
    thresholds = fitted.thresholds
    return dg.MaterializeResult(
        metadata={
            "uri": storage.uri(key),
            "training_rows": int(fitted.scaler.n_samples_seen_),
            "sell_below": thresholds.sell_below,
            "buy_above": thresholds.buy_above,
            "horizon": thresholds.horizon,
        }
    )


def _hyperparameters(profile: ProfileResource, overrides: dict[str, str]) -> dict[str, str]:
    unknown = sorted(set(overrides) - set(HYPERPARAMETERS))
    if unknown:
        raise dg.Failure(
            description=f"unknown hyperparameter(s) {unknown}; known: {sorted(HYPERPARAMETERS)}"
        )
    if "symbols" in overrides:
        raise dg.Failure(description="'symbols' is set by the partition, not by config")
    return {**profile.get().hyperparameters(), **overrides}


@dg.asset(
    partitions_def=symbol_partitions,
    deps=[features, processor],
    check_specs=GATE_CHECK_SPECS,
    group_name=GROUP,
    kinds={"pytorch"},
    # Training jobs share the account's instance quota: the pool queues them (see TRAINING_POOL).
    pool=TRAINING_POOL,
    description="V8TradingNet trained by the `trainer` resource; the five gates are its checks",
)
def model(
    context: dg.AssetExecutionContext,
    config: ModelConfig,
    storage: StorageResource,
    trainer: ModelTrainer,
    profile: ProfileResource,
):
    symbol = context.partition_key
    hyperparameters = _hyperparameters(profile, config.hyperparameters)
    invocation = trainer.train(
        context, symbol=symbol, storage=storage, hyperparameters=hyperparameters
    )
    folder = model_folder(symbol)
    run_info = json.loads(storage.store.read_text(f"{folder}/{RUN_INFO_FILE}"))
    where = {
        # The entry point's model_dir was the container's; the model now lives here.
        "model_dir": dg.MetadataValue.path(storage.uri(folder)),
        "trainer": run_info["trainer"],
        "job_name": run_info["job_name"],
        "instance_type": run_info["instance_type"],
        "cost_usd": run_info["cost_usd"],
    }
    for result in invocation.get_results():
        if isinstance(result, dg.MaterializeResult):
            yield dg.MaterializeResult(metadata={**(result.metadata or {}), **where})
        else:
            yield result


@dg.asset(
    partitions_def=symbol_partitions,
    deps=[model],
    group_name=GROUP,
    kinds={"pytorch"},
    description="The model promoted to production/{SYMBOL}/, only when every gate passed",
)
def production_model(
    context: dg.AssetExecutionContext, storage: StorageResource
) -> dg.MaterializeResult:
    symbol = context.partition_key
    source, target = model_folder(symbol), production_folder(symbol)
    metrics = json.loads(storage.store.read_text(f"{source}/{METRICS_FILE}"))
    # The blocking gate checks already keep this asset from running after a failed gate; the
    # stored metrics are checked again so that no path promotes a failed model.
    failed = [name for name in GATE_NAMES if not metrics["gates"][name]["passed"]]
    if failed or not metrics["all_gates_passed"]:
        raise dg.Failure(
            description=f"refusing to promote {symbol}: gate(s) {failed} failed in "
            f"{storage.uri(source)}/{METRICS_FILE}",
            metadata={"failed_gates": failed},
        )
    names = [key.removeprefix(f"{source}/") for key in storage.store.list_keys(source)]
    required = {WEIGHTS_FILE, CONFIG_FILE, METRICS_FILE, RUN_INFO_FILE, processor_filename(symbol)}
    missing = sorted(required - set(names))
    if missing:
        raise dg.Failure(description=f"refusing to promote {symbol}: {source}/ lacks {missing}")
    files = {}
    for name in names:
        data = storage.store.read_bytes(f"{source}/{name}")
        storage.store.write_bytes(f"{target}/{name}", data)
        files[name] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    run_info = json.loads(storage.store.read_text(f"{source}/{RUN_INFO_FILE}"))
    promotion = {
        "symbol": symbol,
        "job_name": run_info["job_name"],
        "promoted_at": utc_now(),
        "dagster_run_id": context.run.run_id,
        "files": files,
    }
    # Written last: a reader that finds the promotion record finds every file it lists.
    storage.store.write_text(f"{target}/{PROMOTION_FILE}", json.dumps(promotion, indent=1))
    return dg.MaterializeResult(
        metadata={
            "uri": storage.uri(target),
            "job_name": run_info["job_name"],
            "files": dg.MetadataValue.json(files),
            "test_accuracy": metrics["test_accuracy"],
            "baseline_accuracy": metrics["baseline_accuracy"],
        }
    )


@dg.asset(
    deps=[model],
    group_name=GROUP,
    kinds={"markdown"},
    description="All symbols' gates and test metrics: reports/gate_report.md and .json",
)
def gate_report(
    context: dg.AssetExecutionContext, storage: StorageResource
) -> dg.MaterializeResult:
    symbols = symbol_partitions.get_partition_keys()
    report = build_report(storage, symbols, generated_at=utc_now())
    markdown = render_markdown(report)
    storage.store.write_text(REPORT_JSON_KEY, json.dumps(report, indent=1))
    storage.store.write_text(REPORT_MARKDOWN_KEY, markdown)
    context.log.info(f"gate report: {storage.uri(REPORT_MARKDOWN_KEY)}")
    return dg.MaterializeResult(
        metadata={
            "report": dg.MetadataValue.md(markdown),
            "markdown_uri": storage.uri(REPORT_MARKDOWN_KEY),
            "json_uri": storage.uri(REPORT_JSON_KEY),
            "symbols_trained": report["trained"],
            "symbols_passed": report["passed"],
            "total_cost_usd": report["total_cost_usd"],
        }
    )
