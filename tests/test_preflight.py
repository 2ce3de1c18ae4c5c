"""Preflight against the local test server: every failure found and named, none hiding another."""

import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
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

from crpbot_assets.profiles import get_profile
from crpbot_assets.sagemaker.aws import AwsClients, new_session
from crpbot_assets.sagemaker.preflight import Preflight, Status, run_preflight
from crpbot_assets.sagemaker.quotas import Usage, quota_name
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
    report = run_preflight(SageMakerSettings(role_arn=ROLE_ARN, min_features_rows=1_000))
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
    # The simulator cannot answer for a role that does not exist: unverified, not wrong.
    assert statuses(report)["role permissions"] is Status.WARN
    assert "NoSuchEntity" in detail(report, "role permissions")
    assert detail(report, "bucket") == f"s3://{BUCKET} does not exist"
    assert "data/SOL_features.parquet: not checked" in detail(report, "data SOL")
    assert detail(report, "role") == f"{ROLE_ARN} does not exist"
    assert detail(report, "quota") == (
        "L-FE869B40 'ml.g5.4xlarge for training job usage' is 0 (AWS default), 1 needed: request "
        "an increase to 1 in Service Quotas (Amazon SageMaker, quota L-FE869B40), e.g. "
        "`aws service-quotas request-service-quota-increase --service-code sagemaker "
        "--quota-code L-FE869B40 --desired-value 1 --region us-east-2`"
    )
    for passing in (
        "settings",
        "caller identity",
        "region",
        "sagemaker api",
        "image",
        "caller permissions",
    ):
        assert statuses(report)[passing] is Status.PASS
    summary = report.summary()
    assert summary.startswith("preflight FAILED: 6 of") and "  - role: " in summary


def parquet_of(rows: int) -> bytes:
    """A parquet file of `rows` rows: preflight reads row counts from the footer only."""
    buffer = io.BytesIO()
    pq.write_table(pa.table({"close": np.zeros(rows, dtype=np.float32)}), buffer)
    return buffer.getvalue()


def test_sample_files_are_refused_by_rows(
    emulator: SageMakerEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CRPBOT_PROFILE", raising=False)
    files = {
        "data/BTC_features.parquet": SAMPLE,  # the original 800 KB CSV
        "data/ETH_features.parquet": parquet_of(800),  # a parquet sample
        "data/SOL_features.parquet": parquet_of(get_profile("full").min_rows - 1),
    }
    provision_account(emulator, bucket=BUCKET, files=files)
    emulator.quotas = {QUOTA_NAME: 1}
    report = run_preflight(SageMakerSettings(role_arn=ROLE_ARN))  # the demo profile's minimum
    assert {check.name for check in report.failures} == {"data BTC", "data ETH"}
    assert "not a parquet file" in detail(report, "data BTC")
    assert detail(report, "data ETH") == (
        f"s3://{BUCKET}/data/ETH_features.parquet has 800 rows, below the 38,880 minimum "
        "(profile demo: 30 days of minutes; CRPBOT_PROFILE / CRPBOT_MIN_FEATURES_ROWS): "
        "a sample, not the dataset"
    )
    monkeypatch.setenv("CRPBOT_PROFILE", "full")
    full = run_preflight(SageMakerSettings(role_arn=ROLE_ARN), symbols=["SOL"])
    assert "below the 473,040 minimum (profile full" in detail(full, "data SOL")


def test_demo_sized_features_pass_the_quick_start_path(
    emulator: SageMakerEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`make demo` writes about 39 MB per symbol (60 days): below the old 100 MB floor, which
    broke README's quick path to SageMaker. The floor now follows the run profile."""
    demo = get_profile("demo")
    rows = demo.days * 1440 - 2_000  # minus the warm-up rows the features drop
    files = {f"data/{symbol}_features.parquet": parquet_of(rows) for symbol in SYMBOLS}
    provision_account(emulator, bucket=BUCKET, files=files)
    emulator.quotas = {QUOTA_NAME: 1}
    monkeypatch.delenv("CRPBOT_PROFILE", raising=False)
    report = run_preflight(SageMakerSettings(role_arn=ROLE_ARN))
    assert report.passed, report.table()
    assert f"{rows:,} rows (minimum {demo.min_rows:,})" in detail(report, "data BTC")


def test_missing_one_file_and_a_non_parquet_file(emulator: SageMakerEmulator) -> None:
    files = {**real_files(("BTC",)), "data/ETH_features.parquet": b"\0" * 2_000_000}
    provision_account(emulator, bucket=BUCKET, files=files)
    emulator.quotas = {QUOTA_NAME: 1}
    report = run_preflight(SageMakerSettings(role_arn=ROLE_ARN, min_features_rows=1_000))
    assert statuses(report)["data BTC"] is Status.PASS
    assert "not a parquet file" in detail(report, "data ETH")
    assert detail(report, "data SOL") == f"s3://{BUCKET}/data/SOL_features.parquet is missing"
    assert "processor BTC" not in statuses(report)  # built by the graph before any launch
    settings = SageMakerSettings(role_arn=ROLE_ARN, min_features_rows=1_000)
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
    report = run_preflight(SageMakerSettings(role_arn=ROLE_ARN, min_features_rows=1_000))
    assert "does not trust sagemaker.amazonaws.com" in detail(report, "role")
    other_account = f"arn:aws:iam::999999999999:role/{ROLE_NAME}"
    report = run_preflight(SageMakerSettings(role_arn=other_account, min_features_rows=1_000))
    assert "belongs to account 999999999999, the caller is 123456789012" in detail(report, "role")


def test_bucket_and_image_must_be_in_the_jobs_region(emulator: SageMakerEmulator) -> None:
    provision_account(emulator, bucket=BUCKET, files=real_files(), region="us-west-2")
    eu_image = "763104351884.dkr.ecr.eu-west-1.amazonaws.com/pytorch-training:2.8.0-gpu-py312"
    settings = SageMakerSettings(role_arn=ROLE_ARN, image_uri=eu_image, min_features_rows=1_000)
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
    assert region.status is Status.FAIL
    assert region.detail.startswith(
        "us-east-9 from setting `region` (resource config): no SageMaker endpoint"
    )
    for variable in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(variable)
    # No instance-metadata lookup: it would leave loopback, and wait for its timeouts.
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.delenv("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", raising=False)
    monkeypatch.delenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", raising=False)
    report = run_preflight(SageMakerSettings(role_arn=ROLE_ARN), symbols=["BTC"])
    assert "Unable to locate credentials" in detail(report, "caller identity")
    assert statuses(report)["caller identity"] is Status.FAIL


def quota_check(settings: SageMakerSettings, responses: list, check: str = "check_quota") -> list:
    """A preflight quota check with Service Quotas stubbed: (operation, quota code, response)."""
    client = new_session().client(
        "service-quotas", region_name=REGION, aws_access_key_id="x", aws_secret_access_key="x"
    )
    with Stubber(client) as stubber:
        for operation, code, response in responses:
            params = {"ServiceCode": "sagemaker", "QuotaCode": code}
            if isinstance(response, str):
                stubber.add_client_error(operation, response, expected_params=params)
            else:
                stubber.add_response(operation, response, params)
        clients = AwsClients(REGION, overrides={"service-quotas": client})
        checks = list(getattr(Preflight(settings, clients, ["BTC"], False), check)())
        stubber.assert_no_pending_responses()
    return checks


def quota(code: str, name: str, value: float) -> dict:
    return {"Quota": {"QuotaCode": code, "QuotaName": name, "Value": value}}


def test_quota_is_matched_by_code() -> None:
    on_demand = SageMakerSettings(role_arn=ROLE_ARN)
    code = "L-FE869B40"
    (applied,) = quota_check(on_demand, [("get_service_quota", code, quota(code, QUOTA_NAME, 4))])
    assert (applied.status, applied.detail) == (
        Status.PASS,
        f"{code} '{QUOTA_NAME}' is 4 (applied)",
    )

    spot = SageMakerSettings(role_arn=ROLE_ARN, use_spot=True)
    spot_name = quota_name("ml.g5.4xlarge", Usage.SPOT_TRAINING)
    (zero,) = quota_check(
        spot,
        [
            ("get_service_quota", "L-DB4D51CF", "NoSuchResourceException"),  # never adjusted
            ("get_aws_default_service_quota", "L-DB4D51CF", quota("L-DB4D51CF", spot_name, 0)),
        ],
    )
    assert zero.status is Status.FAIL and "L-DB4D51CF" in zero.detail
    assert f"'{spot_name}' is 0 (AWS default), 1 needed" in zero.detail

    # A renamed quota is still found by its code; a code now naming another quota is flagged.
    renamed = quota(code, "ml.g5.4xlarge for training job usage (renamed)", 2)
    (moved,) = quota_check(on_demand, [("get_service_quota", code, renamed)])
    assert moved.status is Status.WARN and "the code table is out of date" in moved.detail

    (denied,) = quota_check(on_demand, [("get_service_quota", code, "AccessDeniedException")])
    assert denied.status is Status.WARN and "AccessDeniedException" in denied.detail

    unknown = SageMakerSettings(role_arn=ROLE_ARN, instance_type="ml.p5.48xlarge")
    (untabled,) = quota_check(unknown, [])
    assert untabled.status is Status.WARN
    assert "no quota code known for ml.p5.48xlarge" in untabled.detail


def test_warm_pool_quota_is_reported_never_blocking() -> None:
    settings = SageMakerSettings(role_arn=ROLE_ARN)
    code, name = "L-88E48241", quota_name("ml.g5.4xlarge", Usage.WARM_POOL)
    (zero,) = quota_check(
        settings,
        [
            ("get_service_quota", code, "NoSuchResourceException"),
            ("get_aws_default_service_quota", code, quota(code, name, 0)),
        ],
        check="check_warm_pool_quota",
    )
    assert zero.status is Status.WARN and "request an increase to 1" in zero.detail


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
