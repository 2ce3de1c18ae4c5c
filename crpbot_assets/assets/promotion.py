"""The promotion asset: a gated, verified model becomes production/{SYMBOL}/'s next version."""

import json

import dagster as dg

from crpbot_assets.assets.metadata import GROUP, STAGED_FILES_METADATA
from crpbot_assets.assets.model import backtest, model
from crpbot_assets.automation import RETRAIN_CONDITION
from crpbot_assets.checks import (
    PROFIT_CHECK_NAME,
    profitable,
)
from crpbot_assets.configs import PromotionConfig
from crpbot_assets.model_registry import register_promotion
from crpbot_assets.monitor import champion_comparison, write_comparison
from crpbot_assets.partitions import symbol_partitions
from crpbot_assets.profiles import (
    ProfileResource,
)
from crpbot_assets.storage import (
    RUN_INFO_FILE,
    StorageResource,
    model_folder,
    production_version_folder,
)
from crpbot_assets.tracking import RUN_ID_METADATA
from crpbot_assets.trainers import utc_now
from crpbot_assets.writers import claim_symbol
from v8_model.evaluation.gates import GATE_NAMES
from v8_model.evaluation.metrics import Evaluation
from v8_model.layout import (
    CONFIG_FILE,
    METRICS_FILE,
    WEIGHTS_FILE,
    processor_filename,
)
from v8_model.record import format_figure
from v8_model.registry.promotion import PromotionError, promote, verify_files


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
    if profitable(figures):
        return None
    return (
        f"{PROFIT_CHECK_NAME} failed (profit_check_severity ERROR): net return "
        f"{format_figure(figures.net_return, '+.2%')} after {figures.cost_bps_per_side:g} bps "
        "per side"
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
