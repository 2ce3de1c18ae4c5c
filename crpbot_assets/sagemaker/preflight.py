"""Preflight: whether a SageMaker run can succeed, checked before a cent is spent.

The real `check_sagemaker_ready`: every check runs (one failure does not hide the next), each
yields PASS / WARN / FAIL / INFO with a detail naming what is missing and how to fix it. Used by
`crpbot preflight`, by the Dagster preflight check, and by `SageMakerTrainer` before every launch
(a failed preflight means no job and no cost).
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from crpbot_assets.sagemaker.aws import AwsClients, error_code
from crpbot_assets.sagemaker.pricing import instance_price
from crpbot_assets.sagemaker.request import image_region, training_image_uri
from crpbot_assets.sagemaker.settings import INSTANCE_COUNT, SageMakerSettings, SettingsError
from crpbot_assets.storage import features_key, processor_key
from v8_model.defaults import SYMBOLS

SAGEMAKER_PRINCIPAL = "sagemaker.amazonaws.com"
PARQUET_MAGIC = b"PAR1"
MB = 1_000_000


class Status(StrEnum):
    PASS = "PASS"
    WARN = "WARN"  # worth knowing, does not block a launch
    FAIL = "FAIL"  # the run cannot succeed: blocks a launch
    INFO = "INFO"


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    detail: str
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class PreflightReport:
    checks: list[Check]

    @property
    def passed(self) -> bool:
        return not self.failures

    @property
    def failures(self) -> list[Check]:
        return [check for check in self.checks if check.status is Status.FAIL]

    def table(self) -> str:
        width = max(len("CHECK"), *(len(check.name) for check in self.checks))
        lines = [f"{'CHECK':<{width}}  STATUS  DETAIL"]
        lines += [f"{c.name:<{width}}  {c.status.value:<6}  {c.detail}" for c in self.checks]
        return "\n".join(lines)

    def summary(self) -> str:
        if self.passed:
            return f"preflight passed ({len(self.checks)} checks)"
        listed = "\n".join(f"  - {check.name}: {check.detail}" for check in self.failures)
        return f"preflight FAILED: {len(self.failures)} of {len(self.checks)} checks\n{listed}"


def _describe(error: ClientError | BotoCoreError) -> str:
    if isinstance(error, ClientError):
        message = error.response.get("Error", {}).get("Message", "")
        return f"{error_code(error)}: {message}".rstrip(": ")
    return str(error)


def parquet_rows(s3: Any, bucket: str, key: str, size: int) -> int:
    """Row count from the parquet footer: two ranged reads, never the whole file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    tail = s3.get_object(Bucket=bucket, Key=key, Range=f"bytes={size - 8}-")["Body"].read()
    if size < 12 or tail[4:] != PARQUET_MAGIC:
        raise ValueError("not a parquet file (no PAR1 footer)")
    footer_size = int.from_bytes(tail[:4], "little")
    start = size - 8 - footer_size
    footer = s3.get_object(Bucket=bucket, Key=key, Range=f"bytes={start}-")["Body"].read()
    return pq.read_metadata(pa.BufferReader(PARQUET_MAGIC + footer)).num_rows


def trusts_sagemaker(policy: Any) -> bool:
    """Whether an assume-role policy lets sagemaker.amazonaws.com assume the role."""
    if isinstance(policy, str):  # IAM returns it URL-encoded when botocore does not decode it
        policy = json.loads(urllib.parse.unquote(policy))
    statements = policy.get("Statement", [])
    for statement in [statements] if isinstance(statements, dict) else statements:
        actions = statement.get("Action", [])
        services = statement.get("Principal", {}).get("Service", [])
        actions = [actions] if isinstance(actions, str) else actions
        services = [services] if isinstance(services, str) else services
        if (
            statement.get("Effect") == "Allow"
            and SAGEMAKER_PRINCIPAL in services
            and any(action in {"sts:AssumeRole", "sts:*", "*"} for action in actions)
        ):
            return True
    return False


def quota_name(instance_type: str, spot: bool) -> str:
    """The Service Quotas name of SageMaker's per-type training quota."""
    return f"{instance_type} for {'spot ' if spot else ''}training job usage"


def find_training_quota(service_quotas: Any, name: str) -> tuple[float, str] | None:
    """(value, source) of the quota: the account's applied value, else AWS's default."""
    for operation in ("list_service_quotas", "list_aws_default_service_quotas"):
        for page in service_quotas.get_paginator(operation).paginate(ServiceCode="sagemaker"):
            for quota in page.get("Quotas", []):
                if quota.get("QuotaName") == name:
                    source = "applied" if operation == "list_service_quotas" else "AWS default"
                    return float(quota["Value"]), source
    return None


class Preflight:
    """Runs the checks for some symbols with some settings; see `run_preflight`."""

    def __init__(
        self,
        settings: SageMakerSettings,
        clients: AwsClients,
        symbols: Sequence[str],
        require_processors: bool,
    ) -> None:
        self.settings = settings
        self.clients = clients
        self.symbols = list(symbols)
        self.require_processors = require_processors
        self.account: str | None = None
        self.bucket_ok = False

    def run(self) -> PreflightReport:
        steps: list[Callable[[], Iterable[Check]]] = [
            self.check_settings,
            self.check_identity,
            self.check_region,
            self.check_sagemaker_api,
            self.check_bucket,
            self.check_datasets,
            self.check_processors,
            self.check_role,
            self.check_image,
            self.check_quota,
            self.check_estimate,
        ]
        return PreflightReport([check for step in steps for check in step()])

    def _guarded(self, name: str, probe: Callable[[], Check]) -> Check:
        """Run one probe; an AWS error becomes that check's FAIL instead of ending preflight."""
        try:
            return probe()
        except (ClientError, BotoCoreError) as error:
            return Check(name, Status.FAIL, _describe(error))

    def check_settings(self) -> Iterable[Check]:
        problems = self.settings.problems()
        if problems:
            yield Check("settings", Status.FAIL, "; ".join(problems))
        else:
            s = self.settings
            yield Check(
                "settings", Status.PASS, f"{s.instance_type} x {INSTANCE_COUNT}, {s.region}"
            )

    def check_identity(self) -> Iterable[Check]:
        def probe() -> Check:
            identity = self.clients.sts.get_caller_identity()
            self.account = identity["Account"]
            return Check("caller identity", Status.PASS, f"account {identity['Account']}")

        yield self._guarded("caller identity", probe)

    def check_region(self) -> Iterable[Check]:
        session = boto3.session.Session()
        regions = {
            region
            for partition in session.get_available_partitions()
            for region in session.get_available_regions("sagemaker", partition_name=partition)
        }
        if self.settings.region in regions:
            yield Check("region", Status.PASS, f"{self.settings.region} offers SageMaker")
        else:
            yield Check("region", Status.FAIL, f"{self.settings.region} has no SageMaker endpoint")

    def check_sagemaker_api(self) -> Iterable[Check]:
        def probe() -> Check:
            self.clients.sagemaker.list_training_jobs(MaxResults=1)
            return Check("sagemaker api", Status.PASS, "answers")

        yield self._guarded("sagemaker api", probe)

    def check_bucket(self) -> Iterable[Check]:
        bucket = self.settings.bucket

        def probe() -> Check:
            try:
                self.clients.s3.head_bucket(Bucket=bucket)
            except ClientError as error:
                if error_code(error) in {"404", "NoSuchBucket", "NotFound"}:
                    return Check("bucket", Status.FAIL, f"s3://{bucket} does not exist")
                raise
            location = self.clients.s3.get_bucket_location(Bucket=bucket)
            region = location.get("LocationConstraint") or "us-east-1"  # None means us-east-1
            if region != self.settings.region:
                return Check(
                    "bucket",
                    Status.FAIL,
                    f"s3://{bucket} is in {region}, the jobs run in {self.settings.region}: "
                    "SageMaker reads channels from its own region only",
                )
            self.bucket_ok = True
            return Check("bucket", Status.PASS, f"s3://{bucket} reachable, in {region}")

        yield self._guarded("bucket", probe)

    def _object_check(self, name: str, key: str, on_found: Callable[[dict, str], Check]) -> Check:
        bucket = self.settings.bucket
        full_key = self.settings.storage_key(key)
        uri = f"s3://{bucket}/{full_key}"
        if not self.bucket_ok:
            return Check(name, Status.FAIL, f"{uri}: not checked, the bucket is not usable")

        def probe() -> Check:
            try:
                head = self.clients.s3.head_object(Bucket=bucket, Key=full_key)
            except ClientError as error:
                if error_code(error) in {"404", "NoSuchKey", "NotFound"}:
                    return Check(name, Status.FAIL, f"{uri} is missing")
                raise
            return on_found(head, uri)

        return self._guarded(name, probe)

    def check_datasets(self) -> Iterable[Check]:
        minimum = self.settings.min_features_mb

        for symbol in self.symbols:
            name = f"data {symbol}"

            def found(head: dict, uri: str, name: str = name) -> Check:
                size = int(head["ContentLength"])
                metadata = {
                    "uri": uri,
                    "size_mb": round(size / MB, 3),
                    "last_modified": head["LastModified"].isoformat(),
                }
                if size < minimum * MB:
                    return Check(
                        name,
                        Status.FAIL,
                        f"{uri} is {size / MB:.3f} MB, below the {minimum:g} MB minimum: "
                        "a sample, not the dataset (min_features_mb / CRPBOT_MIN_FEATURES_MB)",
                        metadata,
                    )
                bucket, key = uri[len("s3://") :].split("/", 1)
                try:
                    metadata["rows"] = parquet_rows(self.clients.s3, bucket, key, size)
                except ValueError as error:
                    return Check(name, Status.FAIL, f"{uri}: {error}", metadata)
                detail = (
                    f"{uri}: {size / MB:.1f} MB, {metadata['rows']:,} rows, "
                    f"modified {metadata['last_modified']}"
                )
                return Check(name, Status.PASS, detail, metadata)

            yield self._object_check(name, features_key(symbol), found)

    def check_processors(self) -> Iterable[Check]:
        if not self.require_processors:
            return
        for symbol in self.symbols:
            name = f"processor {symbol}"
            yield self._object_check(
                name,
                processor_key(symbol),
                lambda head, uri, name=name: Check(name, Status.PASS, uri),
            )

    def check_role(self) -> Iterable[Check]:
        role_name = self.settings.role_name()
        if role_name is None:
            yield Check("role", Status.FAIL, "no valid role ARN (see settings)")
            return

        def probe() -> Check:
            try:
                role = self.clients.iam.get_role(RoleName=role_name)["Role"]
            except ClientError as error:
                if error_code(error) == "NoSuchEntity":
                    return Check("role", Status.FAIL, f"{self.settings.role_arn} does not exist")
                raise
            if self.account and self.settings.role_account() != self.account:
                return Check(
                    "role",
                    Status.FAIL,
                    f"{self.settings.role_arn} belongs to account {self.settings.role_account()}, "
                    f"the caller is {self.account}: SageMaker needs a role of the same account",
                )
            if not trusts_sagemaker(role.get("AssumeRolePolicyDocument", {})):
                return Check(
                    "role",
                    Status.FAIL,
                    f"{role_name} does not trust {SAGEMAKER_PRINCIPAL}: add it as a Service "
                    "principal allowed sts:AssumeRole in the role's trust policy",
                )
            return Check("role", Status.PASS, f"{role_name} exists, trusts {SAGEMAKER_PRINCIPAL}")

        yield self._guarded("role", probe)

    def check_image(self) -> Iterable[Check]:
        try:
            uri = training_image_uri(self.settings)
        except SettingsError as error:
            yield Check("image", Status.FAIL, str(error))
            return
        region = image_region(uri)
        if region is None:
            yield Check("image", Status.WARN, f"{uri}: not an ECR image, region not checked")
        elif region != self.settings.region:
            yield Check(
                "image",
                Status.FAIL,
                f"{uri} is in {region}, the jobs run in {self.settings.region}",
            )
        else:
            yield Check("image", Status.PASS, uri)

    def check_quota(self) -> Iterable[Check]:
        name = quota_name(self.settings.instance_type, self.settings.use_spot)
        try:
            found = find_training_quota(self.clients.service_quotas, name)
        except (ClientError, BotoCoreError) as error:
            yield Check("quota", Status.WARN, f"could not read '{name}': {_describe(error)}")
            return
        if found is None:
            yield Check("quota", Status.WARN, f"no Service Quotas entry named '{name}'")
            return
        value, source = found
        if value < INSTANCE_COUNT:
            yield Check(
                "quota",
                Status.FAIL,
                f"'{name}' is {value:g} ({source}): request an increase in Service Quotas "
                "before launching (the original run died on a g5 quota of 0)",
            )
        else:
            yield Check("quota", Status.PASS, f"'{name}' is {value:g} ({source})")

    def check_estimate(self) -> Iterable[Check]:
        s = self.settings
        price = instance_price(s.instance_type, s.price_per_hour_usd)
        hours = s.max_runtime_s / 3600
        per_job = price.cost_usd(s.max_runtime_s, INSTANCE_COUNT)
        if per_job is None:
            yield Check(
                "estimate",
                Status.WARN,
                f"≤ {hours:.1f} h per job; cost unknown: {price.source} "
                "(set price_per_hour_usd / CRPBOT_PRICE_PER_HOUR_USD)",
            )
            return
        jobs = len(self.symbols)
        yield Check(
            "estimate",
            Status.INFO,
            f"≤ {hours:.1f} h and ≤ ${per_job:.2f} per job (MaxRuntime x ${price.usd_per_hour}/h"
            f"{', less with spot' if s.use_spot else ''}); {jobs} job(s) ≤ ${per_job * jobs:.2f}; "
            f"price: {price.source}",
            {"max_hours_per_job": hours, "max_cost_usd_per_job": per_job},
        )


def run_preflight(
    settings: SageMakerSettings,
    *,
    symbols: Sequence[str] = SYMBOLS,
    clients: AwsClients | None = None,
    require_processors: bool = False,
) -> PreflightReport:
    """Every check for `symbols`; `require_processors` when the job is about to launch."""
    clients = clients or AwsClients(settings.region)
    return Preflight(settings, clients, symbols, require_processors).run()
