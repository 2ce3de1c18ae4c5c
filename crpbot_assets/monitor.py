"""After promotion, in Dagster: the `model_monitor` asset, its three checks, `monitor_pipeline`,
the sensor that runs it after each candles refresh, and the champion/challenger comparison
that `production_model` calls.

    candles → features → model_monitor ← production_model (the serving version, read from storage)

`model_monitor` scores the serving production version on the rows after its training data
(v8_model.evaluation.monitor), writes monitor/{SYMBOL}_monitor.json and reports `realized_skill`,
`feature_drift` and `model_age`, non-blocking, with the profile's severities. The alert sensor
posts their failures; `crpbot_automation` retrains a symbol whose realized_skill or feature_drift
failed (crpbot_assets.automation).
"""

import json
import warnings
from collections.abc import Iterator
from dataclasses import asdict
from typing import TYPE_CHECKING

import dagster as dg
import numpy as np
import pandas as pd

from crpbot_assets.automation import candles_refresh_job
from crpbot_assets.partitions import symbol_partitions
from crpbot_assets.profiles import ProfileResource
from crpbot_assets.storage import StorageResource
from crpbot_assets.trainers import utc_now
from crpbot_assets.writers import claim_symbol
from v8_model.data.processor import V8FeatureProcessor
from v8_model.data.segments import forward_log_returns
from v8_model.defaults import CLASS_NAMES
from v8_model.evaluation.champion import Comparison, compare_on_shared_rows, no_champion
from v8_model.evaluation.metrics import Evaluation
from v8_model.evaluation.monitor import (
    MonitorInputError,
    MonitorRecord,
    MonitorSettings,
    evaluate_fresh,
    model_age_days,
)
from v8_model.layout import (
    METRICS_FILE,
    PROMOTION_FILE,
    challenger_key,
    features_key,
    monitor_key,
    production_version_folder,
)
from v8_model.record import strict_json
from v8_model.registry.promotion import PromotionError, read_pointer
from v8_model.storage import Store

if TYPE_CHECKING:
    from v8_model.model.net import V8TradingNet

GROUP = "crpbot_v8"
MONITOR_ASSET = "model_monitor"
REALIZED_SKILL = "realized_skill"
FEATURE_DRIFT = "feature_drift"
MODEL_AGE = "model_age"
MONITOR_CHECK_NAMES = (REALIZED_SKILL, FEATURE_DRIFT, MODEL_AGE)
# The checks whose failure retrains the symbol; an old model that still works is only reported.
RETRAIN_CHECK_NAMES = (REALIZED_SKILL, FEATURE_DRIFT)
_DESCRIPTIONS = {
    REALIZED_SKILL: "on the rows after its training data, the serving version's rank IC is not "
    "significantly below what it promised at promotion, nor significantly negative",
    FEATURE_DRIFT: "the fresh rows' features have not moved from the training segment's "
    "(PSI per feature; fails when too many features drift)",
    MODEL_AGE: "the serving version is younger than the profile's max_model_age_days",
}


def _monitor_spec(name: str) -> dg.AssetCheckSpec:
    # Partitioned checks are a preview feature (see crpbot_assets.checks); not blocking: nothing
    # runs after the monitor, and a failed check is an alarm, not a broken run.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.PreviewWarning)
        return dg.AssetCheckSpec(
            name,
            asset=MONITOR_ASSET,
            description=_DESCRIPTIONS[name],
            partitions_def=symbol_partitions,
        )


MONITOR_CHECK_SPECS = [_monitor_spec(name) for name in MONITOR_CHECK_NAMES]


def _failure(error: Exception, symbol: str) -> dg.Failure:
    text = str(error).rstrip(". ")
    return dg.Failure(description=f"cannot monitor {symbol}: {text}. Nothing was written.")


def _serving(store: Store, symbol: str) -> tuple[str, Evaluation, dict]:
    """The serving version, its evaluation record and its promotion record."""
    try:
        pointer = read_pointer(store, symbol)
    except PromotionError as error:
        raise _failure(error, symbol) from error
    if pointer is None:
        raise dg.Failure(
            description=f"cannot monitor {symbol}: no production version yet (no "
            f"{store.uri(f'production/{symbol}/current.json')}). Promote a model first "
            f"(run symbol_pipeline for {symbol}); nothing was written."
        )
    folder = production_version_folder(symbol, pointer.version)
    metrics_key, promotion_key = f"{folder}/{METRICS_FILE}", f"{folder}/{PROMOTION_FILE}"
    try:
        evaluation = Evaluation.from_json(
            store.read_text(metrics_key), source=store.uri(metrics_key)
        )
        promotion = json.loads(store.read_text(promotion_key))
    except (FileNotFoundError, ValueError) as error:
        raise _failure(error, symbol) from error
    if evaluation.worth is None:
        raise dg.Failure(
            description=f"cannot monitor {symbol}: {store.uri(metrics_key)} has no worth record "
            "(no promised skill to hold it to); promote a retrained model"
        )
    return pointer.version, evaluation, promotion


def _load(store: Store, folder: str, symbol: str) -> tuple["V8TradingNet", V8FeatureProcessor]:
    """The model in `folder` (a production version or the staged model) and its processor."""
    # torch is imported only when a model is scored: the definitions load without it.
    from v8_model.registry.predict import ProductionModelError, load_production_model

    try:
        return load_production_model(store.uri(folder), symbol)
    except ProductionModelError as error:
        raise dg.Failure(description=f"{symbol}: {error}") from error


def build_monitor_record(
    store: Store, symbol: str, settings: MonitorSettings, now: pd.Timestamp
) -> MonitorRecord:
    """Score the serving version of `symbol` on the stored features' fresh rows."""
    version, evaluation, promotion = _serving(store, symbol)
    key = features_key(symbol)
    dataset = store.read_parquet(key)
    from v8_model.registry.predict import predict_rows  # see _load

    model, processor = _load(store, production_version_folder(symbol, version), symbol)
    try:
        outcome = evaluate_fresh(
            dataset,
            evaluation,
            probabilities_at=lambda rows: predict_rows(dataset, rows, model, processor),
            scaled_at=lambda rows: processor.transform(dataset, rows),
            settings=settings,
            source=store.uri(key),
            version=version,
        )
    except MonitorInputError as error:
        raise _failure(error, symbol) from error
    skill, drift, trading = outcome.skill, outcome.drift, outcome.trading
    age = model_age_days(promotion["promoted_at"], now)
    stamps = dataset["timestamp"].iloc[outcome.window.fresh]
    scored_stamps = dataset["timestamp"].iloc[outcome.scored]
    return MonitorRecord(
        symbol=symbol,
        production_version=version,
        evaluated_at=now.isoformat(timespec="seconds"),
        promoted_at=str(promotion["promoted_at"]),
        trained_first_timestamp=evaluation.first_timestamp,
        trained_last_timestamp=evaluation.last_timestamp,
        fresh_first_timestamp=str(stamps.iloc[0]) if len(stamps) else None,
        fresh_last_timestamp=str(stamps.iloc[-1]) if len(stamps) else None,
        rows=skill.rows,
        rank_ic=skill.rank_ic,
        rank_ic_low=skill.rank_ic_low,
        rank_ic_high=skill.rank_ic_high,
        promised_rank_ic=skill.promised_rank_ic,
        promised_rank_ic_low=skill.promised_low,
        promised_rank_ic_high=skill.promised_high,
        p_below_promised=skill.p_below_promised,
        p_negative=skill.p_negative,
        hit_rate=trading.hit_rate,
        net_return=trading.net_return,
        gross_return=trading.gross_return,
        buy_and_hold_return=trading.buy_and_hold_return,
        trades=trading.trades,
        confidence_threshold=outcome.confidence_threshold,
        cost_bps_per_side=trading.cost_bps_per_side,
        feature_psi=drift.psi,
        drifted_features=drift.drifted_features,
        drifted_share=drift.drifted_share,
        ood_share=drift.ood_share,
        model_age_days=age,
        realized_skill_passed=skill.passed,
        realized_skill_reason=skill.reason,
        feature_drift_passed=drift.passed,
        feature_drift_reason=drift.reason,
        model_age_passed=age <= settings.max_model_age_days,
        settings={
            name: float(value)
            for name, value in asdict(settings).items()
            if isinstance(value, int | float)
        },
        rolling_timestamps=[str(scored_stamps.iloc[end - 1]) for end in outcome.rolling_ends],
        rolling_rank_ic=outcome.rolling_rank_ic,
    )


def _check(
    name: str, passed: bool, severity: str, description: str, **metadata
) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        check_name=name,
        asset_key=MONITOR_ASSET,
        passed=passed,
        severity=dg.AssetCheckSeverity(severity),
        description=description,
        metadata=metadata,
    )


def monitor_checks(record: MonitorRecord, settings: MonitorSettings) -> list[dg.AssetCheckResult]:
    """The three checks of one monitor record, each with its figures (None shown as null)."""
    return [
        _check(
            REALIZED_SKILL,
            record.realized_skill_passed,
            settings.realized_skill_severity,
            record.realized_skill_reason,
            value=record.rank_ic,
            threshold=f"not significantly below the promised {record.promised_rank_ic:+.4f} "
            f"nor below 0 (each at {settings.skill_alpha / 2:g}; at least "
            f"{settings.min_fresh_rows} fresh rows to judge)",
            rows=record.rows,
            rank_ic_low=record.rank_ic_low,
            rank_ic_high=record.rank_ic_high,
            promised_rank_ic=record.promised_rank_ic,
            p_below_promised=record.p_below_promised,
            p_negative=record.p_negative,
            production_version=record.production_version,
        ),
        _check(
            FEATURE_DRIFT,
            record.feature_drift_passed,
            settings.feature_drift_severity,
            record.feature_drift_reason,
            value=record.drifted_share,
            threshold=f"share of features with PSI > {settings.psi_threshold:g} is at most "
            f"{settings.max_drifted_share:g} (at least {settings.min_drift_rows} fresh rows)",
            drifted_features=dg.MetadataValue.json(record.drifted_features),
            ood_share=record.ood_share,
            max_psi=max(record.feature_psi.values(), default=0.0),
            production_version=record.production_version,
        ),
        _check(
            MODEL_AGE,
            record.model_age_passed,
            settings.model_age_severity,
            f"version {record.production_version} promoted {record.model_age_days:.1f} days ago "
            f"(limit {settings.max_model_age_days:g})",
            value=record.model_age_days,
            threshold=f"model_age_days <= {settings.max_model_age_days:g}",
            production_version=record.production_version,
        ),
    ]


def _metadata(record: MonitorRecord, uri: str) -> dict:
    """The record's figures as metadata (None shows as null); the long lists stay in the file."""
    figures = {
        name: value
        for name, value in asdict(record).items()
        if isinstance(value, int | float | str | None) and not name.endswith("_reason")
    }
    return {
        "uri": uri,
        **figures,
        "feature_psi": dg.MetadataValue.json(record.feature_psi),
        "drifted_features": dg.MetadataValue.json(record.drifted_features),
    }


@dg.asset(
    name=MONITOR_ASSET,
    partitions_def=symbol_partitions,
    deps=["features", "production_model"],
    check_specs=MONITOR_CHECK_SPECS,
    group_name=GROUP,
    kinds={"numpy"},
    description="The serving production version scored on the rows after its training data: "
    "realized skill against its promise, feature drift, age; monitor/{SYMBOL}_monitor.json",
)
def model_monitor(
    context: dg.AssetExecutionContext, storage: StorageResource, profile: ProfileResource
) -> dg.MaterializeResult:
    claim_symbol(context)
    symbol = context.partition_key
    settings = profile.get().monitor
    store = storage.store
    record = build_monitor_record(store, symbol, settings, pd.Timestamp(utc_now()))
    key = monitor_key(symbol)
    store.write_text(key, record.to_json())  # one atomic write: the old record or this one
    return dg.MaterializeResult(
        metadata=_metadata(record, store.uri(key)),
        check_results=monitor_checks(record, settings),
    )


monitor_pipeline = dg.define_asset_job(
    "monitor_pipeline",
    selection=dg.AssetSelection.assets("candles", "features", MONITOR_ASSET),
    description="Refresh one symbol's candles and features and check its serving model on the "
    "fresh rows, without training",
)


@dg.run_status_sensor(
    name="monitor_after_candles_refresh",
    run_status=dg.DagsterRunStatus.SUCCESS,
    monitored_jobs=[candles_refresh_job],
    request_job=monitor_pipeline,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="After each successful candles_refresh run, monitor_pipeline for its symbol "
    "with the same candles config",
)
def monitor_after_candles_refresh(
    context: dg.RunStatusSensorContext,
) -> Iterator[dg.RunRequest]:
    run = context.dagster_run
    partition = run.tags.get("dagster/partition")
    if partition is None:
        return
    candles_config = run.run_config.get("ops", {}).get("candles", {})
    yield dg.RunRequest(
        run_key=f"monitor-{run.run_id}",
        partition_key=partition,
        run_config={"ops": {"candles": candles_config}} if candles_config else {},
    )


def champion_comparison(
    store: Store,
    symbol: str,
    challenger: Evaluation,
    challenger_folder: str,
    settings: MonitorSettings,
) -> Comparison:
    """The staged challenger against the serving champion on their shared unseen rows.

    Raises dg.Failure when the stored features are not the dataset the challenger trained on.
    """
    alpha, minimum = settings.challenger_alpha, settings.min_shared_rows
    try:
        pointer = read_pointer(store, symbol)
    except PromotionError as error:
        raise dg.Failure(description=f"refusing to promote {symbol}: {error}") from error
    if pointer is None:
        return no_champion(alpha, minimum)
    champion_folder = production_version_folder(symbol, pointer.version)
    champion_key = f"{champion_folder}/{METRICS_FILE}"
    try:
        champion = Evaluation.from_json(
            store.read_text(champion_key), source=store.uri(champion_key)
        )
    except (FileNotFoundError, ValueError) as error:
        raise dg.Failure(description=f"refusing to promote {symbol}: {error}") from error
    key = features_key(symbol)
    dataset = store.read_parquet(key)
    stamps = dataset["timestamp"]
    if len(dataset) != challenger.rows or str(stamps.iloc[-1]) != challenger.last_timestamp:
        raise dg.Failure(
            description=f"refusing to promote {symbol}: {store.uri(key)} ({len(dataset)} rows "
            f"to {stamps.iloc[-1]}) is not the dataset the challenger was trained on "
            f"({challenger.rows} rows to {challenger.last_timestamp}); retrain {symbol}"
        )
    horizon = challenger.label_thresholds.horizon
    unseen = (
        (stamps >= pd.Timestamp(challenger.test_start))
        & (stamps > pd.Timestamp(champion.last_timestamp))
    ).to_numpy()
    positions = np.flatnonzero(unseen)
    positions = positions[positions < len(dataset) - horizon]  # rows with a forward return
    window = (
        (str(stamps.iloc[positions[0]]), str(stamps.iloc[positions[-1]]))
        if len(positions)
        else (None, None)
    )
    returns = forward_log_returns(dataset["close"], horizon)[positions]
    enough = len(positions) >= max(minimum, 2 * horizon)

    def probabilities(folder: str) -> np.ndarray:
        # Too short a window is decided without the models: nothing to load.
        if not enough:
            return np.zeros((len(positions), len(CLASS_NAMES)))
        from v8_model.registry.predict import predict_rows  # see _load

        return predict_rows(dataset, positions, *_load(store, folder, symbol))

    return compare_on_shared_rows(
        probabilities(champion_folder),
        probabilities(challenger_folder),
        returns,
        champion_version=pointer.version,
        window=window,
        horizon=horizon,
        alpha=alpha,
        min_shared_rows=minimum,
    )


def write_comparison(store: Store, symbol: str, comparison: Comparison, record: dict) -> None:
    """monitor/{SYMBOL}_challenger.json: the latest comparison, whatever it decided."""
    store.write_text(
        challenger_key(symbol), strict_json({**record, **comparison.to_dict()}, indent=1)
    )
