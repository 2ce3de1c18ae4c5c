"""Model-stage assets: the fitted processor, the trained and gated model, its backtest."""

import json
import tempfile
from dataclasses import asdict
from pathlib import Path

import dagster as dg

from crpbot_assets.assets.data import features
from crpbot_assets.assets.metadata import FIGURE_METADATA_PREFIX, GROUP, STAGED_FILES_METADATA
from crpbot_assets.automation import MODEL_CONDITION, RETRAIN_CONDITION
from crpbot_assets.checks import (
    GATE_CHECK_SPECS,
    PROFIT_CHECK_NAME,
    PROFIT_CHECK_SPEC,
    profitable,
)
from crpbot_assets.configs import ModelConfig
from crpbot_assets.partitions import symbol_partitions
from crpbot_assets.profiles import (
    ProfileResource,
)
from crpbot_assets.report import (
    embedded_images,
    figure_key,
    read_evaluation,
    symbol_figures,
    worth_entry,
    worth_markdown,
)
from crpbot_assets.sagemaker.dagster_objects import TRAINING_POOL
from crpbot_assets.storage import (
    RUN_INFO_FILE,
    StorageResource,
    features_key,
    model_folder,
    processor_key,
)
from crpbot_assets.tracking import track_training
from crpbot_assets.trainers import ModelTrainer, RunInfo
from crpbot_assets.writers import claim_symbol
from v8_model.config import (
    HYPERPARAMETER_NAMES,
    SYMBOLS_HYPERPARAMETER,
    hyperparameter_name,
    to_hyperparameters,
)
from v8_model.data.segments import fit_processor
from v8_model.data.settings import DATA_SETTING_NAMES, DataSettings
from v8_model.evaluation.plots import equity_curve_png
from v8_model.layout import (
    METRICS_FILE,
    backtest_key,
    processor_filename,
)
from v8_model.record import format_figure, strict_json
from v8_model.registry.promotion import folder_digests


@dg.asset(
    partitions_def=symbol_partitions,
    deps=[features],
    group_name=GROUP,
    kinds={"scikitlearn"},
    automation_condition=RETRAIN_CONDITION,
    description="Scaler and label thresholds fitted on the training segment only, with the "
    "profile's split and label settings",
)
def processor(
    context: dg.AssetExecutionContext, storage: StorageResource, profile: ProfileResource
) -> dg.MaterializeResult:
    claim_symbol(context)
    symbol = context.partition_key
    settings = DataSettings.of(profile.get().train)
    fitted = fit_processor(storage.store.read_parquet(features_key(symbol)), symbol, settings)
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
            "settings": dg.MetadataValue.json(asdict(settings)),
        }
    )


def _hyperparameters(profile: ProfileResource, overrides: dict[str, str]) -> dict[str, str]:
    known = {*HYPERPARAMETER_NAMES, SYMBOLS_HYPERPARAMETER}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise dg.Failure(description=f"unknown hyperparameter(s) {unknown}; known: {sorted(known)}")
    if SYMBOLS_HYPERPARAMETER in overrides:
        raise dg.Failure(description="'symbols' is set by the partition, not by config")
    data_settings = sorted(
        set(overrides) & {hyperparameter_name(name) for name in DATA_SETTING_NAMES}
    )
    if data_settings:
        # The `processor` asset was fitted with the profile's: the model must split and label alike.
        raise dg.Failure(
            description=f"{data_settings} split and label the rows the processor was fitted on: "
            "set them on the profile resource (resources.profile.config), which the processor "
            "and the model both read, not as model hyperparameters"
        )
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
    passed = profitable(figures)
    numbers = {name: value for name, value in asdict(figures).items() if name != "note"}
    check = dg.AssetCheckResult(
        check_name=PROFIT_CHECK_NAME,
        passed=passed,
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
