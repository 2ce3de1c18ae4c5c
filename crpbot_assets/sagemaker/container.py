"""An emulated SageMaker training container: the `/opt/ml` tree and `SM_*` env in a local folder.

The contract: config files in `input/config/`, one folder per channel in `input/data/NAME/`, model
output in `model/`, the failure reason in `output/failure`, and the env variables the SageMaker
training toolkit sets. The local trainer runs `python -m v8_model.job.train` inside such a tree, so
the entry point is exercised under the same contract it meets in the cloud; tests that emulate
SageMaker itself reuse `emulate_training_container`.

No Dagster import: it is plain file and env set-up.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from v8_model.job import contract

HOST = "algo-1"  # SageMaker's name for the first (here: only) host
CONTENT_TYPES = {
    contract.TRAINING_CHANNEL: "application/x-parquet",
    contract.PROCESSOR_CHANNEL: "application/json",
}


@dataclass(frozen=True)
class EmulatedContainer(contract.ContainerTree):
    """The paths (`base` stands in for /opt/ml) and env of one emulated training job."""

    job_name: str
    env: dict[str, str]

    def failure_reason(self) -> str | None:
        """What SageMaker would report as FailureReason (the failure file's first 1024 chars)."""
        if not self.failure_file.is_file():
            return None
        return self.failure_file.read_text(encoding="utf-8", errors="replace")[
            : contract.FAILURE_REASON_LIMIT
        ]


def emulate_training_container(
    base: str | Path,
    *,
    job_name: str,
    hyperparameters: Mapping[str, str],
    channels: Mapping[str, str] | None = None,
    instance_type: str = "local",
    num_gpus: int | None = None,
) -> EmulatedContainer:
    """Create the container tree under `base` and return it with the env the job would see.

    `hyperparameters` are written as SageMaker does: a JSON object of strings.
    `channels` maps channel name to content type (default: training parquet + processor JSON);
    each channel folder is created empty for the caller to fill. `num_gpus` defaults to the GPUs
    `nvidia-smi` lists on this machine.
    """
    channels = dict(CONTENT_TYPES if channels is None else channels)
    hyperparameters = {str(key): str(value) for key, value in hyperparameters.items()}
    if num_gpus is None:
        num_gpus = _visible_gpus()
    container = EmulatedContainer(Path(base), job_name, {})
    for folder in (
        container.config_dir,
        container.model_dir,
        container.output_dir / "data",
        container.checkpoint_dir,
        *(container.channel_dir(name) for name in channels),
    ):
        folder.mkdir(parents=True, exist_ok=True)

    resource_config = {
        "current_host": HOST,
        "current_instance_type": instance_type,
        "hosts": [HOST],
        "network_interface_name": "eth0",
    }
    input_data_config = {
        name: {
            "ContentType": content_type,
            "TrainingInputMode": "File",
            "S3DistributionType": "FullyReplicated",
            "RecordWrapperType": "None",
        }
        for name, content_type in channels.items()
    }
    for filename, payload in (
        (contract.HYPERPARAMETERS_FILE, hyperparameters),
        ("resourceconfig.json", resource_config),
        ("inputdataconfig.json", input_data_config),
    ):
        (container.config_dir / filename).write_text(
            json.dumps(payload, indent=1, allow_nan=False), "utf-8"
        )

    env = {
        contract.MODEL_DIR_ENV: str(container.model_dir),
        "SM_INPUT_DIR": str(container.base / "input"),
        contract.INPUT_CONFIG_DIR_ENV: str(container.config_dir),
        contract.OUTPUT_DIR_ENV: str(container.output_dir),
        "SM_OUTPUT_DATA_DIR": str(container.output_dir / "data"),
        contract.CHANNELS_ENV: json.dumps(sorted(channels), allow_nan=False),
        "SM_INPUT_DATA_CONFIG": json.dumps(input_data_config, allow_nan=False),
        contract.HYPERPARAMETERS_ENV: json.dumps(hyperparameters, allow_nan=False),
        "SM_NUM_GPUS": str(num_gpus),
        "SM_NUM_CPUS": str(os.cpu_count() or 1),
        "SM_CURRENT_HOST": HOST,
        "SM_HOSTS": json.dumps([HOST], allow_nan=False),
        "SM_RESOURCE_CONFIG": json.dumps(resource_config, allow_nan=False),
        "TRAINING_JOB_NAME": job_name,
    }
    for name in channels:
        env[contract.channel_env(name)] = str(container.channel_dir(name))
    for key, value in hyperparameters.items():
        # 'batch-size' → SM_HP_BATCH_SIZE: env names stay shell-safe.
        env[f"SM_HP_{re.sub(r'[^A-Za-z0-9]', '_', key).upper()}"] = value
    container.env.update(env)
    return container


def _visible_gpus() -> int:
    """The GPUs `nvidia-smi --list-gpus` lists, 0 without the tool: how SageMaker's training
    toolkit sets SM_NUM_GPUS. Not torch: importing it here cost the Dagster process about 2 CPU
    seconds per local training, only to count."""
    try:
        listing = subprocess.run(
            ["nvidia-smi", "--list-gpus"], capture_output=True, text=True, timeout=30, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):  # no driver, no tool, or it failed: no GPU
        return 0
    return sum(1 for line in listing.splitlines() if line.startswith("GPU "))
