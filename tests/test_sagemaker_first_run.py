"""The first real SageMaker run must succeed: each known first-run failure (issue 11) closed,
tested against moto's server and the SageMaker emulator, with every request the code sends
validated against botocore's service model."""

from __future__ import annotations

import functools
import json
import logging
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import boto3
import dagster as dg
import pytest
from botocore.exceptions import ClientError
from botocore.stub import Stubber
from botocore.validate import validate_parameters
from sagemaker_emulator import (
    BUCKET,
    QUOTA_NAME,
    REGION,
    ROLE_ARN,
    WARM_POOL_QUOTA_NAME,
    SageMakerEmulator,
    emulated_trainer,
    materialize_model,
    provision_account,
    training_inputs,
)

from crpbot_assets import cli
from crpbot_assets.sagemaker import aws
from crpbot_assets.sagemaker.code_bundle import CodeBundle
from crpbot_assets.sagemaker.iam import (
    caller_statements,
    iam_action,
    job_role_statements,
    policy_document,
)
from crpbot_assets.sagemaker.pipes_client import LOG_GROUP, PipesSageMakerClient, SageMakerJobError
from crpbot_assets.sagemaker.pricing import instance_price
from crpbot_assets.sagemaker.request import build_training_job_request, training_image_uri
from crpbot_assets.sagemaker.settings import SageMakerSettings
from v8_model.config import TrainConfig, to_hyperparameters

REPO = Path(__file__).resolve().parents[1]
CALLER = "arn:aws:iam::123456789012:user/moto"  # moto's caller identity, as IAM names it
LONG_RUN = {"epochs": "1000", "patience": "1000"}


def ready_account(emulator: SageMakerEmulator, symbol: str = "BTC") -> None:
    provision_account(emulator, bucket=BUCKET, files=training_inputs(symbol))
    emulator.quotas = {QUOTA_NAME: 1, WARM_POOL_QUOTA_NAME: 0}


@functools.cache
def service_model(service: str) -> Any:
    """botocore's model of `service` (one client per service: the policy test validates hundreds
    of requests)."""
    return aws.new_session().client(service, region_name=REGION).meta.service_model


def validated(service: str, operation: str, params: dict) -> None:
    """botocore's own validation of a request against the service model, offline."""
    validate_parameters(params, service_model(service).operation_model(operation).input_shape)


def row(table: str, name: str) -> str:
    """The preflight table's line for check `name`."""
    (line,) = [line for line in table.splitlines() if re.match(rf"{name}\s+(PASS|WARN|FAIL)", line)]
    return line


# --- 1. region -------------------------------------------------------------------------------


def test_preflight_cli_names_region_source_iam_and_quotas(
    emulator: SageMakerEmulator, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    ready_account(emulator)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")  # the shell's default: not the job's
    monkeypatch.setenv("CRPBOT_MIN_FEATURES_ROWS", "1000")
    assert cli.main(["preflight", "--role-arn", ROLE_ARN, "--symbols", "BTC"]) == 0
    out = capsys.readouterr().out
    lines = {name: row(out, name) for name in ("role permissions", "caller permissions")}
    lines["warm pool quota"] = row(out, "warm pool quota")
    assert re.search(
        r"region\s+PASS\s+us-east-2 from default \(the seed's bucket region\), offers SageMaker "
        r"\(AWS_DEFAULT_REGION=eu-west-1 ignored: not the bucket's region\)",
        out,
    )
    assert "the training role may do all" in lines["role permissions"]
    assert f"the caller {CALLER} may do all" in lines["caller permissions"]
    assert "L-FE869B40 'ml.g5.4xlarge for training job usage' is 1 (AWS default)" in out
    assert "WARN" in lines["warm pool quota"] and "L-88E48241" in lines["warm pool quota"]

    assert cli.main(["sagemaker-request", "BTC", "--role-arn", ROLE_ARN]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["RoleArn"] == ROLE_ARN
    assert "in us-east-2 (region from default (the seed's bucket region))" in captured.err


def test_a_bucket_in_another_region_refuses_the_launch(emulator: SageMakerEmulator) -> None:
    provision_account(emulator, bucket=BUCKET, files=training_inputs("BTC"), region="us-west-2")
    emulator.quotas = {QUOTA_NAME: 1}
    result = materialize_model(emulated_trainer())
    assert not result.success and emulator.jobs == {}  # nothing launched, nothing billed
    texts = [
        e.step_failure_data.user_failure_data.description
        for e in result.all_events
        if e.is_step_failure and e.step_failure_data.user_failure_data
    ]
    assert any("is in us-west-2, the jobs run in us-east-2" in text for text in texts)


# --- 3. IAM ----------------------------------------------------------------------------------


def test_preflight_names_every_permission_the_role_or_caller_lacks(
    emulator: SageMakerEmulator,
) -> None:
    from crpbot_assets.sagemaker.preflight import Status, run_preflight

    ready_account(emulator)
    emulator.denied_actions = {
        ROLE_ARN: {"s3:DeleteObject", "cloudwatch:PutMetricData"},
        CALLER: {"iam:PassRole"},
    }
    settings = SageMakerSettings(role_arn=ROLE_ARN, min_features_rows=1_000)
    checks = {c.name: c for c in run_preflight(settings, symbols=["BTC"]).checks}
    role = checks["role permissions"]
    assert role.status is Status.FAIL
    assert "the training role lacks 2 permission(s)" in role.detail
    assert f"s3:DeleteObject on arn:aws:s3:::{BUCKET}/*" in role.detail
    assert "cloudwatch:PutMetricData on *" in role.detail
    caller = checks["caller permissions"]
    assert caller.status is Status.FAIL and f"iam:PassRole on {ROLE_ARN}" in caller.detail

    emulator.simulation_forbidden = True  # a caller without iam:SimulatePrincipalPolicy
    checks = {c.name: c for c in run_preflight(settings, symbols=["BTC"]).checks}
    for name in ("role permissions", "caller permissions"):
        assert checks[name].status is Status.WARN, name
        assert (
            "not verified: this caller may not iam:SimulatePrincipalPolicy" in checks[name].detail
        )


def test_the_policy_covers_every_call_and_every_request_is_valid(
    emulator: SageMakerEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One spot launch and its preflight, with every AWS call recorded: each needs an action of
    the documented caller policy, and each request passes botocore's validation."""
    monkeypatch.setattr("dagster._core.pipes.utils.WAIT_FOR_LOGS_AFTER_EXECUTION_INTERVAL", 1)
    ready_account(emulator)
    calls: list[tuple[str, str, dict]] = []
    make_client = aws.aws_client

    def recording_client(service: str, region: str, attempts: int) -> Any:
        client = make_client(service, region, attempts)
        name = client.meta.service_model.service_name

        def record(params: dict, model: Any, **kwargs: Any) -> None:
            calls.append((name, model.name, json.loads(json.dumps(params, default=str))))

        client.meta.events.register("provide-client-params.*.*", record)
        return client

    monkeypatch.setattr(aws, "aws_client", recording_client)
    trainer = emulated_trainer(use_spot=True)
    result = materialize_model(trainer)
    assert result.success

    allowed = {action for s in caller_statements(trainer) for action in s.actions}
    needed = {iam_action(service, operation) for service, operation, _ in calls} - {None}
    assert needed <= allowed, needed - allowed
    assert {"sagemaker:CreateTrainingJob", "s3:PutObject", "logs:GetLogEvents"} <= needed
    assert {"servicequotas:GetAWSDefaultServiceQuota", "iam:SimulatePrincipalPolicy"} <= needed
    for service, operation, params in calls:
        validated(service, operation, params)

    (create,) = [params for _, op, params in calls if op == "CreateTrainingJob"]
    job_name = create["TrainingJobName"]
    # 6. checkpoints under a prefix of this job only
    assert create["CheckpointConfig"]["S3Uri"].endswith(f"/checkpoints/BTC/{job_name}/")


def test_request_shapes_are_valid_for_every_setting_combination() -> None:
    for spot in (False, True):
        settings = SageMakerSettings(role_arn=ROLE_ARN, use_spot=spot, prefix="team")
        request = build_training_job_request(
            settings,
            symbol="SOL",
            job_name="crpbot-v8-sol-abcdef12-1700000000",
            image_uri=training_image_uri(settings),
            code_uri=CodeBundle(settings, files={"bootstrap.py": b""}).uri,
            hyperparameters=to_hyperparameters(TrainConfig(epochs=3, seed=1)),
            environment={"DAGSTER_PIPES_CONTEXT": "x" * 512},
            tags=[{"Key": "dagster/run-id", "Value": "r"}],
        )
        validated("sagemaker", "CreateTrainingJob", request)


def test_the_documented_policies_are_the_derived_ones() -> None:
    """docs/sagemaker.md shows exactly what iam.py derives (for the example account)."""
    text = (REPO / "docs" / "sagemaker.md").read_text()
    blocks = [json.loads(b) for b in re.findall(r"```json\n(.*?)\n```", text, flags=re.S)]
    settings = SageMakerSettings(role_arn="arn:aws:iam::123456789012:role/CrpbotSageMakerTraining")
    assert policy_document(job_role_statements(settings)) in blocks
    assert policy_document(caller_statements(settings)) in blocks


# --- 4. container arguments ------------------------------------------------------------------


def test_a_job_whose_command_ends_in_train_still_trains(emulator: SageMakerEmulator) -> None:
    ready_account(emulator)
    settings = SageMakerSettings(role_arn=ROLE_ARN)
    s3 = emulator.client("s3")
    request = build_training_job_request(
        settings,
        symbol="BTC",
        job_name="train-argument",
        image_uri=training_image_uri(settings),
        code_uri=CodeBundle(settings).upload(s3),
        hyperparameters=to_hyperparameters(TrainConfig(epochs=1)),
    )
    request["AlgorithmSpecification"]["ContainerArguments"] = ["train"]
    validated("sagemaker", "CreateTrainingJob", request)
    emulator.client("sagemaker").create_training_job(**request)
    status = emulator.wait_for_status("train-argument", {"Completed", "Failed"}, timeout_s=240)
    job = emulator.client("sagemaker").describe_training_job(TrainingJobName="train-argument")
    assert status == "Completed", job.get("FailureReason")


# --- 7. waiting ------------------------------------------------------------------------------


class ExpiringSageMaker:
    """The real (emulated) SageMaker client whose credentials expire once the job trains."""

    def __init__(self, client: Any, emulator: SageMakerEmulator) -> None:
        self.client, self.emulator = client, emulator

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)

    def describe_training_job(self, **kwargs: Any) -> dict:
        job = self.emulator.jobs.get(kwargs["TrainingJobName"])
        if job is not None and job.process is not None:
            raise ClientError(
                {"Error": {"Code": "ExpiredTokenException", "Message": "token expired"}},
                "DescribeTrainingJob",
            )
        return self.client.describe_training_job(**kwargs)


def test_an_error_while_waiting_stops_the_job(
    emulator: SageMakerEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("dagster._core.pipes.utils.WAIT_FOR_LOGS_AFTER_EXECUTION_INTERVAL", 1)
    ready_account(emulator)
    trainer = emulated_trainer()
    real_pipes_client = type(trainer).pipes_client

    def expiring(self: Any, clients: Any) -> PipesSageMakerClient:
        client = real_pipes_client(self, clients)
        client.sagemaker = ExpiringSageMaker(client.sagemaker, emulator)
        return client

    monkeypatch.setattr(type(trainer), "pipes_client", expiring)
    result = materialize_model(trainer, LONG_RUN)
    assert not result.success
    (name,) = emulator.jobs
    assert emulator.wait_for_status(name, {"Stopped"}, timeout_s=60) == "Stopped"  # not orphaned


def test_log_streams_opened_by_a_spot_restart_are_followed(moto_server: str) -> None:
    logs = boto3.client("logs", region_name=REGION)
    logs.create_log_group(logGroupName=LOG_GROUP)
    logs.create_log_stream(logGroupName=LOG_GROUP, logStreamName="job/algo-1-100")

    class Reader:
        def __init__(self) -> None:
            self.readers: list = []

        def add_log_reader(self, reader: Any) -> None:
            self.readers.append(reader)

    client = PipesSageMakerClient(
        bucket="b", sagemaker_client=None, s3_client=None, logs_client=logs
    )
    reader, forwarded = Reader(), set()
    context = dg.build_op_context()
    client._attach_log_streams(context, "job", reader, forwarded)
    logs.create_log_stream(logGroupName=LOG_GROUP, logStreamName="job/algo-1-200")  # restart
    logs.create_log_stream(logGroupName=LOG_GROUP, logStreamName="other-job/algo-1-1")
    client._attach_log_streams(context, "job", reader, forwarded)
    client._attach_log_streams(context, "job", reader, forwarded)
    assert [r.log_stream for r in reader.readers] == ["job/algo-1-100", "job/algo-1-200"]


def test_a_lost_create_response_adopts_the_job_only_when_it_is_ours() -> None:
    sagemaker = aws.new_session().client(
        "sagemaker", region_name=REGION, aws_access_key_id="x", aws_secret_access_key="x"
    )
    client = PipesSageMakerClient(
        bucket="b", sagemaker_client=sagemaker, s3_client=None, logs_client=None
    )
    settings = SageMakerSettings(role_arn=ROLE_ARN)
    params = build_training_job_request(
        settings,
        symbol="BTC",
        job_name="job",
        image_uri="i",
        code_uri="s3://b/code/",
        hyperparameters=to_hyperparameters(TrainConfig()),
        environment={"DAGSTER_PIPES_CONTEXT": "this-session"},
    )
    existing = {
        "TrainingJobName": "job",
        "TrainingJobArn": f"arn:aws:sagemaker:{REGION}:123456789012:training-job/job",
        "TrainingJobStatus": "InProgress",
        "SecondaryStatus": "Starting",
        "AlgorithmSpecification": {"TrainingInputMode": "File"},
        "ModelArtifacts": {"S3ModelArtifacts": ""},
        "ResourceConfig": params["ResourceConfig"],
        "StoppingCondition": params["StoppingCondition"],
        "CreationTime": "2026-01-01T00:00:00Z",
        "RoleArn": ROLE_ARN,
        "Environment": params["Environment"],
    }
    context = dg.build_op_context()
    with Stubber(sagemaker) as stubber:
        stubber.add_client_error("create_training_job", "ResourceInUse", "name in use")
        stubber.add_response("describe_training_job", existing, {"TrainingJobName": "job"})
        client._create(context, params, None, None)  # adopted: no error
        other = {**existing, "Environment": {"DAGSTER_PIPES_CONTEXT": "another-run"}}
        stubber.add_client_error("create_training_job", "ResourceInUse", "name in use")
        stubber.add_response("describe_training_job", other, {"TrainingJobName": "job"})
        with pytest.raises(SageMakerJobError, match="refused training job job: ResourceInUse"):
            client._create(context, params, None, None)
        stubber.assert_no_pending_responses()


# --- 8. price --------------------------------------------------------------------------------


def test_an_unpriced_instance_reports_cost_unknown_not_zero() -> None:
    price = instance_price("ml.p5.48xlarge")
    assert price.usd_per_hour is None and price.cost_usd(3600) is None
    client = PipesSageMakerClient(
        bucket="b",
        sagemaker_client=aws.new_session().client("sagemaker", region_name=REGION),
        s3_client=None,
        logs_client=None,
    )
    job = {
        "TrainingJobName": "job",
        "ResourceConfig": {"InstanceType": "ml.p5.48xlarge", "InstanceCount": 1},
        "TrainingTimeInSeconds": 100,
        "BillableTimeInSeconds": 100,
    }
    metadata = client.job_metadata(job, [], price, None)
    assert "cost_usd" not in metadata
    assert metadata["cost"].startswith("unknown: ml.p5.48xlarge is not in the built-in price")
    trainer = emulated_trainer(instance_type="ml.p5.48xlarge")
    from datetime import UTC, datetime

    described = {**job, "CreationTime": datetime(2026, 1, 1, tzinfo=UTC)}
    context = SimpleNamespace(run=SimpleNamespace(run_id="run"), log=logging.getLogger("test"))
    run_info = trainer._run_info(described, "BTC", {"HyperParameters": {}}, price, context)
    assert run_info.cost_usd is None
    assert json.loads(run_info.to_json())["cost_usd"] is None
