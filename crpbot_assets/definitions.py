"""The code location: `dagster dev` in the repo root loads `defs` through workspace.yaml.

Resources are chosen from the environment when the definitions load:
CRPBOT_ROOT (storage root, default <repo>/var/crpbot), CRPBOT_PROFILE (demo | full),
CRPBOT_TRAINER (local | sagemaker; see crpbot_assets.sagemaker).

Fresh data: the `candles_refresh_schedule` (stopped by default) downloads new candles daily and
`crpbot_automation` (running) retrains what they changed; see crpbot_assets.automation.
After each refresh, `monitor_after_candles_refresh` runs `monitor_pipeline`, which checks the
serving model on the fresh candles (crpbot_assets.monitor).
"""

import dagster as dg

from crpbot_assets import dagster_fixes
from crpbot_assets.alerts import gate_failure_alerts
from crpbot_assets.assets import SYMBOL_ASSETS, gate_report
from crpbot_assets.automation import (
    automation_sensor,
    candles_refresh_job,
    candles_refresh_schedule,
)
from crpbot_assets.checks import features_checks
from crpbot_assets.monitor import model_monitor, monitor_after_candles_refresh, monitor_pipeline
from crpbot_assets.profiles import ProfileResource
from crpbot_assets.resources import ExchangeResource
from crpbot_assets.sagemaker.dagster_objects import sagemaker_asset_checks, trainer_from_env
from crpbot_assets.storage import StorageResource

# Every process that runs these jobs loads this module first (the main command, run workers, the
# code server): a step that waits for a pool slot sleeps there, not spins.
dagster_fixes.apply()

# One run per symbol: candles through production_model with every check of those assets.
symbol_pipeline = dg.define_asset_job(
    "symbol_pipeline",
    selection=dg.AssetSelection.assets(*SYMBOL_ASSETS),
    description="One symbol from candles to a promoted model; one partition per run",
)
report_job = dg.define_asset_job(
    "gate_report_job",
    selection=dg.AssetSelection.assets(gate_report),
    description="The gate report over every symbol",
)

trainer = trainer_from_env()

defs = dg.Definitions(
    assets=[*SYMBOL_ASSETS, gate_report, model_monitor],
    asset_checks=[features_checks, *sagemaker_asset_checks(trainer)],
    jobs=[symbol_pipeline, report_job, candles_refresh_job, monitor_pipeline],
    schedules=[candles_refresh_schedule],
    sensors=[gate_failure_alerts, automation_sensor, monitor_after_candles_refresh],
    resources={
        "storage": StorageResource(),
        "profile": ProfileResource(),
        "trainer": trainer,
        "exchanges": ExchangeResource(),
    },
)
