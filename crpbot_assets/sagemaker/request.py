"""The CreateTrainingJob request for one symbol, built from the settings alone (no AWS call).

`crpbot sagemaker-request SYMBOL` prints exactly what `SageMakerTrainer` sends, minus the Pipes
variables, which exist only once Dagster opens a session.
"""

from __future__ import annotations

import re

from crpbot_assets.sagemaker.code_bundle import BOOTSTRAP_NAME, CONTAINER_CODE_DIR
from crpbot_assets.sagemaker.settings import (
    CHECKPOINT_LOCAL_PATH,
    INSTANCE_COUNT,
    SageMakerSettings,
    SettingsError,
)
from v8_model.config import SYMBOLS_HYPERPARAMETER
from v8_model.evaluation.metrics import metric_regex
from v8_model.job.contract import CODE_CHANNEL, PROCESSOR_CHANNEL, TRAINING_CHANNEL
from v8_model.layout import features_filename, processor_filename

PARQUET_CONTENT_TYPE = "application/x-parquet"  # the channel's files are parquet, never CSV
_IMAGE_REGION = re.compile(r"\.dkr\.ecr\.([a-z0-9-]+)\.amazonaws\.com(?:\.cn)?/")

# SageMaker scrapes these from the job's log lines (the entry point prints one line per epoch).
METRIC_DEFINITIONS = [
    {"Name": "train:loss", "Regex": metric_regex("train_loss")},
    {"Name": "validation:loss", "Regex": metric_regex("val_loss")},
    {"Name": "validation:accuracy", "Regex": metric_regex("val_acc")},
    {"Name": "test:accuracy", "Regex": metric_regex("test_accuracy")},
]


def training_image_uri(settings: SageMakerSettings) -> str:
    """The configured image, else the SDK's PyTorch GPU training image for the region."""
    if settings.image_uri:
        return settings.image_uri
    try:
        from sagemaker.core import image_uris
    except ImportError as error:
        raise SettingsError(
            "no image_uri set and the SageMaker SDK is not installed to look one up: "
            "pip install 'crpbot-v8[sagemaker]' or set CRPBOT_SAGEMAKER_IMAGE_URI"
        ) from error
    try:
        return image_uris.retrieve(
            framework="pytorch",
            version=settings.framework_version,
            py_version=settings.py_version,
            image_scope="training",
            instance_type=settings.instance_type,
            region=settings.region,
        )
    except ValueError as error:
        raise SettingsError(f"no PyTorch training image for these settings: {error}") from error


def image_region(image_uri: str) -> str | None:
    """The region of an ECR image URI, None when the URI is not an ECR one."""
    match = _IMAGE_REGION.search(image_uri)
    return match.group(1) if match else None


def job_hyperparameters(hyperparameters: dict[str, str], symbol: str) -> dict[str, str]:
    """The run's rendered training settings; `symbols` is always this symbol."""
    values = {**hyperparameters, SYMBOLS_HYPERPARAMETER: symbol}  # one job per symbol partition
    return {key: str(value) for key, value in values.items()}


def _s3_channel(name: str, uri: str, content_type: str) -> dict:
    return {
        "ChannelName": name,
        "DataSource": {
            "S3DataSource": {
                "S3DataType": "S3Prefix",
                "S3Uri": uri,
                "S3DataDistributionType": "FullyReplicated",
            }
        },
        "ContentType": content_type,
        "CompressionType": "None",
        "InputMode": "File",
    }


def checkpoint_uri(settings: SageMakerSettings, symbol: str, job_name: str) -> str:
    """One prefix per job: a spot restart of this job resumes from it, and no later job (other
    data, other settings) ever finds a stale checkpoint there."""
    return f"s3://{settings.bucket}/{settings.work_key('checkpoints', symbol, job_name)}/"


def build_training_job_request(
    settings: SageMakerSettings,
    *,
    symbol: str,
    job_name: str,
    image_uri: str,
    code_uri: str,
    hyperparameters: dict[str, str],
    environment: dict[str, str] | None = None,
    tags: list[dict[str, str]] | None = None,
) -> dict:
    """The `create_training_job` keyword arguments for one symbol."""
    root = settings.storage_root()
    stopping: dict[str, int] = {"MaxRuntimeInSeconds": settings.max_runtime_s}
    request: dict = {
        "TrainingJobName": job_name,
        "RoleArn": settings.role_arn,
        "AlgorithmSpecification": {
            "TrainingImage": image_uri,
            "TrainingInputMode": "File",
            "ContainerEntrypoint": ["python", f"{CONTAINER_CODE_DIR}/{BOOTSTRAP_NAME}"],
            "MetricDefinitions": METRIC_DEFINITIONS,
        },
        "HyperParameters": job_hyperparameters(hyperparameters, symbol),
        "InputDataConfig": [
            # The symbol's own file only: the prefix data/ would download every symbol's.
            _s3_channel(
                TRAINING_CHANNEL, f"{root}/data/{features_filename(symbol)}", PARQUET_CONTENT_TYPE
            ),
            _s3_channel(
                PROCESSOR_CHANNEL,
                f"{root}/processors/{processor_filename(symbol)}",
                "application/json",
            ),
            _s3_channel(CODE_CHANNEL, code_uri, "text/x-python"),
        ],
        "OutputDataConfig": {"S3OutputPath": settings.output_uri()},
        "ResourceConfig": {
            "InstanceType": settings.instance_type,
            "InstanceCount": INSTANCE_COUNT,
            "VolumeSizeInGB": settings.volume_size_gb,
        },
        "StoppingCondition": stopping,
        "Environment": {"PYTHONUNBUFFERED": "1", **(environment or {})},
        "Tags": [{"Key": "crpbot:symbol", "Value": symbol}, *(tags or [])],
    }
    if settings.keep_alive_seconds:
        # The instance stays warm after the job; the backfill's next job reuses it.
        request["ResourceConfig"]["KeepAlivePeriodInSeconds"] = settings.keep_alive_seconds
    if settings.use_spot:
        request["EnableManagedSpotTraining"] = True
        stopping["MaxWaitTimeInSeconds"] = settings.effective_max_wait_s()
        request["CheckpointConfig"] = {
            "S3Uri": checkpoint_uri(settings, symbol, job_name),
            "LocalPath": CHECKPOINT_LOCAL_PATH,
        }
        # The entry point saves each epoch there and resumes after a spot interruption.
        request["Environment"]["CRPBOT_CHECKPOINT_DIR"] = CHECKPOINT_LOCAL_PATH
    return request
