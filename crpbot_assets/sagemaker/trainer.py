"""`SageMakerTrainer`: the `trainer` resource that trains one symbol per SageMaker training job.

Same contract as `LocalTrainer` (crpbot_assets.trainers.ModelTrainer): the features file is the
`training` channel, the symbol's processor the `processor` channel, the job runs
`python -m v8_model.job.train` under Dagster Pipes, and on success the entry point's SM_MODEL_DIR/
{SYMBOL}/ files land under storage `models/{SYMBOL}/` with `run_info.json`, before `train` returns.

Order of a launch, each step able to stop it before any cost:
settings valid → storage root is the settings' bucket → preflight passes (for this symbol) →
source bundle uploaded → job created → Pipes/logs/status followed → model.tar.gz verified →
published.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field

from crpbot_assets.sagemaker.artifacts import (
    ARCHIVE_NAME,
    ArtifactError,
    download_archive,
    extract_verified,
)
from crpbot_assets.sagemaker.aws import AwsClients
from crpbot_assets.sagemaker.code_bundle import CodeBundle
from crpbot_assets.sagemaker.pipes_client import (
    PipesSageMakerClient,
    SageMakerJobError,
    console_url,
)
from crpbot_assets.sagemaker.preflight import run_preflight
from crpbot_assets.sagemaker.pricing import Price, instance_price
from crpbot_assets.sagemaker.request import build_training_job_request, training_image_uri
from crpbot_assets.sagemaker.settings import (
    SageMakerSettings,
    SettingsError,
    region_source,
    settings_from_env,
)
from crpbot_assets.sagemaker.time_split import TimeSplit
from crpbot_assets.storage import StorageResource
from crpbot_assets.trainers import (
    ModelTrainer,
    RunInfo,
    TrainingFailedError,
    publish_model,
    training_job_name,
)


class SageMakerTrainer(SageMakerSettings, ModelTrainer):
    """Trains on SageMaker GPUs; every field is a setting (see SageMakerSettings).

    Hyperparameters: what the `model` asset passes (its run profile's TrainConfig, rendered, with
    the asset's overrides); `symbols` is always the partition's.
    """

    message_interval_s: float = Field(
        default=10.0, description="Seconds between reads of the job's Pipes messages."
    )

    @property
    def kind(self) -> str:
        return "sagemaker"

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, **overrides: Any
    ) -> SageMakerTrainer:
        """Settings from the environment (ENV_VARS), then `overrides`; the rest are defaults."""
        return cls(**settings_from_env(os.environ if environ is None else environ, overrides))

    def aws_clients(self) -> AwsClients:
        return AwsClients(self.region)

    def pipes_client(self, clients: AwsClients) -> PipesSageMakerClient:
        return PipesSageMakerClient(
            bucket=self.bucket,
            sagemaker_client=clients.sagemaker,
            s3_client=clients.s3,
            logs_client=clients.logs,
            pipes_prefix=self.work_key("pipes"),
            poll_interval_s=self.poll_interval_s,
            message_interval_s=self.message_interval_s,
        )

    def _check_storage(self, storage: StorageResource) -> None:
        if storage.root.rstrip("/") != self.storage_root():
            raise SettingsError(
                f"the storage root is {storage.root!r} but the SageMaker settings read "
                f"{self.storage_root()!r} (bucket {self.bucket!r}, prefix {self.prefix!r}): "
                "the job's channels must be the files the assets wrote; set CRPBOT_ROOT to "
                "s3://<bucket>[/<prefix>] and the bucket/prefix settings to match"
            )

    def train(
        self,
        context: dg.AssetExecutionContext,
        *,
        symbol: str,
        storage: StorageResource,
        hyperparameters: dict[str, str],
    ) -> dg.PipesClientCompletedInvocation:
        self.validate_for_launch()
        self._check_storage(storage)
        clients = self.aws_clients()
        report = run_preflight(self, symbols=[symbol], clients=clients, require_processors=True)
        context.log.info(f"SageMaker preflight for {symbol}:\n{report.table()}")
        if not report.passed:
            raise TrainingFailedError(
                description=f"no SageMaker job for {symbol}: {report.summary()}\n\n{report.table()}"
            )

        code_uri = CodeBundle(self).upload(clients.s3)
        job_name = training_job_name(symbol, context.run.run_id)
        context.log.info(
            f"SageMaker region {self.region} ({region_source(self.region, os.environ)}); "
            f"the bucket s3://{self.bucket} is there (preflight)"
        )
        request = build_training_job_request(
            self,
            symbol=symbol,
            job_name=job_name,
            image_uri=training_image_uri(self),
            code_uri=code_uri,
            hyperparameters=hyperparameters,
        )
        price = instance_price(self.instance_type, self.price_per_hour_usd)
        client = self.pipes_client(clients)
        try:
            invocation = client.run(
                context=context, create_training_job_params=request, price=price
            )
        except SageMakerJobError as error:
            raise TrainingFailedError(
                description=f"training {symbol} on SageMaker failed: {error}",
                metadata={
                    "job_name": job_name,
                    "failure_reason": error.job.get("FailureReason", str(error)),
                    "sagemaker_job_url": dg.MetadataValue.url(console_url(self.region, job_name)),
                },
            ) from error

        job = client.describe(job_name)
        with tempfile.TemporaryDirectory(prefix=f"{job_name}-") as tmp:
            archive_uri = job["ModelArtifacts"]["S3ModelArtifacts"]
            try:
                archive = download_archive(clients.s3, archive_uri, Path(tmp) / ARCHIVE_NAME)
                symbol_dir = extract_verified(archive, symbol, Path(tmp) / "model")
            except ArtifactError as error:
                raise TrainingFailedError(
                    description=f"training {symbol} on SageMaker ({job_name}): {error}",
                    metadata={"job_name": job_name, "model_artifacts": archive_uri},
                ) from error
            keeps_warm = bool(job.get("ResourceConfig", {}).get("KeepAlivePeriodInSeconds"))
            reused_of = client.reused_pool_of(job_name) if keeps_warm else ""
            run_info = self._run_info(job, symbol, request, price, context, reused_of)
            publish_model(storage, symbol, symbol_dir, run_info)
        context.log.info(f"{symbol}: verified {archive_uri} and published models/{symbol}/")
        return invocation

    def _run_info(
        self,
        job: Mapping[str, Any],
        symbol: str,
        request: Mapping[str, Any],
        price: Price,
        context: dg.AssetExecutionContext,
        reused_of: str | None = "",
    ) -> RunInfo:
        """`reused_of`: the job whose warm pool this one started on ("" cold, None unknown)."""
        created = job["CreationTime"]
        ended = job.get("TrainingEndTime") or datetime.now(UTC)
        billable = float(job.get("BillableTimeInSeconds", job.get("TrainingTimeInSeconds", 0)))
        cost = price.cost_usd(billable)
        if cost is None:
            context.log.warning(
                f"no price for {self.instance_type}: cost unknown (run_info cost_usd is null); "
                "set price_per_hour_usd (CRPBOT_PRICE_PER_HOUR_USD)"
            )
        split = TimeSplit.from_transitions(job.get("SecondaryStatusTransitions") or [])
        if reused_of is None:
            context.log.warning(
                "could not tell whether the job reused a warm pool: ListTrainingJobs was refused"
            )
        return RunInfo(
            symbol=symbol,
            trainer=self.kind,
            job_name=job["TrainingJobName"],
            instance_type=self.instance_type,
            started_at=created.isoformat(timespec="seconds"),
            finished_at=ended.isoformat(timespec="seconds"),
            wall_seconds=round((ended - created).total_seconds(), 3),
            billable_seconds=billable,
            cost_usd=cost,
            hyperparameters=dict(request["HyperParameters"]),
            dagster_run_id=context.run.run_id,
            startup_seconds=split.startup_seconds,
            training_seconds=split.training_seconds,
            upload_seconds=split.upload_seconds,
            warm_pool_status=job.get("WarmPoolStatus", {}).get("Status", ""),
            reused_warm_pool_of=reused_of,
        )
