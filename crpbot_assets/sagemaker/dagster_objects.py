"""The Dagster objects of the SageMaker path, for `crpbot_assets.definitions` to include.

- `trainer_from_env()`: the `trainer` resource, switched by env CRPBOT_TRAINER ("local" default,
  or "sagemaker"): same graph, same entry point, one switch.
- `TRAINING_POOL`: the concurrency pool of the `model` asset. Each SageMaker job holds instances
  of the account's per-type training quota; set the pool's limit to that quota
  (`dagster instance concurrency set sagemaker_training <quota>`) and a backfill over many
  symbols queues its jobs instead of failing on ResourceLimitExceeded.
- `sagemaker_asset_checks(trainer)`: the preflight as a blocking check on `features`, per symbol,
  included when the trainer is SageMaker: its metadata shows the S3 file's size, rows and
  last-modified time, and when it fails neither `processor` nor `model` runs (no job, no cost).
"""

import os
import warnings
from collections.abc import Mapping

import dagster as dg

from crpbot_assets.partitions import symbol_partitions
from crpbot_assets.sagemaker.preflight import run_preflight
from crpbot_assets.sagemaker.trainer import SageMakerTrainer
from crpbot_assets.trainers import LocalTrainer, ModelTrainer

TRAINER_ENV_VAR = "CRPBOT_TRAINER"
TRAINING_POOL = "sagemaker_training"
PREFLIGHT_CHECK_NAME = "sagemaker_preflight"


def trainer_from_env(environ: Mapping[str, str] | None = None) -> ModelTrainer:
    """LocalTrainer, or SageMakerTrainer with settings from the environment."""
    environ = os.environ if environ is None else environ
    kind = environ.get(TRAINER_ENV_VAR, "local").strip().lower()
    if kind == "local":
        return LocalTrainer()
    if kind == "sagemaker":
        return SageMakerTrainer.from_env(environ)
    raise ValueError(f"{TRAINER_ENV_VAR}={kind!r}: choose 'local' or 'sagemaker'")


# Partitioned checks are a preview feature, verified on the pinned dagster (see checks._spec); the
# decorator warns at import, on every command's console, so that one warning is silenced.
warnings.filterwarnings(
    "ignore", "Specifying a partitions_def on an AssetCheckSpec", dg.PreviewWarning
)


@dg.asset_check(
    asset="features",
    name=PREFLIGHT_CHECK_NAME,
    blocking=True,
    partitions_def=symbol_partitions,
    description="SageMaker preflight for this symbol: credentials, region, bucket, the features "
    "file in S3 (size refuses samples), role trust, image region, instance quota, cost.",
)
def sagemaker_preflight(
    context: dg.AssetCheckExecutionContext, trainer: ModelTrainer
) -> dg.AssetCheckResult:
    if not isinstance(trainer, SageMakerTrainer):
        return dg.AssetCheckResult(passed=True, metadata={"trainer": trainer.kind})
    symbol = context.partition_key
    report = run_preflight(trainer, symbols=[symbol])
    metadata: dict[str, object] = {
        "preflight": dg.MetadataValue.md(f"```\n{report.table()}\n```"),
        "failures": len(report.failures),
    }
    for check in report.checks:  # the dataset's size, rows, last-modified; the cost bound
        metadata.update(check.metadata)
    if "uri" in metadata:
        metadata["uri"] = dg.MetadataValue.path(str(metadata["uri"]))
    return dg.AssetCheckResult(
        passed=report.passed,
        severity=dg.AssetCheckSeverity.ERROR,
        description=report.summary(),
        metadata=metadata,
    )


def sagemaker_asset_checks(trainer: ModelTrainer) -> list[dg.AssetChecksDefinition]:
    """The checks to add to Definitions for this trainer: the preflight on SageMaker only."""
    return [sagemaker_preflight] if isinstance(trainer, SageMakerTrainer) else []
