"""The SageMaker training-container contract, defined once: paths, channels, env names.

Standard library only: the job's bootstrap reads it before anything is installed. Under the
container's root (`/opt/ml`; SM_BASE_DIR maps it to a folder, as the emulators and tests do):

    input/config/hyperparameters.json   the hyperparameters, a JSON object of strings
    input/data/{CHANNEL}/               one folder per input channel: training, processor, code
    model/                              what the job leaves (SM_MODEL_DIR), uploaded as its model
    output/failure                      why the job failed (SM_OUTPUT_FAILURE); SageMaker shows
                                        its first FAILURE_REASON_LIMIT characters
    checkpoints/                        synced with S3 while the job runs (spot restarts resume)

The entry point (`v8_model.job.entrypoint`) reads it, the bootstrap
(`crpbot_assets.sagemaker.container_bootstrap`) prepares it, the local trainer's emulated
container (`crpbot_assets.sagemaker.container`) and the tests' SageMaker emulator build it, and
the request (`crpbot_assets.sagemaker.request`) names its channels and paths.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath

# The container's command is `python -m ENTRY_POINT_MODULE`.
ENTRY_POINT_MODULE = "v8_model.job.train"
ML_ROOT = "/opt/ml"
BASE_DIR_ENV = "SM_BASE_DIR"
INPUT_CONFIG_DIR_ENV = "SM_INPUT_CONFIG_DIR"
HYPERPARAMETERS_ENV = "SM_HPS"
CHANNELS_ENV = "SM_CHANNELS"
MODEL_DIR_ENV = "SM_MODEL_DIR"
OUTPUT_DIR_ENV = "SM_OUTPUT_DIR"
FAILURE_FILE_ENV = "SM_OUTPUT_FAILURE"

TRAINING_CHANNEL = "training"  # {SYMBOL}_features.parquet
PROCESSOR_CHANNEL = "processor"  # processor_{SYMBOL}_v8.json, optional
CODE_CHANNEL = "code"  # the bundled source and its bootstrap

HYPERPARAMETERS_FILE = "hyperparameters.json"
FAILURE_REASON_LIMIT = 1024  # characters of the failure file SageMaker reports


def channel_env(name: str) -> str:
    """The variable that names a channel's folder: `training` → SM_CHANNEL_TRAINING."""
    return f"SM_CHANNEL_{name.upper()}"


@dataclass(frozen=True)
class ContainerTree:
    """The contract's folders under one root: the container's /opt/ml or a local stand-in."""

    base: Path | PurePosixPath

    @property
    def config_dir(self) -> Path | PurePosixPath:
        return self.base / "input" / "config"

    @property
    def data_dir(self) -> Path | PurePosixPath:
        return self.base / "input" / "data"

    def channel_dir(self, name: str) -> Path | PurePosixPath:
        return self.data_dir / name

    @property
    def model_dir(self) -> Path | PurePosixPath:
        return self.base / "model"

    @property
    def output_dir(self) -> Path | PurePosixPath:
        return self.base / "output"

    @property
    def failure_file(self) -> Path | PurePosixPath:
        return self.output_dir / "failure"

    @property
    def checkpoint_dir(self) -> Path | PurePosixPath:
        return self.base / "checkpoints"


# The tree as the request names it, inside the container.
CONTAINER = ContainerTree(PurePosixPath(ML_ROOT))
