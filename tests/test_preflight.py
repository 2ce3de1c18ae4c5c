"""Preflight against the local test server: every failure found and named, none hiding another."""

import boto3
import pytest
from botocore.stub import Stubber
from sagemaker_emulator import (
    BUCKET,
    QUOTA_NAME,
    REGION,
    ROLE_ARN,
    ROLE_NAME,
    SageMakerEmulator,
    provision_account,
    tiny_dataset,
)

from crpbot_assets.sagemaker.aws import AwsClients
from crpbot_assets.sagemaker.preflight import Preflight, Status, quota_name, run_preflight
from crpbot_assets.sagemaker.settings import SageMakerSettings

SAMPLE = b"timestamp,open,high,low,close,volume\n" + b"0" * 799_963  # 800 KB, like the original
SYMBOLS = ("BTC", "ETH", "SOL")


def statuses(report) -> dict[str, Status]:
    return {check.name: check.status for check in report.checks}


def detail(report, name: str) -> str:
    return next(check.detail for check in report.checks if check.name == name)


def real_files(symbols=SYMBOLS) -> dict[str, bytes]:
    # One real 10-day file serves every symbol: preflight reads sizes and parquet footers only.
    return {f"data/{symbol}_features.parquet": tiny_dataset("BTC") for symbol in symbols}


def test_ready_account_passes(emulator: SageMakerEmulator) -> None:
    provision_account(emulator, bucket=BUCKET, files=real_files())
    emulator.quotas = {QUOTA_NAME: 1}
    report = run_preflight(SageMakerSettings(role_arn=ROLE_ARN, min_features_mb=1.0))
    assert report.passed, report.table()
    assert statuses(report)["estimate"] is Status.INFO
    data = next(check for check in report.checks if check.name == "data ETH")
    assert data.metadata["rows"] == 14_200 and data.metadata["size_mb"] > 1
    assert "14,200 rows" in data.detail
    assert report.summary() == f"preflight passed ({len(report.checks)} checks)"


def test_empty_account_names_everything_missing(emulator: SageMakerEmulator) -> None:
    emulator.quotas = {QUOTA_NAME: 0}  # a new account's g5 training quota
    report = run_preflight(SageMakerSettings(role_arn=ROLE_ARN))
    failed = {check.name for check in report.failures}
    assert failed == {"bucket", "data BTC", "data ETH", "data SOL", "role", "quota"}
    assert detail(report, "bucket") == f"s3://{BUCKET} does not exist"
    assert "data/SOL_features.parquet: not checked" in detail(report, "data SOL")
    assert detail(report, "role") == f"{ROLE_ARN} does not exist"
    assert "is 0 (AWS default): request an increase" in detail(report, "quota")
    for passing in ("settings", "caller identity", "region", "sagemaker api", "image"):
        assert statuses(report)[passing] is Status.PASS
    summary = report.summary()
    assert summary.startswith("preflight FAILED: 6 of") and "  - role: " in summary


def test_sample_files_are_refused(emulator: SageMakerEmulator) -> None:
    files = {f"data/{symbol}_features.parquet": SAMPLE for symbol in SYMBOLS}
    provision_account(emulator, bucket=BUCKET, files=files)
    emulator.quotas = {QUOTA_NAME: 1}
    report = run_preflight(SageMakerSettings(role_arn=ROLE_ARN))
    assert {check.name for check in report.failures} == {"data BTC", "data ETH", "data SOL"}
    assert detail(report, "data BTC") == (
        f"s3://{BUCKET}/data/BTC_features.parquet is 0.800 MB, below the 100 MB minimum: "
        "a sample, not the dataset (min_features_mb / CRPBOT_MIN_FEATURES_MB)"
    )


def test_missing_one_file_and_a_non_parquet_file(emulator: SageMakerEmulator) -> None:
    files = {**real_files(("BTC",)), "data/ETH_features.parquet": b"\0" * 2_000_000}
    provision_account(emulator, bucket=BUCKET, files=files)
    emulator.quotas = {QUOTA_NAME: 1}
    report = run_preflight(SageMakerSettings(role_arn=ROLE_ARN, min_features_mb=1.0))
    assert statuses(report)["data BTC"] is Status.PASS
    assert "not a parquet file" in detail(report, "data ETH")
    assert detail(report, "data SOL") == f"s3://{BUCKET}/data/SOL_features.parquet is missing"
    assert "processor BTC" not in statuses(report)  # built by the graph before any launch
    settings = SageMakerSettings(role_arn=ROLE_ARN, min_features_mb=1.0)
    before_launch = run_preflight(settings, symbols=["BTC"], require_processors=True)
    assert [check.name for check in before_launch.failures] == ["processor BTC"]
    assert detail(before_launch, "processor BTC") == (
        f"s3://{BUCKET}/processors/processor_BTC_v8.json is missing"
    )


def test_role_must_trust_sagemaker_and_be_in_the_callers_account(
    emulator: SageMakerEmulator,
) -> None:
    statement = {"Effect": "Allow", "Action": "sts:AssumeRole"}
    ec2_only = {"Statement": [{**statement, "Principal": {"Service": "ec2.amazonaws.com"}}]}
    provision_account(emulator, bucket=BUCKET, files=real_files(), trust=ec2_only)
    report = run_preflight(SageMakerSettings(role_arn=ROLE_ARN, min_features_mb=1.0))
    assert "does not trust sagemaker.amazonaws.com" in detail(report, "role")
    other_account = f"arn:aws:iam::999999999999:role/{ROLE_NAME}"
    report = run_preflight(SageMakerSettings(role_arn=other_account, min_features_mb=1.0))
    assert "belongs to account 999999999999, the caller is 123456789012" in detail(report, "role")


def test_bucket_and_image_must_be_in_the_jobs_region(emulator: SageMakerEmulator) -> None:
    provision_account(emulator, bucket=BUCKET, files=real_files(), region="us-west-2")
    eu_image = "763104351884.dkr.ecr.eu-west-1.amazonaws.com/pytorch-training:2.8.0-gpu-py312"
    settings = SageMakerSettings(role_arn=ROLE_ARN, image_uri=eu_image, min_features_mb=1.0)
    report = run_preflight(settings, symbols=["BTC"])
    assert "is in us-west-2, the jobs run in us-east-2" in detail(report, "bucket")
    assert "data BTC" in {check.name for check in report.failures}  # not read across regions
    assert detail(report, "image") == f"{eu_image} is in eu-west-1, the jobs run in us-east-2"


def test_settings_and_credentials_failures(
    emulator: SageMakerEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    report = run_preflight(SageMakerSettings(role_arn="my-role"), symbols=["BTC"])
    assert "is not an IAM role ARN" in detail(report, "settings")
    assert detail(report, "role") == "no valid role ARN (see settings)"
    nowhere = SageMakerSettings(role_arn=ROLE_ARN, region="us-east-9")
    (region,) = Preflight(nowhere, AwsClients("us-east-9"), [], False).check_region()
    assert (region.status, region.detail) == (Status.FAIL, "us-east-9 has no SageMaker endpoint")
    for variable in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(variable)
    # No instance-metadata lookup: it would leave loopback, and wait for its timeouts.
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.delenv("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", raising=False)
    monkeypatch.delenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", raising=False)
    report = run_preflight(SageMakerSettings(role_arn=ROLE_ARN), symbols=["BTC"])
    assert "Unable to locate credentials" in detail(report, "caller identity")
    assert statuses(report)["caller identity"] is Status.FAIL


def quota_check(settings: SageMakerSettings, responses: list) -> list:
    """Preflight's quota check with Service Quotas stubbed (moto serves only VPC quotas)."""
    client = boto3.session.Session().client(
        "service-quotas", region_name=REGION, aws_access_key_id="x", aws_secret_access_key="x"
    )
    with Stubber(client) as stubber:
        for operation, response in responses:
            if isinstance(response, str):
                stubber.add_client_error(operation, response)
            else:
                stubber.add_response(operation, response, {"ServiceCode": "sagemaker"})
        clients = AwsClients(REGION, overrides={"service-quotas": client})
        checks = list(Preflight(settings, clients, ["BTC"], False).check_quota())
        stubber.assert_no_pending_responses()
    return checks


def quota(name: str, value: float) -> dict:
    return {"Quotas": [{"QuotaName": name, "Value": value, "ServiceCode": "sagemaker"}]}


def test_quota_from_service_quotas() -> None:
    on_demand = SageMakerSettings(role_arn=ROLE_ARN)
    (applied,) = quota_check(on_demand, [("list_service_quotas", quota(QUOTA_NAME, 4))])
    assert (applied.status, applied.detail) == (Status.PASS, f"'{QUOTA_NAME}' is 4 (applied)")

    spot = SageMakerSettings(role_arn=ROLE_ARN, use_spot=True)
    spot_name = quota_name("ml.g5.4xlarge", spot=True)
    assert spot_name == "ml.g5.4xlarge for spot training job usage"
    (zero,) = quota_check(
        spot,
        [
            ("list_service_quotas", quota(QUOTA_NAME, 4)),  # on-demand quota: not this one
            ("list_aws_default_service_quotas", quota(spot_name, 0)),
        ],
    )
    assert zero.status is Status.FAIL and "is 0 (AWS default)" in zero.detail

    (denied,) = quota_check(on_demand, [("list_service_quotas", "AccessDeniedException")])
    assert denied.status is Status.WARN and "AccessDeniedException" in denied.detail


def test_cost_estimate_names_its_price() -> None:
    settings = SageMakerSettings(role_arn=ROLE_ARN)
    (estimate,) = Preflight(settings, AwsClients(REGION), SYMBOLS, False).check_estimate()
    assert "≤ 2.0 h and ≤ $4.06 per job" in estimate.detail
    assert "3 job(s) ≤ $12.18" in estimate.detail and "as of 2025-11-16" in estimate.detail

    unknown = SageMakerSettings(role_arn=ROLE_ARN, instance_type="ml.p5.48xlarge")
    (estimate,) = Preflight(unknown, AwsClients(REGION), ["BTC"], False).check_estimate()
    assert estimate.status is Status.WARN and "not in the built-in price table" in estimate.detail

    priced = SageMakerSettings(role_arn=ROLE_ARN, price_per_hour_usd=1.5, max_runtime_s=3600)
    (estimate,) = Preflight(priced, AwsClients(REGION), ["BTC"], False).check_estimate()
    assert "≤ $1.50 per job" in estimate.detail and "user override" in estimate.detail
