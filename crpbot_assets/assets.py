"""The asset graph, one partition per symbol, every artifact under the storage root.

    candles → features → processor → model → backtest → production_model
                                          └─(all partitions)→ gate_report

Assets hand data to each other through the storage root (the layout in v8_model.layout),
not through an IO manager: the trainer — local or SageMaker — reads the very files the seed names.
Every asset after `candles` carries an automation condition (crpbot_assets.automation): when
candles change, the rest follows; when a refresh finds nothing new, nothing runs.
"""

import hashlib
import json
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal

import dagster as dg
import pandas as pd
from pydantic import Field

from crpbot_assets.automation import GATE_REPORT_CONDITION, MODEL_CONDITION, RETRAIN_CONDITION
from crpbot_assets.checks import (
    GATE_CHECK_SPECS,
    PROFIT_CHECK_NAME,
    PROFIT_CHECK_SPEC,
    audit_features,
)
from crpbot_assets.exchange import (
    DEFAULT_EXCHANGE,
    ExchangeFetchError,
    make_exchange,
    market_for,
    update_candles,
)
from crpbot_assets.monitor import champion_comparison, write_comparison
from crpbot_assets.partitions import symbol_partitions
from crpbot_assets.profiles import (
    MIN_COMPLETENESS,
    SYNTHETIC_SIGNAL,
    SYNTHETIC_START,
    ProfileResource,
)
from crpbot_assets.report import (
    FIGURES_FOLDER,
    embedded_images,
    figure_key,
    read_evaluation,
    symbol_figures,
    worth_entry,
    worth_markdown,
    write_report,
)
from crpbot_assets.sagemaker.dagster_objects import TRAINING_POOL
from crpbot_assets.storage import (
    REPORT_JSON_KEY,
    REPORT_LINKED_MARKDOWN_KEY,
    REPORT_MARKDOWN_KEY,
    RUN_INFO_FILE,
    StorageResource,
    candles_key,
    features_key,
    model_folder,
    processor_key,
    production_version_folder,
    staged_candles_key,
)
from crpbot_assets.tracking import RUN_ID_METADATA, register_promotion, track_training
from crpbot_assets.trainers import ModelTrainer, RunInfo, utc_now
from crpbot_assets.writers import claim_symbol
from v8_model.config import HYPERPARAMETER_NAMES, SYMBOLS_HYPERPARAMETER, to_hyperparameters
from v8_model.data.candles import (
    DEFAULT_MAX_GAP,
    DEFAULT_MIN_ROWS,
    CandleValidationError,
    validate_candles,
)
from v8_model.data.features import FEATURE_NAMES, build_features_dataset
from v8_model.data.segments import fit_processor
from v8_model.data.synthetic import MINUTES_PER_DAY, generate_candles
from v8_model.evaluation.gates import GATE_NAMES
from v8_model.evaluation.metrics import BacktestFigures, Evaluation
from v8_model.evaluation.plots import equity_curve_png
from v8_model.layout import (
    CONFIG_FILE,
    METRICS_FILE,
    WEIGHTS_FILE,
    backtest_key,
    processor_filename,
)
from v8_model.record import format_figure, is_finite_number, strict_json
from v8_model.registry.promotion import PromotionError, folder_digests, promote, verify_files
from v8_model.storage import UnreadableParquetError, open_store

GROUP = "crpbot_v8"
SYNTHETIC = "synthetic"
EXCHANGE = "exchange"
MIB = 1024 * 1024
PREVIEW_ROWS = 5
PREVIEW_COLUMNS = ("timestamp", "close", "volume", *FEATURE_NAMES[:4])
FIGURE_METADATA_PREFIX = "figure_"
DATA_VERSION_DIGITS = 16  # of a sha256: unique enough to tell two candle files apart


class CandlesConfig(dg.Config):
    source: Literal["synthetic", "parquet", "exchange"] = Field(
        default=SYNTHETIC,
        description="'synthetic': the synthetic market; 'parquet': the file at `path`; "
        "'exchange': download from `exchange` into the stored file, only the minutes after its "
        "last candle",
    )
    path: str | None = Field(
        default=None,
        description="parquet source: path or s3:// URI of 1-minute candles; '{symbol}' in it is "
        "replaced by the partition's symbol",
    )
    exchange: str = Field(
        default=DEFAULT_EXCHANGE, description="exchange source: the ccxt exchange id"
    )
    market: str | None = Field(
        default=None,
        description="exchange source: the market, e.g. 'BTC/USDT' ('{symbol}' is replaced); "
        "default '{SYMBOL}/USD'",
    )
    start: str | None = Field(
        default=None,
        description=f"synthetic: the market's first minute (default {SYNTHETIC_START}); "
        "exchange: where the download starts when nothing is stored (default: the profile's "
        "days before now)",
    )
    max_gap: str = Field(
        default=f"{DEFAULT_MAX_GAP // pd.Timedelta(minutes=1)}min",
        description="the longest allowed step between candles (pandas Timedelta, e.g. '3h'); "
        "raise it to accept a known exchange outage",
    )
    days: int | None = Field(
        default=None,
        description="synthetic: days of candles; exchange: the download's default start is this "
        "many days before now; default: the profile's",
    )
    seed: int | None = Field(default=None, description="synthetic seed; default: the profile's")
    signal: float = Field(default=SYNTHETIC_SIGNAL, description="synthetic planted signal, [0, 1)")
    volatility_clustering: bool = True


class ExchangeResource(dg.ConfigurableResource):
    """Opens ccxt exchanges for the `candles` exchange source (public market data, no keys).

    The seam for tests: a subclass whose `build` returns a fake exchange keeps them offline.
    """

    def build(self, name: str) -> Any:
        return make_exchange(name)


class ModelConfig(dg.Config):
    hyperparameters: dict[str, str] = Field(
        default_factory=dict,
        description="overrides of the profile's hyperparameters, by the entry point's names "
        "(e.g. {'epochs': '5', 'temperature-init': '2.5'})",
    )


def _read_source(source: str) -> pd.DataFrame:
    """A parquet file by path or URI, through the same store code as the root."""
    folder, _, name = source.rstrip("/").rpartition("/")
    try:
        return open_store(folder or ".").read_parquet(name)
    except (FileNotFoundError, UnreadableParquetError) as error:
        raise dg.Failure(
            description=f"candles config path={source!r}: {error}. Nothing was stored. Fix: "
            "point `path` at a parquet file of 1-minute candles (timestamp, open, high, low, "
            "close, volume)"
        ) from error


def _validation_failure(error: CandleValidationError) -> dg.Failure:
    return dg.Failure(
        description=str(error),
        metadata={"rule": error.rule, "columns": list(error.columns), "rows": list(error.rows)},
    )


def _with_symbol(template: str, symbol: str, setting: str) -> str:
    """`template` with '{symbol}' replaced; any other placeholder is the user's to fix."""
    try:
        return template.format(symbol=symbol)
    except (KeyError, IndexError, ValueError) as error:
        raise dg.Failure(
            description=f"candles config {setting}={template!r}: only the placeholder "
            f"'{{symbol}}' is replaced ({type(error).__name__}: {error}); write literal braces "
            "as '{{' and '}}'"
        ) from error


def _max_gap(config: CandlesConfig) -> pd.Timedelta:
    try:
        max_gap = pd.Timedelta(config.max_gap)
    except ValueError as error:
        raise dg.Failure(
            description=f"candles config max_gap={config.max_gap!r} is not a duration: {error}; "
            "write it like '60min' or '3h'"
        ) from error
    if max_gap <= pd.Timedelta(0):
        raise dg.Failure(description=f"candles config max_gap={config.max_gap!r} must be positive")
    return max_gap


def _content_version(frame: pd.DataFrame) -> str:
    """A data version from the candles themselves: the same candles give the same version."""
    row_hashes = pd.util.hash_pandas_object(frame, index=False).to_numpy()
    return hashlib.sha256(row_hashes.tobytes()).hexdigest()[:DATA_VERSION_DIGITS]


def _previous_source(context: dg.AssetExecutionContext, uri: str) -> str | None:
    """The `source` of this partition's latest materialization, when it wrote the file at `uri`."""
    latest = dg.AssetRecordsFilter(
        asset_key=context.asset_key, asset_partitions=[context.partition_key]
    )
    records = context.instance.fetch_materializations(latest, limit=1).records
    if not records or records[0].asset_materialization is None:
        return None
    metadata = records[0].asset_materialization.metadata
    if "uri" not in metadata or metadata["uri"].value != uri or "source" not in metadata:
        return None
    return str(metadata["source"].value)


def _download_candles(
    context: dg.AssetExecutionContext,
    config: CandlesConfig,
    storage: StorageResource,
    exchanges: ExchangeResource,
    days: int,
) -> dg.MaterializeResult:
    """The exchange source: append the minutes since the stored file's last candle."""
    symbol = context.partition_key
    key = candles_key(symbol)
    uri = storage.store.uri(key)
    staged = staged_candles_key(symbol)
    market = _with_symbol(config.market, symbol, "market") if config.market else market_for(symbol)
    source = f"exchange {config.exchange} {market}"
    previous = _previous_source(context, uri)
    held = [name for name in (key, staged) if storage.store.exists(name)]
    if previous is not None and previous != source and held:
        # The download appends to the stored file: it must never extend candles of another origin.
        where = " and ".join(storage.store.uri(name) for name in held)
        raise dg.Failure(
            description=f"{where} holds candles from {previous}, not from {source}; downloading "
            f"would append to them. Delete {where} (the download then starts from `start`), or "
            "use another storage root for exchange candles.",
            metadata={"stored_source": previous, "source": source},
        )
    start = config.start or pd.Timestamp.now(tz="UTC").floor("D") - pd.Timedelta(days=days)
    max_gap = _max_gap(config)
    try:
        client = exchanges.build(config.exchange)
    except (ImportError, ValueError) as error:  # ccxt missing (an optional extra), unknown id
        raise dg.Failure(
            description=f"cannot open exchange {config.exchange!r}: {error}"
        ) from error
    if not storage.store.exists(staged) and storage.store.exists(key):
        # The download extends a copy of the published candles; they stay as they are until
        # `features` has audited the result.
        storage.store.write_bytes(staged, storage.store.read_bytes(key))
    try:
        update = update_candles(
            storage.store,
            staged,
            client,
            market,
            start=start,
            max_gap=max_gap,
            log=context.log.info,
        )
    except CandleValidationError as error:
        raise _validation_failure(error) from error
    except ExchangeFetchError as error:
        raise dg.Failure(
            description=str(error),
            metadata={
                "market": error.market,
                "since": str(error.since),
                "attempts": error.attempts,
            },
        ) from error
    # update_candles validated every page before storing it; what it cannot know is whether
    # the file now holds enough history for a feature window and a label.
    if update.rows < DEFAULT_MIN_ROWS:
        raise dg.Failure(
            description=f"{uri} holds {update.rows} candles of {market} after the download; "
            f"the features need at least {DEFAULT_MIN_ROWS}. Set an earlier `start` (now "
            f"{update.requested_from}) or check that {config.exchange} has {market} candles.",
            metadata=update.as_metadata(),
        )
    return dg.MaterializeResult(
        metadata={
            "source": source,
            **update.as_metadata(),
            "uri": uri,
            "staged_uri": storage.store.uri(staged),
        },
        data_version=dg.DataVersion(update.data_version),
    )


@dg.asset(
    partitions_def=symbol_partitions,
    group_name=GROUP,
    kinds={"pandas", "parquet"},
    description="Validated 1-minute OHLCV candles: synthetic market, an existing parquet file, "
    "or an incremental exchange download",
)
def candles(
    context: dg.AssetExecutionContext,
    config: CandlesConfig,
    storage: StorageResource,
    profile: ProfileResource,
    exchanges: ExchangeResource,
) -> dg.MaterializeResult:
    claim_symbol(context)
    symbol = context.partition_key
    settings = profile.get()
    days = config.days or settings.days
    if config.source == EXCHANGE:
        return _download_candles(context, config, storage, exchanges, days)
    if config.source == SYNTHETIC:
        seed = settings.train.seed if config.seed is None else config.seed
        source = f"synthetic(days={days}, seed={seed}, signal={config.signal})"
        frame = generate_candles(
            symbol,
            start=config.start or SYNTHETIC_START,
            minutes=days * MINUTES_PER_DAY,
            seed=seed,
            signal=config.signal,
            volatility_clustering=config.volatility_clustering,
        )
    else:
        if not config.path:
            raise dg.Failure(description="candles config source='parquet' needs a `path`")
        source = _with_symbol(config.path, symbol, "path")
        frame = _read_source(source)
    try:
        validate_candles(frame, source=source, max_gap=_max_gap(config))
    except CandleValidationError as error:
        raise _validation_failure(error) from error
    # Refused before writing: the stored candles (which `crpbot predict` reads) stay as they were.
    if len(frame) < settings.min_rows:
        raise dg.Failure(
            description=f"{source}: {len(frame)} candles; the {settings.name} profile needs at "
            f"least {settings.min_rows} ({settings.min_coverage_days:g} days of 1-minute candles, "
            f"{MIN_COMPLETENESS:.0%} complete). Nothing was stored. Fix: supply a longer history "
            "of candles, or choose a profile with a shorter minimum.",
            metadata={"rows": len(frame), "min_rows": settings.min_rows},
        )
    # Staged, not published: `features` publishes the candles once their features pass the audit.
    staged = staged_candles_key(symbol)
    size = storage.store.write_parquet(staged, frame)
    return dg.MaterializeResult(
        metadata={
            "source": source,
            "uri": storage.store.uri(candles_key(symbol)),
            "staged_uri": storage.store.uri(staged),
            "rows": len(frame),
            "MiB": round(size / MIB, 3),
            "first_timestamp": str(frame["timestamp"].iloc[0]),
            "last_timestamp": str(frame["timestamp"].iloc[-1]),
        },
        # Rewriting the same candles keeps the version, so nothing downstream retrains.
        data_version=dg.DataVersion(_content_version(frame)),
    )


@dg.asset(
    partitions_def=symbol_partitions,
    deps=[candles],
    group_name=GROUP,
    kinds={"pandas", "parquet"},
    automation_condition=RETRAIN_CONDITION,
    description="timestamp + OHLCV + the 72 features: data/{SYMBOL}_features.parquet",
)
def features(
    context: dg.AssetExecutionContext, storage: StorageResource, profile: ProfileResource
) -> dg.MaterializeResult:
    """Write, audit, publish: the features of the staged candles (a refresh) are checked in
    memory with the features checks; only when all pass are the features and then the candles
    published. A refused refresh is discarded, and the last good candles and features (what the
    trainer and `crpbot predict` read) stay in place."""
    claim_symbol(context)
    symbol = context.partition_key
    store = storage.store
    staged = staged_candles_key(symbol)
    refresh = store.exists(staged)
    dataset = build_features_dataset(store.read_parquet(staged if refresh else candles_key(symbol)))
    failed = [result for result in audit_features(dataset, profile.get()) if not result.passed]
    if failed:
        if refresh:
            store.delete(staged)
        raise dg.Failure(
            description=f"{symbol}: the features of "
            f"{store.uri(staged) if refresh else 'the stored candles'} failed "
            f"{len(failed)} check(s); nothing was published, the last good candles and features "
            "stay in place. "
            + " ".join(f"{result.check_name}: {result.description}" for result in failed),
            metadata={"failed_checks": [result.check_name for result in failed]},
        )
    key = features_key(symbol)
    size = store.write_parquet(key, dataset)
    if refresh:
        store.write_bytes(candles_key(symbol), store.read_bytes(staged))
        store.delete(staged)
    preview = dataset.loc[: PREVIEW_ROWS - 1, list(PREVIEW_COLUMNS)]
    return dg.MaterializeResult(
        metadata={
            "uri": storage.store.uri(key),
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
    automation_condition=RETRAIN_CONDITION,
    description="Scaler and label thresholds fitted on the training segment only",
)
def processor(context: dg.AssetExecutionContext, storage: StorageResource) -> dg.MaterializeResult:
    claim_symbol(context)
    symbol = context.partition_key
    fitted = fit_processor(storage.store.read_parquet(features_key(symbol)), symbol)
    key = processor_key(symbol)
    with tempfile.TemporaryDirectory() as tmp:
        storage.store.upload_file(fitted.save(Path(tmp) / processor_filename(symbol)), key)
    thresholds = fitted.thresholds
    return dg.MaterializeResult(
        metadata={
            "uri": storage.store.uri(key),
            "training_rows": int(fitted.scaler.n_samples_seen_),
            "sell_below": thresholds.sell_below,
            "buy_above": thresholds.buy_above,
            "horizon": thresholds.horizon,
        }
    )


def _hyperparameters(profile: ProfileResource, overrides: dict[str, str]) -> dict[str, str]:
    known = {*HYPERPARAMETER_NAMES, SYMBOLS_HYPERPARAMETER}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise dg.Failure(description=f"unknown hyperparameter(s) {unknown}; known: {sorted(known)}")
    if SYMBOLS_HYPERPARAMETER in overrides:
        raise dg.Failure(description="'symbols' is set by the partition, not by config")
    return {**to_hyperparameters(profile.get().train), **overrides}


@dg.asset(
    partitions_def=symbol_partitions,
    deps=[features, processor],
    check_specs=GATE_CHECK_SPECS,
    group_name=GROUP,
    kinds={"pytorch"},
    # Training jobs share the account's instance quota: the pool queues them (see TRAINING_POOL).
    pool=TRAINING_POOL,
    automation_condition=MODEL_CONDITION,
    description="V8TradingNet trained by the `trainer` resource; the six gates are its checks",
)
def model(
    context: dg.AssetExecutionContext,
    config: ModelConfig,
    storage: StorageResource,
    trainer: ModelTrainer,
    profile: ProfileResource,
):
    claim_symbol(context)
    symbol = context.partition_key
    hyperparameters = _hyperparameters(profile, config.hyperparameters)
    invocation = trainer.train(
        context, symbol=symbol, storage=storage, hyperparameters=hyperparameters
    )
    folder = model_folder(symbol)
    run_info = json.loads(storage.store.read_text(f"{folder}/{RUN_INFO_FILE}"))
    where = {
        # The entry point's model_dir was the container's; the model now lives here.
        "model_dir": dg.MetadataValue.path(storage.store.uri(folder)),
        "trainer": run_info["trainer"],
        "job_name": run_info["job_name"],
        "instance_type": run_info["instance_type"],
        "cost_usd": run_info["cost_usd"],
        # Start-up / training / upload, billable time, warm pool: where the wall time went.
        **RunInfo.from_dict(run_info).time_metadata(),
    }
    pictures = _figures(context, storage, symbol)
    figures = {
        f"{FIGURE_METADATA_PREFIX}{name}": dg.MetadataValue.md(image)
        for name, image in embedded_images(symbol, pictures).items()
    }
    # What promotion may copy: the files exactly as this step trained and gated them.
    staged = {STAGED_FILES_METADATA: dg.MetadataValue.json(folder_digests(storage.store, folder))}
    tracked = track_training(
        storage.store,
        symbol,
        storage_root=storage.root,
        profile=profile.get().name,
        dagster_run_id=context.run.run_id,
        figures=pictures,
    )
    if tracked.not_tracked:
        context.log.warning(f"model {symbol}: {tracked.not_tracked}")
    for result in invocation.get_results():
        if isinstance(result, dg.MaterializeResult):
            # The entry point's metadata, then where it ran and the pictures; nothing else of
            # the Pipes result changes.
            yield dg.MaterializeResult(
                asset_key=result.asset_key,
                metadata={
                    **(result.metadata or {}),
                    **where,
                    **staged,
                    **tracked.metadata(),
                    **figures,
                },
                check_results=result.check_results,
                data_version=result.data_version,
                tags=result.tags,
            )
        else:
            yield result


def _figures(
    context: dg.AssetExecutionContext, storage: StorageResource, symbol: str
) -> dict[str, bytes]:
    """The model's figures as PNG bytes, by name (embedded as Markdown metadata, ~25 KB each in
    the event log, and logged to MLflow)."""
    try:
        return symbol_figures(storage.store, symbol)
    except ValueError as error:
        # Pictures are a view of the metrics: a trained, gated model is recorded without them.
        context.log.warning(f"model {symbol} is recorded without figures: {error}")
        return {}


class PromotionConfig(dg.Config):
    force: bool = Field(
        default=False,
        description="promote even when the challenger is significantly worse than the serving "
        "champion on their shared unseen rows (recorded as `forced` in promotion.json); the "
        "gates and file hashes are still required",
    )


STAGED_FILES_METADATA = "staged_files"  # on `model`: name → {bytes, sha256} as trained and gated


def _trained_record(context: dg.AssetExecutionContext, symbol: str) -> tuple[str, dict, str | None]:
    """The latest `model` materialization of `symbol`: its run id, the staged files' hashes and
    its MLflow run id (None when the training was not tracked).

    The hashes live in the instance's event log, not beside the files, so a staged folder that
    was truncated, replaced or half-overwritten after training cannot vouch for itself.
    """
    latest = dg.AssetRecordsFilter(asset_key=model.key, asset_partitions=[symbol])
    records = context.instance.fetch_materializations(latest, limit=1).records
    materialization = records[0].asset_materialization if records else None
    if materialization is None or STAGED_FILES_METADATA not in materialization.metadata:
        raise dg.Failure(
            description=f"refusing to promote {symbol}: no `model` materialization with recorded "
            f"file hashes in this Dagster instance; materialize `model` for {symbol} first"
        )
    mlflow_run = materialization.metadata.get(RUN_ID_METADATA)
    return (
        records[0].run_id,
        dict(materialization.metadata[STAGED_FILES_METADATA].value),
        None if mlflow_run is None else str(mlflow_run.value),
    )


def _profitable(figures: BacktestFigures) -> bool:
    """The profit check's verdict; a non-finite return (corrupt prices) is no profit."""
    return is_finite_number(figures.net_return) and figures.net_return > 0


def _profit_refusal(evaluation: Evaluation, profile: ProfileResource) -> str | None:
    """Why the profit check keeps this model out of production, or None when it does not.

    Only a severity of ERROR blocks (as it blocks the `backtest` step); the verdict is taken
    again from the verified metrics.json, so a `production_model` run alone cannot skip it.
    """
    if profile.get().profit_check_severity != dg.AssetCheckSeverity.ERROR.value:
        return None
    if evaluation.worth is None:
        return f"{PROFIT_CHECK_NAME} cannot be checked: the metrics hold no backtest"
    figures = evaluation.worth.backtest
    if _profitable(figures):
        return None
    return (
        f"{PROFIT_CHECK_NAME} failed (profit_check_severity ERROR): net return "
        f"{format_figure(figures.net_return, '+.2%')} after {figures.cost_bps_per_side:g} bps "
        "per side"
    )


@dg.asset(
    partitions_def=symbol_partitions,
    deps=[model],
    check_specs=[PROFIT_CHECK_SPEC],
    group_name=GROUP,
    kinds={"numpy"},
    automation_condition=RETRAIN_CONDITION,
    description="The model's walk-forward directional skill and its backtest after fees and "
    "slippage, beside buy-and-hold: backtests/{SYMBOL}_backtest.json and an equity curve",
)
def backtest(
    context: dg.AssetExecutionContext, storage: StorageResource, profile: ProfileResource
) -> dg.MaterializeResult:
    claim_symbol(context)
    symbol = context.partition_key
    store = storage.store
    evaluation = read_evaluation(store, symbol)
    source = store.uri(f"{model_folder(symbol)}/{METRICS_FILE}")
    if evaluation is None or evaluation.worth is None:
        raise dg.Failure(
            description=f"{source} has no worth record (skill, backtest, folds): it was written "
            f"before walk-forward evaluation existed; retrain {symbol} (materialize `model`)"
        )
    worth = evaluation.worth
    figures = worth.backtest
    key = backtest_key(symbol)
    store.write_text(
        key, strict_json({"symbol": symbol, "source": source, **asdict(worth)}, indent=1)
    )
    png = equity_curve_png(worth.equity_curve, figures.cost_bps_per_side)
    store.write_bytes(figure_key(symbol, "equity_curve"), png)
    severity = dg.AssetCheckSeverity(profile.get().profit_check_severity)
    profitable = _profitable(figures)
    numbers = {name: value for name, value in asdict(figures).items() if name != "note"}
    check = dg.AssetCheckResult(
        check_name=PROFIT_CHECK_NAME,
        passed=profitable,
        severity=severity,
        description=(
            f"net return {format_figure(figures.net_return, '+.2%')} after "
            f"{figures.cost_bps_per_side:g} bps per side (break-even "
            f"{format_figure(figures.break_even_fee_bps, '.1f')} bps); buy and hold "
            f"{format_figure(figures.buy_and_hold_return, '+.2%')}"
            + (f"; {figures.note}" if figures.note else "")
        ),
        metadata={"value": figures.net_return, "threshold": "net_return > 0", **numbers},
    )
    return dg.MaterializeResult(
        metadata={
            "uri": store.uri(key),
            **numbers,
            "note": figures.note,
            "rank_ic": worth.skill.rank_ic,
            "rank_ic_ci_low": worth.skill.ci_low,
            "rank_ic_ci_high": worth.skill.ci_high,
            "rank_ic_p_value": worth.skill.p_value,
            "calls": worth.skill.calls,
            "folds": len(worth.folds),
            "worth": dg.MetadataValue.md(worth_markdown(worth_entry(worth))),
            f"{FIGURE_METADATA_PREFIX}equity_curve": dg.MetadataValue.md(
                embedded_images(symbol, {"equity_curve": png})["equity_curve"]
            ),
        },
        check_results=[check],
    )


@dg.asset(
    partitions_def=symbol_partitions,
    deps=[model, backtest],
    group_name=GROUP,
    kinds={"pytorch"},
    automation_condition=RETRAIN_CONDITION,
    description="The model promoted to production/{SYMBOL}/ as a new version, only when every "
    "gate passed, every staged file matches the hashes its training run recorded, and it is "
    "not significantly worse than the serving champion on their shared unseen rows",
)
def production_model(
    context: dg.AssetExecutionContext,
    config: PromotionConfig,
    storage: StorageResource,
    profile: ProfileResource,
) -> dg.MaterializeResult:
    claim_symbol(context)
    symbol = context.partition_key
    store, source = storage.store, model_folder(symbol)
    training_run_id, recorded, mlflow_run_id = _trained_record(context, symbol)
    required = {WEIGHTS_FILE, CONFIG_FILE, METRICS_FILE, RUN_INFO_FILE, processor_filename(symbol)}
    missing = sorted(required - set(recorded))
    if missing:
        raise dg.Failure(description=f"refusing to promote {symbol}: {source}/ lacks {missing}")
    fix = f"retrain {symbol} (materialize `model`, then `production_model`)"
    try:
        # metrics.json is read only once its bytes are the ones the training run recorded.
        staged = verify_files(store, source, recorded, what="the training run", fix=fix)
    except PromotionError as error:
        raise dg.Failure(description=f"refusing to promote {symbol}: {error}") from error
    evaluation = Evaluation.from_json(
        staged[METRICS_FILE].decode("utf-8"), source=f"{source}/{METRICS_FILE}"
    )
    # The blocking gate checks already keep this asset from running after a failed gate; the
    # recorded metrics are checked again so that no path promotes a failed model.
    # A record without a gate (written before it existed) has not passed it.
    failed = [
        name
        for name in GATE_NAMES
        if name not in evaluation.gates or not evaluation.gates[name].passed
    ]
    if failed or not evaluation.all_gates_passed:
        raise dg.Failure(
            description=f"refusing to promote {symbol}: gate(s) {failed} failed in "
            f"{storage.store.uri(source)}/{METRICS_FILE}",
            metadata={"failed_gates": failed},
        )
    refusal = _profit_refusal(evaluation, profile)
    if refusal is not None:
        raise dg.Failure(
            description=f"refusing to promote {symbol}: {refusal}, recorded in "
            f"{storage.store.uri(source)}/{METRICS_FILE}. Fix: retrain with a model that is "
            "profitable after costs, or set profit_check_severity to WARN",
            metadata={"failed_check": PROFIT_CHECK_NAME},
        )
    run_info = json.loads(staged[RUN_INFO_FILE])
    # Champion / challenger on the rows neither has seen (crpbot_assets.monitor).
    comparison = champion_comparison(store, symbol, evaluation, source, profile.get().monitor)
    record = {
        "job_name": run_info["job_name"],
        "trained_in_dagster_run": training_run_id,
        "promoted_at": utc_now(),
        "dagster_run_id": context.run.run_id,
        **comparison.to_dict(),
        "forced": config.force and comparison.worse,
    }
    write_comparison(store, symbol, comparison, record)
    if comparison.worse and not config.force:
        raise dg.Failure(
            description=f"refusing to promote {symbol}: {comparison.reason}. Production is "
            f"unchanged. To promote it anyway: `crpbot promote {symbol} --force` (or run config "
            "ops.production_model.config.force: true)",
            metadata=comparison.to_dict(),
        )
    try:
        pointer = promote(
            store, symbol, source, recorded, record, holder={"run_id": context.run.run_id}
        )
    except PromotionError as error:
        raise dg.Failure(description=f"refusing to promote {symbol}: {error}") from error
    promoted = store.uri(production_version_folder(symbol, pointer.version))
    # The pointer has switched: the registry follows it, and a failure there is reported only.
    champion = register_promotion(
        symbol,
        storage_root=storage.root,
        production_version=pointer.version,
        weights_sha256=str(recorded[WEIGHTS_FILE]["sha256"]),
        fallback_source=promoted,
        mlflow_run_id=mlflow_run_id,
        dagster_run_id=context.run.run_id,
    )
    (context.log.info if champion.alias_moved else context.log.warning)(champion.line())
    return dg.MaterializeResult(
        metadata={
            "uri": promoted,
            "version": pointer.version,
            "previous_versions": list(pointer.previous),
            "job_name": run_info["job_name"],
            "files": dg.MetadataValue.json(recorded),
            "test_accuracy": evaluation.test_accuracy,
            "baseline_accuracy": evaluation.baseline_accuracy,
            **champion.metadata(),
            **comparison.to_dict(),
            "forced": record["forced"],
        }
    )


@dg.asset(
    deps=[model],
    group_name=GROUP,
    kinds={"markdown"},
    automation_condition=GATE_REPORT_CONDITION,
    description="All symbols' gates, test metrics and figures: reports/gate_report.md "
    "(images embedded), gate_report_linked.md (images in reports/figures/) and .json",
)
def gate_report(
    context: dg.AssetExecutionContext, storage: StorageResource
) -> dg.MaterializeResult:
    symbols = symbol_partitions.get_partition_keys()
    written = write_report(storage.store, symbols, generated_at=utc_now())
    report = written.report
    context.log.info(f"gate report: {storage.store.uri(REPORT_MARKDOWN_KEY)}")
    return dg.MaterializeResult(
        metadata={
            "report": dg.MetadataValue.md(written.markdown),
            "markdown_uri": storage.store.uri(REPORT_MARKDOWN_KEY),
            "linked_markdown_uri": storage.store.uri(REPORT_LINKED_MARKDOWN_KEY),
            "figures_uri": storage.store.uri(f"reports/{FIGURES_FOLDER}"),
            "figure_files": len(written.figure_keys),
            "json_uri": storage.store.uri(REPORT_JSON_KEY),
            "symbols_trained": report["trained"],
            "symbols_passed": report["passed"],
            "total_cost_usd": report["total_cost_usd"],
        }
    )
