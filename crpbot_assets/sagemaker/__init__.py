"""Training on SageMaker GPUs: settings, request builder, Pipes client, trainer and preflight.

Import the Dagster objects from `crpbot_assets.sagemaker.dagster_objects`; `docs/sagemaker.md`
explains the design (plain boto3 launch, packaged source, emulator-tested).
"""

from crpbot_assets.sagemaker.pipes_client import PipesSageMakerClient, SageMakerJobError
from crpbot_assets.sagemaker.preflight import PreflightReport, run_preflight
from crpbot_assets.sagemaker.settings import SageMakerSettings, SettingsError
from crpbot_assets.sagemaker.trainer import SageMakerTrainer

__all__ = [
    "PipesSageMakerClient",
    "PreflightReport",
    "SageMakerJobError",
    "SageMakerSettings",
    "SageMakerTrainer",
    "SettingsError",
    "run_preflight",
]
