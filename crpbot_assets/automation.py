"""Fresh candles every day, and retrains only when they brought new data.

- `candles_refresh_schedule` (stopped by default: turn it on in the UI, or
  `dagster schedule start candles_refresh_schedule`): once a day, one `candles_refresh` run per
  symbol partition with the exchange source, which downloads only the minutes after the last
  stored candle.
- `RETRAIN_CONDITION` on features, processor, model, backtest and production_model: Dagster's
  `eager()`, except that an upstream update counts only when it changed the upstream's data
  version. The candles asset versions its data by content, so a refresh that found no new
  candles records the same version and nothing downstream runs; a refresh with new candles
  starts one run per symbol through to production_model. It also waits for the upstream
  blocking checks to pass: a features file that failed its checks, or a model that failed a
  gate, starts nothing.
- `MODEL_CONDITION` on model: `RETRAIN_CONDITION`, or the symbol's `model_monitor` was just
  materialized with a failed `realized_skill` or `feature_drift` check (the serving model lost
  its skill, or the market's structure moved): the model retrains on the candles it has.
- `GATE_REPORT_CONDITION` on gate_report: after any model partition updated, once no model
  partition is in progress, so a refresh of three symbols gives one report.
- `automation_sensor` evaluates the conditions. Open-source Dagster would add a
  `default_automation_condition_sensor`, but stopped; this one runs by default, so the assets
  follow fresh candles as soon as the daemon runs. Without a daemon (the main command,
  `execute_in_process`) nothing is automated, and runs that materialize a whole chain leave
  nothing for the sensor to redo: an update made by a run that also ran the downstream asset
  does not trigger it.
"""

from collections.abc import Iterator

import dagster as dg

from crpbot_assets.partitions import symbol_partitions

CANDLES_REFRESH_CRON = "15 0 * * *"  # daily, 00:15 UTC: yesterday's last candles are final
EXCHANGE_RUN_CONFIG = {"ops": {"candles": {"config": {"source": "exchange"}}}}

_any_deps_data_changed = dg.AutomationCondition.any_deps_match(
    # As `any_deps_updated`, but keyed to the data version instead of any new materialization.
    (
        dg.AutomationCondition.data_version_changed()
        & ~dg.AutomationCondition.executed_with_root_target()
    )
    | dg.AutomationCondition.will_be_requested()
).with_label("any_deps_data_changed")

RETRAIN_CONDITION = (
    dg.AutomationCondition.eager().replace("any_deps_updated", _any_deps_data_changed)
    & dg.AutomationCondition.all_deps_blocking_checks_passed()
).with_label("eager_on_new_data")

# A monitor run whose realized_skill or feature_drift failed retrains the symbol's model (the
# rest of the chain then follows `RETRAIN_CONDITION`); a failed model_age only alerts.
# Names, not imports: crpbot_assets.monitor imports the assets, which import this module.
MONITOR_ALARM = (
    dg.AutomationCondition.asset_matches(
        "model_monitor",
        dg.AutomationCondition.newly_updated()
        & dg.AutomationCondition.any_checks_match(dg.AutomationCondition.check_failed()).allow(
            dg.AssetSelection.checks(
                *(
                    dg.AssetCheckKey(dg.AssetKey("model_monitor"), name)
                    for name in (
                        "realized_skill",
                        "feature_drift",
                    )
                )
            )
        ),
    )
    & ~dg.AutomationCondition.in_progress()
    & dg.AutomationCondition.all_deps_blocking_checks_passed()
).with_label("monitor_check_failed")
MODEL_CONDITION = (RETRAIN_CONDITION | MONITOR_ALARM).with_label("eager_on_new_data_or_alarm")

GATE_REPORT_CONDITION = (
    # No `~any_deps_missing` as in eager(): a symbol never trained is reported as such. No
    # `will_be_requested`: the report runs after the models, not beside them in a separate run.
    dg.AutomationCondition.any_deps_match(
        dg.AutomationCondition.newly_updated()
    ).since_last_handled()
    & ~dg.AutomationCondition.any_deps_in_progress()
    & ~dg.AutomationCondition.in_progress()
).with_label("after_any_model_update")

candles_refresh_job = dg.define_asset_job(
    "candles_refresh",
    selection=dg.AssetSelection.assets("candles"),
    description="Download the candles since the last stored one, for one symbol",
)


@dg.schedule(
    job=candles_refresh_job,
    cron_schedule=CANDLES_REFRESH_CRON,
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description="Daily exchange download of every symbol's new candles; what changed retrains",
)
def candles_refresh_schedule(context: dg.ScheduleEvaluationContext) -> Iterator[dg.RunRequest]:
    day = context.scheduled_execution_time.strftime("%Y-%m-%d")
    for symbol in symbol_partitions.get_partition_keys():
        yield dg.RunRequest(
            run_key=f"candles-{symbol}-{day}",
            partition_key=symbol,
            run_config=EXCHANGE_RUN_CONFIG,
        )


automation_sensor = dg.AutomationConditionSensorDefinition(
    "crpbot_automation",
    target=dg.AssetSelection.all(),
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Evaluates the assets' automation conditions: retrains after new candles",
)
