"""Every SageMaker setting in one place: the Dagster resource's config, with environment fallbacks.

Defaults are the seed's; only the role has none. The same class backs the `trainer` resource in
Dagster (`SageMakerTrainer` inherits these fields) and the `crpbot` command line
(`settings_from_env` + flags), so a setting never has two spellings or two defaults. Training
settings are not here: they are the run profile's `TrainConfig` (`v8_model.config`), rendered as
the job's hyperparameters.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

import dagster as dg
from pydantic import Field

from crpbot_assets.storage import ROOT_ENV_VAR
from v8_model.job import contract
from v8_model.job.requirements import MIN_TORCH_VERSION, version_tuple
from v8_model.storage import S3_SCHEME, parse_s3_uri

# The seed's instance count: the entry point trains on one GPU and is not distributed.
INSTANCE_COUNT = 1
CHECKPOINT_LOCAL_PATH = str(contract.CONTAINER.checkpoint_dir)

# SageMaker's range for ResourceConfig.KeepAlivePeriodInSeconds (warm pools).
MAX_KEEP_ALIVE_S = 3600

# IAM's documented role-name alphabet, any partition (aws, aws-cn, aws-us-gov), 12-digit account.
# Matched with fullmatch: `$` alone would accept a trailing newline (a pasted ARN).
ROLE_ARN_PATTERN = re.compile(
    r"arn:aws(?:-[a-z]+)*:iam::(\d{12}):role/(?:[\w+=,.@-]+/)*([\w+=,.@-]{1,64})"
)
BUCKET_PATTERN = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
REGION_PATTERN = re.compile(r"^[a-z]{2}(?:-[a-z]+)+-\d$")

DEFAULT_REGION = "us-east-2"  # the seed's bucket region (SPEC §4)
REGION_ENV_VAR = "CRPBOT_REGION"
# The AWS CLI's ambient default region: never the job's region (it silently moved jobs away from
# the bucket); preflight names it when it differs.
AMBIENT_REGION_VARS = ("AWS_REGION", "AWS_DEFAULT_REGION")

# Setting → environment variables read by the CLI and `trainer_from_env`, first one set wins.
ENV_VARS: dict[str, tuple[str, ...]] = {
    "role_arn": ("CRPBOT_SAGEMAKER_ROLE_ARN",),
    "bucket": ("CRPBOT_BUCKET",),
    "prefix": ("CRPBOT_BUCKET_PREFIX",),
    "region": (REGION_ENV_VAR,),
    "instance_type": ("CRPBOT_INSTANCE_TYPE",),
    "image_uri": ("CRPBOT_SAGEMAKER_IMAGE_URI",),
    "framework_version": ("CRPBOT_SAGEMAKER_FRAMEWORK_VERSION",),
    "use_spot": ("CRPBOT_SAGEMAKER_SPOT",),
    "keep_alive_seconds": ("CRPBOT_SAGEMAKER_KEEP_ALIVE_SECONDS",),
    "price_per_hour_usd": ("CRPBOT_PRICE_PER_HOUR_USD",),
    "min_features_mb": ("CRPBOT_MIN_FEATURES_MB",),
    "min_features_rows": ("CRPBOT_MIN_FEATURES_ROWS",),
}


SEED_BUCKET = "crpbot-sagemaker-training"


def _root_in_s3() -> tuple[str, str] | None:
    """(bucket, prefix) of CRPBOT_ROOT when it is an s3:// URI: the bucket is set in one place."""
    root = os.environ.get(ROOT_ENV_VAR, "")
    if not root.startswith(S3_SCHEME):
        return None
    bucket, prefix = parse_s3_uri(root)
    return bucket, prefix.strip("/")


def default_bucket() -> str:
    in_s3 = _root_in_s3()
    return in_s3[0] if in_s3 else SEED_BUCKET


def default_prefix() -> str:
    in_s3 = _root_in_s3()
    return in_s3[1] if in_s3 else ""


def region_source(region: str, environ: Mapping[str, str], flag: str | None = None) -> str:
    """Where `region` came from, in the documented order: flag or resource config, then
    CRPBOT_REGION, then the default. AWS_REGION / AWS_DEFAULT_REGION never choose it."""
    if flag:
        return "--region flag"
    if environ.get(REGION_ENV_VAR) == region:
        return REGION_ENV_VAR
    if region == DEFAULT_REGION:
        return "default (the seed's bucket region)"
    return "setting `region` (resource config)"


class SettingsError(ValueError):
    """A setting that cannot work; the message names the setting and how to fix it."""


class SageMakerSettings(dg.Config):
    """Where and how a symbol's model trains on SageMaker."""

    role_arn: str = Field(
        default="",
        description="IAM role the training job assumes (required, e.g. "
        "arn:aws:iam::123456789012:role/SageMakerTraining); env CRPBOT_SAGEMAKER_ROLE_ARN.",
    )
    bucket: str = Field(
        default_factory=default_bucket,
        description="S3 bucket of the storage root (data/, processors/, models/) and job output; "
        f"default: the bucket of {ROOT_ENV_VAR} when it is s3://, else {SEED_BUCKET}.",
    )
    prefix: str = Field(
        default_factory=default_prefix,
        description="Key prefix of the storage root inside the bucket: root = s3://bucket/prefix; "
        f"default: the prefix of {ROOT_ENV_VAR} when it is s3://, else none.",
    )
    region: str = Field(
        default=DEFAULT_REGION,
        description="AWS region of the jobs and the bucket; env CRPBOT_REGION. AWS_REGION and "
        "AWS_DEFAULT_REGION are ignored: the bucket's region decides, not the shell's.",
    )
    instance_type: str = Field(default="ml.g5.4xlarge", description="Training instance type.")
    volume_size_gb: int = Field(default=100, description="Training volume size (GB).")
    max_runtime_s: int = Field(default=7200, description="StoppingCondition.MaxRuntimeInSeconds.")
    output_prefix: str = Field(
        default="v8-final/output/",
        description="Job output under the bucket: <output>/<job>/output/model.tar.gz.",
    )
    work_prefix: str = Field(
        default="v8-final/",
        description="Under the bucket: code/ (packaged source), pipes/ (Dagster Pipes context "
        "and messages), checkpoints/ (spot).",
    )
    image_uri: str = Field(
        default="",
        description="Training image; empty = the SDK's PyTorch GPU training image for the region.",
    )
    framework_version: str = Field(
        default=MIN_TORCH_VERSION,
        description="PyTorch version of the training image (lookup; the job's torch); at least "
        f"{MIN_TORCH_VERSION}. Env CRPBOT_SAGEMAKER_FRAMEWORK_VERSION.",
    )
    py_version: str = Field(default="py312", description="Python of the PyTorch image (lookup).")
    use_spot: bool = Field(default=False, description="Managed spot training with checkpoints.")
    keep_alive_seconds: int = Field(
        default=0,
        description="Warm pool: seconds the instance stays up after a job "
        "(ResourceConfig.KeepAlivePeriodInSeconds, at most 3600), so the next job of a backfill "
        "starts on it without provisioning; 0 = none. Not with use_spot (SageMaker forbids it); "
        "needs the warm-pool quota. Env CRPBOT_SAGEMAKER_KEEP_ALIVE_SECONDS.",
    )
    max_wait_s: int = Field(
        default=0,
        description="Spot only: MaxWaitTimeInSeconds (>= max_runtime_s); 0 = 2 x max_runtime_s.",
    )
    # Rows, not bytes, tell a history from a sample: the run profile's minimum (30 days of
    # minutes for `demo`, 365 for `full`) refuses the original 800 KB samples and accepts the
    # demo's 39 MB files as well as the seed's 262-293 MiB ones.
    min_features_rows: int = Field(
        default=0,
        description="Preflight refuses a {SYMBOL}_features.parquet with fewer rows; 0 = the run "
        "profile's minimum (CRPBOT_PROFILE). Env CRPBOT_MIN_FEATURES_ROWS.",
    )
    min_features_mb: float = Field(
        default=0.0,
        description="Optional extra floor: preflight refuses a features file smaller than this "
        "(MB, 10^6 B); 0 = no size floor, the row minimum decides.",
    )
    price_per_hour_usd: float = Field(
        default=0.0,
        description="Instance price for cost figures; 0 = the built-in on-demand price table.",
    )
    poll_interval_s: float = Field(default=30.0, description="Seconds between job status polls.")

    # --- derived values -------------------------------------------------------------------------

    def storage_root(self) -> str:
        """The storage root the job's channels are read from: s3://bucket[/prefix]."""
        prefix = self.prefix.strip("/")
        return f"s3://{self.bucket}/{prefix}" if prefix else f"s3://{self.bucket}"

    def storage_key(self, key: str) -> str:
        """A storage-relative key ('data/BTC_features.parquet') as a key inside the bucket."""
        prefix = self.prefix.strip("/")
        return f"{prefix}/{key}" if prefix else key

    def work_key(self, *parts: str) -> str:
        return "/".join([self.work_prefix.strip("/"), *parts]).strip("/")

    def output_uri(self) -> str:
        return f"s3://{self.bucket}/{self.output_prefix.strip('/')}/"

    def effective_max_wait_s(self) -> int:
        return self.max_wait_s or 2 * self.max_runtime_s

    def role_account(self) -> str | None:
        match = ROLE_ARN_PATTERN.fullmatch(self.role_arn)
        return match.group(1) if match else None

    def role_name(self) -> str | None:
        match = ROLE_ARN_PATTERN.fullmatch(self.role_arn)
        return match.group(2) if match else None

    def problems(self) -> list[str]:
        """Every setting that would make a launch fail, as messages naming the fix."""
        found = []
        if not self.role_arn:
            found.append(
                "role_arn is not set: pass --role-arn or set CRPBOT_SAGEMAKER_ROLE_ARN to the "
                "ARN of an IAM role SageMaker can assume (arn:aws:iam::<account>:role/<name>)"
            )
        elif self.role_arn != self.role_arn.strip():
            found.append(
                f"role_arn {self.role_arn!r} has leading or trailing whitespace (a pasted "
                "newline?): set CRPBOT_SAGEMAKER_ROLE_ARN / --role-arn to the bare ARN"
            )
        elif not ROLE_ARN_PATTERN.fullmatch(self.role_arn):
            found.append(
                f"role_arn {self.role_arn!r} is not an IAM role ARN; expected "
                "arn:aws:iam::<12-digit account>:role/<name>"
            )
        if not BUCKET_PATTERN.fullmatch(self.bucket):
            found.append(f"bucket {self.bucket!r} is not a valid S3 bucket name")
        if not REGION_PATTERN.fullmatch(self.region):
            found.append(f"region {self.region!r} is not an AWS region name (e.g. us-east-2)")
        if not self.instance_type.startswith("ml."):
            found.append(f"instance_type {self.instance_type!r} is not a SageMaker type (ml.*)")
        positive = {
            "volume_size_gb": self.volume_size_gb,
            "max_runtime_s": self.max_runtime_s,
            "poll_interval_s": self.poll_interval_s,
        }
        found.extend(
            f"{name} must be positive, got {value}"
            for name, value in positive.items()
            if value <= 0
        )
        if self.use_spot and self.effective_max_wait_s() < self.max_runtime_s:
            found.append(
                f"max_wait_s {self.max_wait_s} is below max_runtime_s {self.max_runtime_s}: "
                "SageMaker requires MaxWaitTimeInSeconds >= MaxRuntimeInSeconds"
            )
        if not 0 <= self.keep_alive_seconds <= MAX_KEEP_ALIVE_S:
            found.append(
                f"keep_alive_seconds must be between 0 and {MAX_KEEP_ALIVE_S} (SageMaker's range "
                f"for KeepAlivePeriodInSeconds), got {self.keep_alive_seconds}"
            )
        if self.use_spot and self.keep_alive_seconds:
            found.append(
                f"use_spot (--spot) and keep_alive_seconds (--keep-alive-seconds "
                f"{self.keep_alive_seconds}) cannot be combined: SageMaker does not keep warm "
                "pools for managed spot training; drop one of the two settings"
            )
        if version_tuple(self.framework_version) < version_tuple(MIN_TORCH_VERSION):
            found.append(
                f"framework_version {self.framework_version!r} is below the entry point's minimum "
                f"PyTorch {MIN_TORCH_VERSION}: set CRPBOT_SAGEMAKER_FRAMEWORK_VERSION to "
                f"{MIN_TORCH_VERSION} or later"
            )
        if self.min_features_rows < 0:
            found.append(f"min_features_rows must be >= 0, got {self.min_features_rows}")
        if self.price_per_hour_usd < 0:
            found.append(f"price_per_hour_usd must be >= 0, got {self.price_per_hour_usd}")
        return found

    def validate_for_launch(self) -> None:
        """Raise SettingsError listing every problem; nothing is sent to AWS before this passes."""
        found = self.problems()
        if found:
            raise SettingsError("SageMaker settings are not usable:\n- " + "\n- ".join(found))


def settings_from_env(
    environ: Mapping[str, str], overrides: Mapping[str, object] | None = None
) -> dict[str, object]:
    """Setting values from ENV_VARS, then `overrides` (command-line flags; None = not given)."""
    values: dict[str, object] = {}
    for name, variables in ENV_VARS.items():
        for variable in variables:
            if environ.get(variable):
                values[name] = environ[variable]
                break
    values.update({key: value for key, value in (overrides or {}).items() if value is not None})
    return values
