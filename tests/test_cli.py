"""The `crpbot` command: `sagemaker-request` prints without sending, `preflight` fails loudly."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from sagemaker_emulator import (
    BUCKET,
    QUOTA_NAME,
    ROLE_ARN,
    SageMakerEmulator,
    provision_account,
)

from crpbot_assets.cli import main
from crpbot_assets.profiles import get_profile
from v8_model.config import TrainConfig, to_hyperparameters

CONSOLE_SCRIPT = Path(sys.executable).with_name("crpbot")


def test_sagemaker_request_shows_the_seeds_job(tmp_path: Path) -> None:
    """Through the installed console script, as a user runs it; nothing is sent anywhere."""
    # No AWS settings at all; the seed's run is the full profile.
    env = {"PATH": str(CONSOLE_SCRIPT.parent), "HOME": str(tmp_path), "CRPBOT_PROFILE": "full"}
    done = subprocess.run(
        [str(CONSOLE_SCRIPT), "sagemaker-request", "BTC", "--role-arn", ROLE_ARN],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    request = json.loads(done.stdout)
    assert request["ResourceConfig"] == {
        "InstanceType": "ml.g5.4xlarge",
        "InstanceCount": 1,
        "VolumeSizeInGB": 100,
    }
    assert (
        ".dkr.ecr.us-east-2.amazonaws.com/pytorch-training:"
        in (request["AlgorithmSpecification"]["TrainingImage"])
    )
    (training,) = [c for c in request["InputDataConfig"] if c["ChannelName"] == "training"]
    assert training["ContentType"] == "application/x-parquet"
    # Only BTC's file is downloaded, not every symbol's under data/.
    assert (
        training["DataSource"]["S3DataSource"]["S3Uri"]
        == f"s3://{BUCKET}/data/BTC_features.parquet"
    )
    hyperparameters = request["HyperParameters"]
    assert {key: hyperparameters[key] for key in ("epochs", "batch-size", "learning-rate")} == {
        "epochs": "100",
        "batch-size": "256",
        "learning-rate": "0.001",
    }
    assert hyperparameters == {**to_hyperparameters(TrainConfig()), "symbols": "BTC"}
    assert request["OutputDataConfig"] == {"S3OutputPath": f"s3://{BUCKET}/v8-final/output/"}
    assert request["StoppingCondition"] == {"MaxRuntimeInSeconds": 7200}
    assert request["RoleArn"] == ROLE_ARN
    assert "in us-east-2 (region from default (the seed's bucket region)): not sent" in done.stderr


def test_sagemaker_request_takes_flags_and_environment(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setenv("CRPBOT_SAGEMAKER_ROLE_ARN", ROLE_ARN)
    monkeypatch.setenv("CRPBOT_BUCKET", "env-bucket")
    argv = ["sagemaker-request", "eth", "--region", "eu-west-1", "--instance-type", "ml.g5.xlarge"]
    assert main([*argv, "--spot"]) == 0
    request = json.loads(capsys.readouterr().out)
    assert request["RoleArn"] == ROLE_ARN
    assert request["OutputDataConfig"]["S3OutputPath"] == "s3://env-bucket/v8-final/output/"
    assert request["ResourceConfig"]["InstanceType"] == "ml.g5.xlarge"
    assert ".dkr.ecr.eu-west-1." in request["AlgorithmSpecification"]["TrainingImage"]
    assert request["HyperParameters"]["symbols"] == "ETH"
    assert request["EnableManagedSpotTraining"] is True


def test_sagemaker_request_shows_the_current_profiles_training(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """`CRPBOT_PROFILE=demo crpbot sagemaker-request BTC` shows what a demo run sends."""
    monkeypatch.setenv("CRPBOT_PROFILE", "demo")
    assert main(["sagemaker-request", "BTC", "--role-arn", ROLE_ARN]) == 0
    hyperparameters = json.loads(capsys.readouterr().out)["HyperParameters"]
    demo = get_profile("demo").train
    assert hyperparameters["epochs"] == str(demo.epochs) == "3"
    assert hyperparameters == {**to_hyperparameters(demo), "symbols": "BTC"}


@pytest.mark.parametrize(
    ("role", "words"),
    [(None, "role_arn is not set: pass --role-arn"), ("my-role", "is not an IAM role ARN")],
)
def test_sagemaker_request_without_a_valid_role_is_refused(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, role: str | None, words: str
) -> None:
    monkeypatch.delenv("CRPBOT_SAGEMAKER_ROLE_ARN", raising=False)
    argv = ["sagemaker-request", "BTC", *(["--role-arn", role] if role else [])]
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and words in captured.err


def test_unknown_symbol_is_a_usage_error(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["sagemaker-request", "DOGE", "--role-arn", ROLE_ARN])
    assert exited.value.code == 2
    assert "unknown symbol 'DOGE'" in capsys.readouterr().err


def test_preflight_on_an_empty_account_fails_naming_what_is_missing(
    emulator: SageMakerEmulator, capsys: pytest.CaptureFixture
) -> None:
    emulator.quotas = {QUOTA_NAME: 0}
    assert main(["preflight", "--role-arn", ROLE_ARN]) == 1
    out = capsys.readouterr().out
    assert out.splitlines()[0].split() == ["CHECK", "STATUS", "DETAIL"]
    assert "preflight FAILED: 6 of 15 checks" in out
    for missing in (
        f"bucket: s3://{BUCKET} does not exist",
        f"data BTC: s3://{BUCKET}/data/BTC_features.parquet: not checked",
        f"data SOL: s3://{BUCKET}/data/SOL_features.parquet: not checked",
        f"role: {ROLE_ARN} does not exist",
        f"quota: L-FE869B40 '{QUOTA_NAME}' is 0",
    ):
        assert f"  - {missing}" in out


def test_preflight_refuses_800_kb_samples(
    emulator: SageMakerEmulator, capsys: pytest.CaptureFixture
) -> None:
    samples = {f"data/{s}_features.parquet": b"0" * 800_000 for s in ("BTC", "ETH", "SOL")}
    provision_account(emulator, bucket=BUCKET, files=samples)
    emulator.quotas = {QUOTA_NAME: 1}
    assert main(["preflight", "--role-arn", ROLE_ARN]) == 1
    out = capsys.readouterr().out
    assert "preflight FAILED: 3 of 15 checks" in out
    for symbol in ("BTC", "ETH", "SOL"):
        assert (
            f"  - data {symbol}: s3://{BUCKET}/data/{symbol}_features.parquet: "
            "not a parquet file (no PAR1 footer)"
        ) in out


def run_console_script(*args: str) -> subprocess.CompletedProcess:
    """`crpbot ARGS` as a user runs it, in the test's environment (the endpoint, credentials)."""
    return subprocess.run(
        [str(CONSOLE_SCRIPT), *args], capture_output=True, text=True, timeout=300, check=False
    )


def table_rows(out: str) -> dict[str, tuple[str, str]]:
    """CHECK → (STATUS, DETAIL) from the printed table (the rows before the blank line)."""
    lines = out.split("\n\n")[0].splitlines()
    status_at = lines[0].index("STATUS")
    return {
        line[:status_at].strip(): (line[status_at:].split()[0], line[status_at + 8 :])
        for line in lines[1:]
    }


PREFLIGHT_ROWS = {
    "settings",
    "caller identity",
    "region",
    "sagemaker api",
    "bucket",
    "data BTC",
    "data ETH",
    "data SOL",
    "role",
    "role permissions",
    "caller permissions",
    "image",
    "quota",
    "warm pool quota",
    "estimate",
}


def test_preflight_against_moto_prints_every_row_when_the_simulator_answers_html(
    moto_server: str,
) -> None:
    """moto has no policy simulator: it answers an HTML 500 that botocore cannot parse. That is
    the permission rows' WARN, with the error's type; every other row is still printed."""
    done = run_console_script(
        "preflight", "--role-arn", "arn:aws:iam::123456789012:role/service-role/CrpbotTrainingRole"
    )
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    rows = table_rows(done.stdout)
    assert set(rows) == PREFLIGHT_ROWS
    for name in ("role permissions", "caller permissions"):
        status, detail = rows[name]
        assert status == "WARN"
        assert "not verified: the policy simulator gave no answer (ResponseParserError:" in detail
    assert rows["bucket"] == ("FAIL", "s3://crpbot-sagemaker-training does not exist")
    assert rows["caller identity"][0] == "PASS"
    assert "  - bucket: s3://crpbot-sagemaker-training does not exist" in done.stdout


def test_preflight_behind_a_proxy_answering_html_fails_every_aws_row_and_prints_them(
    html_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A corporate proxy's login page (HTML, 200) instead of AWS: each AWS check FAILs naming
    the parser error, none hides another, and the command ends with exit 1, not a traceback."""
    for name, value in {
        "AWS_ENDPOINT_URL": html_endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_CONFIG_FILE": "/dev/null",
        "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
    }.items():
        monkeypatch.setenv(name, value)
    done = run_console_script("preflight", "--role-arn", ROLE_ARN, "--symbols", "BTC")
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    rows = table_rows(done.stdout)
    assert set(rows) == PREFLIGHT_ROWS - {"data ETH", "data SOL"}
    for name in ("caller identity", "role"):
        status, detail = rows[name]
        assert status == "FAIL" and detail.startswith("ResponseParserError: "), rows[name]
    # S3's region look-up parses the body itself: the XML parser's own error, named as such.
    assert rows["bucket"] == ("FAIL", "ParseError: syntax error: line 1, column 0")
    # SageMaker's JSON protocol: botocore hands the HTML over as a message, not an error.
    assert rows["sagemaker api"] == (
        "FAIL",
        "the endpoint answered, but not as SageMaker does (no TrainingJobSummaries): a proxy "
        "or AWS_ENDPOINT_URL is in the way",
    )
    assert rows["data BTC"][0] == "FAIL" and "not checked" in rows["data BTC"][1]
    assert rows["quota"] == (
        "WARN",
        "could not read L-FE869B40 'ml.g5.4xlarge for training job usage': KeyError: 'Quota'",
    )
    assert rows["settings"][0] == "PASS" and rows["estimate"][0] == "INFO"
