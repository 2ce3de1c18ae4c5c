"""Who trains the model: the `trainer` resource. Same entry point, same contract, local or cloud.

`ModelTrainer` is the interface the `model` asset calls; `LocalTrainer` runs the entry point as
a subprocess on this machine, the SageMaker trainer (crpbot_assets.sagemaker) as a training job.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from abc import abstractmethod
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
from pydantic import Field

from crpbot_assets.sagemaker.container import EmulatedContainer, emulate_training_container
from crpbot_assets.storage import (
    RUN_INFO_FILE,
    StorageResource,
    features_key,
    model_folder,
    processor_key,
)
from crpbot_assets.warm_trainer import WARM_TRAINER_ENV_VAR
from v8_model.job import contract
from v8_model.job.lifetime import PARENT_PID_ENV_VAR, process_exists
from v8_model.layout import features_filename, processor_filename
from v8_model.record import strict_json


class TrainingFailedError(dg.Failure):
    """The entry point failed; the description is its failure file's reason."""


@dataclass(frozen=True)
class RunInfo:
    """Where and how a model was trained: `models/{SYMBOL}/run_info.json`, read by gate_report.

    Every trainer writes it, last, after the model files: `cost_usd` is 0 for local runs; a cloud
    trainer fills in its billable time and price, or None when the price is unknown. The wall time
    is split into start-up, training and upload (crpbot_assets.sagemaker.time_split); a SageMaker
    job also records its warm pool's status and the job whose warm pool it reused ("" when it
    started cold, None when that could not be read).
    """

    symbol: str
    trainer: str  # "local", "sagemaker"
    job_name: str
    instance_type: str
    started_at: str  # ISO 8601, UTC
    finished_at: str
    wall_seconds: float
    billable_seconds: float = 0.0
    cost_usd: float | None = 0.0
    hyperparameters: dict[str, str] = field(default_factory=dict)
    dagster_run_id: str = ""
    startup_seconds: float | None = None
    training_seconds: float | None = None
    upload_seconds: float | None = None
    warm_pool_status: str = ""  # SageMaker's WarmPoolStatus.Status; "" = no warm pool
    reused_warm_pool_of: str | None = ""

    def time_metadata(self) -> dict[str, object]:
        """The time split, billable time and cost as materialization metadata."""
        metadata: dict[str, object] = {
            "startup_s": self.startup_seconds,
            "training_s": self.training_seconds,
            "upload_s": self.upload_seconds,
            "wall_s": self.wall_seconds,
            "billable_s": self.billable_seconds,
            "cost_usd": self.cost_usd,
        }
        if self.trainer == "sagemaker":
            metadata["warm_pool_status"] = self.warm_pool_status or "none"
            metadata["warm_pool_reused"] = (
                "unknown" if self.reused_warm_pool_of is None else bool(self.reused_warm_pool_of)
            )
            if self.reused_warm_pool_of:
                metadata["reused_warm_pool_of"] = self.reused_warm_pool_of
        return metadata

    def to_json(self) -> str:
        return strict_json(asdict(self), indent=1)

    @classmethod
    def from_dict(cls, values: dict) -> RunInfo:
        """A stored run_info.json; fields a newer or older writer added or lacked are skipped or
        left at their defaults."""
        known = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in values.items() if key in known})


def training_job_name(symbol: str, run_id: str) -> str:
    """A SageMaker-valid job name (≤ 63 chars, [a-zA-Z0-9-]) unique per run and symbol."""
    return f"crpbot-v8-{symbol.lower()}-{run_id[:8]}-{int(time.time())}"


def stage_inputs(container: EmulatedContainer, storage: StorageResource, symbol: str) -> None:
    """Fill the `training` and `processor` channels from storage."""
    storage.store.download_file(
        features_key(symbol),
        container.channel_dir(contract.TRAINING_CHANNEL) / features_filename(symbol),
    )
    storage.store.download_file(
        processor_key(symbol),
        container.channel_dir(contract.PROCESSOR_CHANNEL) / processor_filename(symbol),
    )


def publish_model(
    storage: StorageResource, symbol: str, symbol_model_dir: Path, run_info: RunInfo
) -> list[str]:
    """Copy the entry point's SM_MODEL_DIR/{SYMBOL}/* to `models/{SYMBOL}/`, run_info.json last.

    run_info.json goes last so that a reader who sees the new one also sees the new model files.
    Returns the keys written.
    """
    keys = upload_model_files(storage, symbol, symbol_model_dir)
    return [*keys, write_run_info(storage, symbol, run_info)]


def upload_model_files(storage: StorageResource, symbol: str, symbol_model_dir: Path) -> list[str]:
    """The first half of `publish_model`: the model files, without run_info.json."""
    files = sorted(path for path in symbol_model_dir.rglob("*") if path.is_file())
    if not files:
        raise TrainingFailedError(
            description=f"the entry point exited 0 but wrote no model files in {symbol_model_dir}"
        )
    folder = model_folder(symbol)
    keys = []
    for path in files:
        key = f"{folder}/{path.relative_to(symbol_model_dir).as_posix()}"
        storage.store.upload_file(path, key)
        keys.append(key)
    return keys


def write_run_info(storage: StorageResource, symbol: str, run_info: RunInfo) -> str:
    """The second half of `publish_model`: run_info.json, after the model files."""
    run_info_key = f"{model_folder(symbol)}/{RUN_INFO_FILE}"
    storage.store.write_text(run_info_key, run_info.to_json())
    return run_info_key


# The local trainer's emulated containers: "{pid}-{job}-*", removed by the next trainer when the
# process `pid` was killed before it could remove its own.
WORK_BASE = Path(tempfile.gettempdir()) / "crpbot-trainer"


def remove_orphaned_work_folders() -> list[Path]:
    """Delete work folders whose owning process no longer exists; returns what was removed."""
    removed = []
    for folder in sorted(WORK_BASE.glob("*-*")) if WORK_BASE.is_dir() else []:
        owner = folder.name.split("-", 1)[0]
        if folder.is_dir() and owner.isdigit() and not process_exists(int(owner)):
            shutil.rmtree(folder)
            removed.append(folder)
    return removed


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class ModelTrainer(dg.ConfigurableResource):
    """Trains one symbol's model with `python -m v8_model.job.train` under the SageMaker contract.

    Contract for every implementation of `train`:
    - inputs come from `storage`: `data/{SYMBOL}_features.parquet` goes into the `training`
      channel, `processors/processor_{SYMBOL}_v8.json` into the `processor` channel;
    - the entry point runs under Dagster Pipes with the run's partition key, so it trains exactly
      `symbol` and reports its metadata and the six gate checks;
    - on success the entry point's SM_MODEL_DIR/{SYMBOL}/* files are under storage
      `models/{SYMBOL}/` (see `publish_model`), with `run_info.json` written last, before
      `train` returns;
    - on failure it raises `TrainingFailedError` carrying the failure file's reason.

    Returns the Pipes invocation; the `model` asset yields `invocation.get_results()` (one
    MaterializeResult and one AssetCheckResult per gate).
    """

    @property
    @abstractmethod
    def kind(self) -> str:
        """Short name shown in reports: "local", "sagemaker"."""

    @abstractmethod
    def train(
        self,
        context: dg.AssetExecutionContext,
        *,
        symbol: str,
        storage: StorageResource,
        hyperparameters: dict[str, str],
    ) -> dg.PipesClientCompletedInvocation: ...


class LocalTrainer(ModelTrainer):
    """Runs the entry point as a subprocess on this machine, in an emulated container tree.

    Each epoch's line reaches the run's logs through Pipes; the entry point's stdout and stderr
    are forwarded to this process's (the step's captured logs). Where a warm trainer server is
    advertised (the main command's, a pytest worker's), the subprocess asks it for the training
    instead of importing torch itself (see `entry_point_command`).
    """

    python: str = Field(
        default=sys.executable, description="the interpreter that runs the entry point"
    )

    @property
    def kind(self) -> str:
        return "local"

    def entry_point_command(self) -> list[str]:
        """`python -m v8_model.job.train`, or the request to a warm trainer server when one is
        advertised in WARM_TRAINER_ENV_VAR (`crpbot_assets.warm_trainer`: the same contract,
        without importing torch again)."""
        # The server imported this interpreter's packages: another `python` trains afresh.
        if os.environ.get(WARM_TRAINER_ENV_VAR) and self.python == sys.executable:
            return [self.python, "-m", "crpbot_assets.warm_trainer"]
        return [self.python, "-m", contract.ENTRY_POINT_MODULE]

    def train(
        self,
        context: dg.AssetExecutionContext,
        *,
        symbol: str,
        storage: StorageResource,
        hyperparameters: dict[str, str],
    ) -> dg.PipesClientCompletedInvocation:
        job_name = training_job_name(symbol, context.run.run_id)
        started_at, started = utc_now(), time.perf_counter()
        for folder in remove_orphaned_work_folders():
            context.log.warning(f"removed {folder}, left behind by a trainer that was killed")
        WORK_BASE.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=f"{os.getpid()}-{job_name}-", dir=WORK_BASE) as tmp:
            container = emulate_training_container(
                Path(tmp) / "opt_ml", job_name=job_name, hyperparameters=hyperparameters
            )
            stage_inputs(container, storage, symbol)
            context.log.info(f"training {symbol} locally as {job_name}: {hyperparameters}")
            training_started = time.perf_counter()
            try:
                invocation = dg.PipesSubprocessClient().run(
                    context=context,
                    command=self.entry_point_command(),
                    # The entry point dies with this process instead of training on as an orphan.
                    env={**container.env, PARENT_PID_ENV_VAR: str(os.getpid())},
                    cwd=tmp,
                )
            except Exception as error:
                # The entry point's own reason beats Pipes' "exited with code 1"; without a
                # failure file the error is not the entry point's, so it propagates unchanged.
                reason = container.failure_reason()
                if reason is None:
                    raise
                raise TrainingFailedError(
                    description=f"training {symbol} failed ({error}): {reason}",
                    metadata={"job_name": job_name, "failure_reason": reason},
                ) from error
            upload_started = time.perf_counter()
            upload_model_files(storage, symbol, container.model_dir / symbol)
            finished = time.perf_counter()
            run_info = RunInfo(
                symbol=symbol,
                trainer=self.kind,
                job_name=job_name,
                instance_type="local",
                started_at=started_at,
                finished_at=utc_now(),
                wall_seconds=round(finished - started, 3),
                hyperparameters=hyperparameters,
                dagster_run_id=context.run.run_id,
                startup_seconds=round(training_started - started, 3),
                training_seconds=round(upload_started - training_started, 3),
                upload_seconds=round(finished - upload_started, 3),
            )
            write_run_info(storage, symbol, run_info)
        return invocation
