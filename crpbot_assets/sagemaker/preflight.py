"""Preflight: whether a SageMaker run can succeed, checked before a cent is spent.

The real `check_sagemaker_ready`: every check runs (one failure does not hide the next), each
yields PASS / WARN / FAIL / INFO with a detail naming what is missing and how to fix it. Used by
`crpbot preflight`, by the Dagster preflight check, and by `SageMakerTrainer` before every launch
(a failed preflight means no job and no cost).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from crpbot_assets.profiles import default_profile_name, get_profile
from crpbot_assets.sagemaker.aws import PREFLIGHT_ATTEMPTS, AwsClients, error_code, new_session
from crpbot_assets.sagemaker.iam import (
    SAGEMAKER_PRINCIPAL,
    Statement,
    caller_statements,
    iam_principal_arn,
    job_role_statements,
    simulate_denied,
    trusts_sagemaker,
)
from crpbot_assets.sagemaker.pricing import instance_price
from crpbot_assets.sagemaker.quotas import (
    SERVICE_CODE,
    Usage,
    quota_code,
    quota_name,
    read_quota,
)
from crpbot_assets.sagemaker.request import image_region, training_image_uri
from crpbot_assets.sagemaker.settings import (
    AMBIENT_REGION_VARS,
    INSTANCE_COUNT,
    SageMakerSettings,
    SettingsError,
    region_source,
)
from crpbot_assets.storage import features_key, processor_key
from v8_model.storage import parse_s3_uri
from v8_model.symbols import SYMBOLS

PARQUET_MAGIC = b"PAR1"
# IAM errors that mean "this caller may not ask", not "the answer is no".
NOT_ALLOWED_CODES = frozenset({"AccessDenied", "AccessDeniedException", "UnauthorizedOperation"})
MB = 1_000_000
# An error's message is shown up to this length: an HTML page from a proxy or a store that is not
# AWS (botocore quotes the body it could not parse) would otherwise fill the table.
MAX_ERROR_CHARS = 240


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


def _describe(error: Exception) -> str:
    """One line for the table: what went wrong and, for the AWS errors users meet, what to do."""
    if isinstance(error, NoCredentialsError):
        return (
            f"{error}: give this shell AWS credentials (aws configure / AWS_PROFILE / aws sso "
            "login, or an instance role)"
        )
    if isinstance(error, ClientError):
        message = error.response.get("Error", {}).get("Message", "")
        text = f"{error_code(error)}: {message}"
    elif isinstance(error, BotoCoreError):
        text = str(error)
    else:
        # Anything else (botocore's ResponseParserError for an HTML answer, a connection error,
        # a bug): its type says what kind of surprise it was, its message what was received.
        text = f"{type(error).__name__}: {error}"
    text = " ".join(text.split()).rstrip(": ")  # one table row, even for a quoted HTML page
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 1] + "…"


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


class Preflight:
    """Runs the checks for some symbols with some settings; see `run_preflight`."""

    def __init__(
        self,
        settings: SageMakerSettings,
        clients: AwsClients,
        symbols: Sequence[str],
        require_processors: bool,
        environ: Mapping[str, str] | None = None,
        region_from: str | None = None,
    ) -> None:
        self.settings = settings
        self.clients = clients
        self.symbols = list(symbols)
        self.require_processors = require_processors
        self.environ = dict(os.environ if environ is None else environ)
        self.region_from = region_from or region_source(settings.region, self.environ)
        self.account: str | None = None
        self.caller_arn: str | None = None
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
            self.check_role_permissions,
            self.check_caller_permissions,
            self.check_image,
            self.check_quota,
            self.check_warm_pool_quota,
            self.check_estimate,
        ]
        return PreflightReport([check for step in steps for check in self._rows(step)])

    @staticmethod
    def _rows(step: Callable[[], Iterable[Check]]) -> list[Check]:
        """A step's rows; an error that escapes the step becomes one more FAIL row named after it,
        so a preflight always prints its whole table (its job is to report every problem)."""
        rows: list[Check] = []
        try:
            rows.extend(step())
        except Exception as error:
            name = step.__name__.removeprefix("check_").replace("_", " ")
            rows.append(Check(name, Status.FAIL, f"check failed unexpectedly: {_describe(error)}"))
        return rows

    def _guarded(self, name: str, probe: Callable[[], Check]) -> Check:
        """Run one probe; any error (an AWS error, an answer that is not AWS's, a lost
        connection) becomes that check's FAIL instead of ending preflight."""
        try:
            return probe()
        except Exception as error:
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
            self.caller_arn = identity["Arn"]
            return Check("caller identity", Status.PASS, f"account {identity['Account']}")

        yield self._guarded("caller identity", probe)

    def check_region(self) -> Iterable[Check]:
        session = new_session()
        regions = {
            region
            for partition in session.get_available_partitions()
            for region in session.get_available_regions("sagemaker", partition_name=partition)
        }
        region = self.settings.region
        ignored = [
            f"{name}={self.environ[name]}"
            for name in AMBIENT_REGION_VARS
            if self.environ.get(name) and self.environ[name] != region
        ]
        note = f" ({', '.join(ignored)} ignored: not the bucket's region)" if ignored else ""
        source = f"{region} from {self.region_from}"
        metadata = {"region": region, "source": self.region_from}
        if region in regions:
            yield Check("region", Status.PASS, f"{source}, offers SageMaker{note}", metadata)
        else:
            yield Check("region", Status.FAIL, f"{source}: no SageMaker endpoint{note}", metadata)

    def check_sagemaker_api(self) -> Iterable[Check]:
        def probe() -> Check:
            answer = self.clients.sagemaker.list_training_jobs(MaxResults=1)
            # botocore passes a body that is not JSON (a proxy's HTML page) as {"message": ...}.
            if "TrainingJobSummaries" not in answer:
                return Check(
                    "sagemaker api",
                    Status.FAIL,
                    "the endpoint answered, but not as SageMaker does (no TrainingJobSummaries): "
                    "a proxy or AWS_ENDPOINT_URL is in the way",
                )
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

    def minimum_rows(self) -> tuple[int, str]:
        """Rows a features file needs, and where the figure comes from."""
        if self.settings.min_features_rows:
            return self.settings.min_features_rows, "min_features_rows"
        profile = get_profile(default_profile_name())
        return profile.min_rows, (
            f"profile {profile.name}: {profile.min_coverage_days:g} days of minutes; "
            "CRPBOT_PROFILE / CRPBOT_MIN_FEATURES_ROWS"
        )

    def check_datasets(self) -> Iterable[Check]:
        min_mb = self.settings.min_features_mb
        min_rows, rows_from = self.minimum_rows()

        for symbol in self.symbols:
            name = f"data {symbol}"

            def found(head: dict, uri: str, name: str = name) -> Check:
                size = int(head["ContentLength"])
                metadata = {
                    "uri": uri,
                    "size_mb": round(size / MB, 3),
                    "last_modified": head["LastModified"].isoformat(),
                }
                if size < min_mb * MB:
                    return Check(
                        name,
                        Status.FAIL,
                        f"{uri} is {size / MB:.3f} MB, below the {min_mb:g} MB minimum: "
                        "a sample, not the dataset (min_features_mb / CRPBOT_MIN_FEATURES_MB)",
                        metadata,
                    )
                bucket, key = parse_s3_uri(uri)
                try:
                    metadata["rows"] = parquet_rows(self.clients.s3, bucket, key, size)
                except ValueError as error:
                    return Check(name, Status.FAIL, f"{uri}: {error}", metadata)
                if metadata["rows"] < min_rows:
                    return Check(
                        name,
                        Status.FAIL,
                        f"{uri} has {metadata['rows']:,} rows, below the {min_rows:,} minimum "
                        f"({rows_from}): a sample, not the dataset",
                        metadata,
                    )
                detail = (
                    f"{uri}: {size / MB:.1f} MB, {metadata['rows']:,} rows "
                    f"(minimum {min_rows:,}), modified {metadata['last_modified']}"
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

    def _simulated(
        self, name: str, principal: str, statements: Sequence[Statement], who: str
    ) -> Check:
        """One policy-simulator check: PASS, FAIL naming the denied actions, or WARN when this
        caller may not run the simulator (the permissions are then unverified, not wrong)."""
        try:
            denied = simulate_denied(self.clients.iam, principal, statements)
        except ClientError as error:
            if error_code(error) in NOT_ALLOWED_CODES:
                return Check(
                    name,
                    Status.WARN,
                    f"not verified: this caller may not iam:SimulatePrincipalPolicy on "
                    f"{principal} ({_describe(error)}); compare {who}'s policy with "
                    "docs/sagemaker.md",
                )
            return Check(name, Status.WARN, f"not verified: {_describe(error)}")
        except Exception as error:
            # Advisory: an endpoint without a policy simulator (moto, an S3-compatible store
            # behind a proxy answering HTML) leaves the permissions unverified, not wrong.
            return Check(
                name,
                Status.WARN,
                f"not verified: the policy simulator gave no answer ({_describe(error)}); "
                f"compare {who}'s policy with docs/sagemaker.md",
            )
        if denied:
            return Check(
                name,
                Status.FAIL,
                f"{who} lacks {len(denied)} permission(s): {'; '.join(denied)} "
                "(the policy to attach is in docs/sagemaker.md)",
                {"denied": denied},
            )
        actions = sum(len(statement.actions) for statement in statements)
        return Check(name, Status.PASS, f"{who} may do all {actions} actions the run needs")

    def check_role_permissions(self) -> Iterable[Check]:
        name = "role permissions"
        if self.settings.role_name() is None:
            yield Check(name, Status.FAIL, "no valid role ARN (see settings)")
            return
        statements = job_role_statements(self.settings, self.account)
        yield self._simulated(name, self.settings.role_arn, statements, "the training role")

    def check_caller_permissions(self) -> Iterable[Check]:
        name = "caller permissions"
        if self.caller_arn is None:
            yield Check(name, Status.FAIL, "not checked: no caller identity (see above)")
            return
        principal = iam_principal_arn(self.caller_arn)
        if principal is None:
            yield Check(
                name,
                Status.WARN,
                f"{self.caller_arn} is the account root: it may do everything, including "
                "iam:PassRole; use an IAM user or role for training",
            )
            return
        if self.settings.role_name() is None:
            yield Check(name, Status.FAIL, "not checked: no valid role ARN (see settings)")
            return
        statements = caller_statements(self.settings, self.account)
        yield self._simulated(name, principal, statements, f"the caller {principal}")

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

    def _quota(self, name: str, usage: Usage, needed: int, unmet: Status) -> Check:
        instance_type = self.settings.instance_type
        expected = quota_name(instance_type, usage)
        code = quota_code(instance_type, usage)
        if code is None:
            return Check(
                name,
                Status.WARN,
                f"not checked: no quota code known for {instance_type}; look up '{expected}' "
                "in Service Quotas (Amazon SageMaker)",
            )
        try:
            quota = read_quota(self.clients.service_quotas, code)
        except Exception as error:  # advisory reading: a surprise leaves the quota unread
            return Check(
                name, Status.WARN, f"could not read {code} '{expected}': {_describe(error)}"
            )
        metadata = {"quota_code": code, "value": quota.value, "source": quota.source}
        label = f"{code} '{quota.name or expected}'"
        if quota.name and quota.name != expected:
            return Check(
                name,
                Status.WARN,
                f"{code} is '{quota.name}', expected '{expected}': the code table is out of date",
                metadata,
            )
        if quota.value < needed:
            return Check(
                name,
                unmet,
                f"{label} is {quota.value:g} ({quota.source}), {needed} needed: request an "
                f"increase to {needed} in Service Quotas (Amazon SageMaker, quota {code}), e.g. "
                f"`aws service-quotas request-service-quota-increase --service-code "
                f"{SERVICE_CODE} --quota-code {code} --desired-value {needed} "
                f"--region {self.settings.region}`",
                metadata,
            )
        return Check(name, Status.PASS, f"{label} is {quota.value:g} ({quota.source})", metadata)

    def check_quota(self) -> Iterable[Check]:
        usage = Usage.SPOT_TRAINING if self.settings.use_spot else Usage.TRAINING
        # The original run died on a g5 training quota of 0: no job can start without it.
        yield self._quota("quota", usage, INSTANCE_COUNT, Status.FAIL)

    def check_warm_pool_quota(self) -> Iterable[Check]:
        # Only jobs that keep their instance warm (keep_alive_seconds) use it, and SageMaker
        # refuses such a job without it (new accounts have 0): then it is a failure; otherwise
        # worth requesting with the training quota, never a reason to refuse a launch.
        unmet = Status.FAIL if self.settings.keep_alive_seconds else Status.WARN
        yield self._quota("warm pool quota", Usage.WARM_POOL, INSTANCE_COUNT, unmet)

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
    region_from: str | None = None,
) -> PreflightReport:
    """Every check for `symbols`; `require_processors` when the job is about to launch;
    `region_from` says where the region setting came from (default: worked out from the env)."""
    clients = clients or AwsClients(settings.region, attempts=PREFLIGHT_ATTEMPTS)
    return Preflight(settings, clients, symbols, require_processors, region_from=region_from).run()
