"""The SageMaker path's parts: settings, request, source bundle, bootstrap, archive checks,
botocore's retries on throttling, log forwarding, and the Pipes client used directly as a
resource."""

import contextlib
import io
import json
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import dagster as dg
import pytest
from botocore.stub import Stubber
from conftest import QuietHandler, serve_http
from sagemaker_emulator import (
    BUCKET,
    REGION,
    ROLE_ARN,
    SageMakerEmulator,
    provision_account,
    tiny_processor,
)

from crpbot_assets.profiles import get_profile
from crpbot_assets.sagemaker import container_bootstrap
from crpbot_assets.sagemaker.artifacts import ArtifactError, extract_verified
from crpbot_assets.sagemaker.aws import TRAINING_ATTEMPTS, aws_client, new_session
from crpbot_assets.sagemaker.code_bundle import MANIFEST_NAME, CodeBundle, bundle_files
from crpbot_assets.sagemaker.pipes_client import (
    LOG_GROUP,
    CloudWatchLogForwarder,
    PipesSageMakerClient,
)
from crpbot_assets.sagemaker.pricing import instance_price
from crpbot_assets.sagemaker.request import (
    METRIC_DEFINITIONS,
    PARQUET_CONTENT_TYPE,
    build_training_job_request,
    image_region,
    training_image_uri,
)
from crpbot_assets.sagemaker.settings import (
    SageMakerSettings,
    SettingsError,
    region_source,
    settings_from_env,
)
from v8_model.config import TrainConfig, to_hyperparameters
from v8_model.evaluation.metrics import EpochStats
from v8_model.layout import METRICS_FILE, SUMMARY_FILE
from v8_model.model.net import V8TradingNet, save_model

REPO = Path(__file__).resolve().parents[1]


def request_for(settings: SageMakerSettings, code_uri: str = "s3://b/code/", **kwargs) -> dict:
    kwargs.setdefault("hyperparameters", to_hyperparameters(TrainConfig()))
    return build_training_job_request(
        settings,
        symbol="ETH",
        job_name="job",
        image_uri=training_image_uri(settings),
        code_uri=code_uri,
        **kwargs,
    )


# --- settings ---------------------------------------------------------------------------------


def test_defaults_are_the_seeds_and_only_the_role_is_missing() -> None:
    settings = SageMakerSettings()
    assert (settings.instance_type, settings.region, settings.volume_size_gb) == (
        "ml.g5.4xlarge",
        "us-east-2",
        100,
    )
    assert settings.max_runtime_s == 7200
    seed_run = to_hyperparameters(get_profile("full").train)  # what a full-profile job sends
    assert {key: seed_run[key] for key in ("epochs", "batch-size", "learning-rate")} == {
        "epochs": "100",
        "batch-size": "256",
        "learning-rate": "0.001",
    }
    assert settings.output_uri() == "s3://crpbot-sagemaker-training/v8-final/output/"
    problems = settings.problems()
    assert len(problems) == 1 and "role_arn is not set" in problems[0]


@pytest.mark.parametrize(
    "arn",
    [
        "arn:aws:iam::123456789012:role/SageMaker",
        "arn:aws:iam::123456789012:role/service-role/AmazonSageMaker-ExecutionRole-2025",
        "arn:aws-cn:iam::123456789012:role/x.y@z",
    ],
)
def test_role_arn_accepted(arn: str) -> None:
    SageMakerSettings(role_arn=arn).validate_for_launch()


@pytest.mark.parametrize(
    "arn",
    [
        "SageMakerRole",
        "arn:aws:iam::12345:role/short-account",
        "arn:aws:iam::123456789012:user/not-a-role",
        "arn:aws:s3:::bucket",
        "arn:aws:iam::123456789012:role/Name/",
    ],
)
def test_role_arn_refused_with_the_expected_shape(arn: str) -> None:
    with pytest.raises(SettingsError, match="is not an IAM role ARN; expected arn:aws:iam::"):
        SageMakerSettings(role_arn=arn).validate_for_launch()


@pytest.mark.parametrize("arn", [f"{ROLE_ARN}\n", f" {ROLE_ARN}", f"{ROLE_ARN}\t"])
def test_role_arn_with_whitespace_is_refused_naming_the_setting(arn: str) -> None:
    """A pasted ARN with its newline used to pass (`$` matches before a final newline)."""
    settings = SageMakerSettings(role_arn=arn)
    with pytest.raises(SettingsError, match="leading or trailing whitespace") as raised:
        settings.validate_for_launch()
    assert "CRPBOT_SAGEMAKER_ROLE_ARN" in str(raised.value)
    assert settings.role_name() is None and settings.role_account() is None


def test_every_problem_is_listed_at_once() -> None:
    settings = SageMakerSettings(
        role_arn=ROLE_ARN,
        bucket="Bad_Bucket",
        region="mars",
        instance_type="g5.4xlarge",
        use_spot=True,
        max_wait_s=60,
    )
    with pytest.raises(SettingsError) as raised:
        settings.validate_for_launch()
    for words in ("bucket", "region", "instance_type", "MaxWaitTimeInSeconds"):
        assert words in str(raised.value)


def test_flags_beat_environment_beats_defaults() -> None:
    environ = {
        "CRPBOT_SAGEMAKER_ROLE_ARN": ROLE_ARN,
        "CRPBOT_BUCKET": "env-bucket",
        "CRPBOT_REGION": "eu-west-1",
        "CRPBOT_SAGEMAKER_SPOT": "true",
    }
    values = settings_from_env(environ, {"bucket": "flag-bucket", "instance_type": None})
    settings = SageMakerSettings(**values)
    assert (settings.bucket, settings.region, settings.use_spot) == (
        "flag-bucket",
        "eu-west-1",
        True,
    )
    assert settings.instance_type == "ml.g5.4xlarge"


def test_region_has_one_order_and_ignores_the_shells_default() -> None:
    """flag / resource config → CRPBOT_REGION → us-east-2; AWS_REGION / AWS_DEFAULT_REGION
    (the AWS CLI's ambient default) used to move jobs away from the bucket silently."""
    ambient = {"AWS_REGION": "us-west-2", "AWS_DEFAULT_REGION": "eu-west-1"}
    settings = SageMakerSettings(**settings_from_env(ambient))
    assert settings.region == "us-east-2"
    assert region_source(settings.region, ambient) == "default (the seed's bucket region)"
    chosen = {**ambient, "CRPBOT_REGION": "eu-west-1"}
    settings = SageMakerSettings(**settings_from_env(chosen))
    assert (settings.region, region_source(settings.region, chosen)) == (
        "eu-west-1",
        "CRPBOT_REGION",
    )
    flagged = SageMakerSettings(**settings_from_env(chosen, {"region": "ap-south-1"}))
    assert flagged.region == "ap-south-1"
    assert region_source(flagged.region, chosen, flag="ap-south-1") == "--region flag"
    assert region_source("ap-south-1", {}) == "setting `region` (resource config)"


# --- request ----------------------------------------------------------------------------------


def test_request_trains_one_symbol_from_the_seed_layout() -> None:
    settings = SageMakerSettings(role_arn=ROLE_ARN, prefix="team")
    rendered = to_hyperparameters(TrainConfig(epochs=3, seed=1))
    request = request_for(settings, hyperparameters=rendered)
    assert request["HyperParameters"] == {**rendered, "symbols": "ETH"}
    assert {key: request["HyperParameters"][key] for key in ("epochs", "seed", "batch-size")} == {
        "epochs": "3",  # the run's values
        "seed": "1",
        "batch-size": "256",
    }
    channels = {c["ChannelName"]: c for c in request["InputDataConfig"]}
    training = channels["training"]
    assert training["ContentType"] == PARQUET_CONTENT_TYPE
    root = "s3://crpbot-sagemaker-training/team"
    # Only this symbol's file: the prefix data/ would pull every symbol into the job.
    assert training["DataSource"]["S3DataSource"]["S3Uri"] == f"{root}/data/ETH_features.parquet"
    processor_uri = channels["processor"]["DataSource"]["S3DataSource"]["S3Uri"]
    assert processor_uri == f"{root}/processors/processor_ETH_v8.json"
    assert request["AlgorithmSpecification"]["ContainerEntrypoint"] == [
        "python",
        "/opt/ml/input/data/code/bootstrap.py",
    ]
    assert "EnableManagedSpotTraining" not in request


def test_spot_adds_max_wait_and_checkpoints() -> None:
    request = request_for(SageMakerSettings(role_arn=ROLE_ARN, use_spot=True))
    assert request["EnableManagedSpotTraining"] is True
    assert request["StoppingCondition"] == {
        "MaxRuntimeInSeconds": 7200,
        "MaxWaitTimeInSeconds": 14400,
    }
    # Per job: a spot restart of this job resumes; no later job finds a stale checkpoint.
    assert request["CheckpointConfig"] == {
        "S3Uri": "s3://crpbot-sagemaker-training/v8-final/checkpoints/ETH/job/",
        "LocalPath": "/opt/ml/checkpoints",
    }
    other = build_training_job_request(
        SageMakerSettings(role_arn=ROLE_ARN, use_spot=True),
        symbol="ETH",
        job_name="next-job",
        image_uri="i",
        code_uri="s3://b/code/",
        hyperparameters=to_hyperparameters(TrainConfig()),
    )
    assert other["CheckpointConfig"]["S3Uri"].endswith("/checkpoints/ETH/next-job/")
    assert request["Environment"]["CRPBOT_CHECKPOINT_DIR"] == "/opt/ml/checkpoints"


def test_image_from_the_sdk_for_the_region_or_the_override() -> None:
    looked_up = training_image_uri(SageMakerSettings(region="eu-west-1"))
    assert image_region(looked_up) == "eu-west-1" and "pytorch-training" in looked_up
    assert "gpu" in looked_up
    override = "123456789012.dkr.ecr.us-east-2.amazonaws.com/mine:1"
    assert training_image_uri(SageMakerSettings(image_uri=override)) == override
    assert image_region("docker.io/library/python:3.12") is None


def test_metric_definitions_match_the_entry_points_lines() -> None:
    import re

    line = f"symbol=BTC {EpochStats(3, 0.5, 0.25, 0.75, 1e-3).line()} test_accuracy=0.5"
    found = {m["Name"]: re.search(m["Regex"], line).group(1) for m in METRIC_DEFINITIONS}
    assert found == {
        "train:loss": "0.5000",
        "validation:loss": "0.2500",
        "validation:accuracy": "0.7500",
        "test:accuracy": "0.5",
    }


# --- source bundle and bootstrap --------------------------------------------------------------


def test_bundle_ships_the_projects_own_source(
    moto_server: str, s3_bucket: str, tmp_path: Path
) -> None:
    files = bundle_files()
    assert files["bootstrap.py"] == Path(container_bootstrap.__file__).read_bytes()
    assert "src/v8_model/job/entrypoint.py" in files and "src/v8_model/job/train.py" in files
    assert "src/dagster_pipes/__init__.py" in files
    assert not any("__pycache__" in name for name in files)
    bundle = CodeBundle(SageMakerSettings(bucket=s3_bucket), files)
    s3 = boto3.client("s3")
    assert bundle.upload(s3) == bundle.uri == CodeBundle(SageMakerSettings(bucket=s3_bucket)).uri
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=s3_bucket)["Contents"]}
    assert keys == {bundle.key_prefix + name for name in [*files, MANIFEST_NAME]}
    s3.delete_object(Bucket=s3_bucket, Key=bundle.key_prefix + "bootstrap.py")
    bundle.upload(s3)  # the manifest says it is there: identical source is not uploaded again
    assert bundle.key_prefix + "bootstrap.py" not in {
        o["Key"] for o in s3.list_objects_v2(Bucket=s3_bucket)["Contents"]
    }


def test_bootstrap_exports_channels_like_the_toolkit(tmp_path: Path) -> None:
    for channel in ("training", "processor", "code"):
        (tmp_path / "input" / "data" / channel).mkdir(parents=True)
    env = container_bootstrap.container_env(tmp_path, tmp_path / "code", {"PYTHONPATH": "/x"})
    assert env["SM_CHANNEL_PROCESSOR"] == str(tmp_path / "input" / "data" / "processor")
    assert json.loads(env["SM_CHANNELS"]) == ["code", "processor", "training"]
    assert env["SM_MODEL_DIR"] == str(tmp_path / "model")
    assert env["PYTHONPATH"] == f"{tmp_path / 'code' / 'src'}:/x"


def bundled_code_dir(tmp_path: Path, requirements: str | None = None) -> Path:
    """The code channel as the job sees it (bootstrap.py + src/), from the real bundle."""
    code_dir = tmp_path / "code"
    for name, content in bundle_files().items():
        path = code_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    if requirements is not None:
        (code_dir / container_bootstrap.REQUIREMENTS_PATH).write_text(requirements)
    return code_dir


def test_bootstrap_failure_becomes_the_failure_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An image without a package and without internet: the job fails fast, saying so."""
    code_dir = bundled_code_dir(tmp_path, "no-such-package-x==1.0\nnumpy==0.0.1\n")
    commands = []

    def no_network(command, **kwargs):
        commands.append(command)
        return container_bootstrap.subprocess.CompletedProcess(command, 1)

    monkeypatch.setattr(container_bootstrap.subprocess, "run", no_network)
    assert container_bootstrap.install_requirements(tmp_path, code_dir) == 1
    reason = (tmp_path / "output" / "failure").read_text()
    assert reason.startswith(
        "bootstrap: pip install no-such-package-x==1.0 numpy==0.0.1 failed (exit 1)"
    )
    assert "network isolation" in reason
    (command,) = commands  # one pip call, bounded: one retry, 15 s timeout
    assert command[-2:] == ["-r", str(code_dir / container_bootstrap.REQUIREMENTS_PATH)]
    assert command[command.index("--retries") + 1] == "1"
    assert command[command.index("--timeout") + 1] == "15"


def test_bootstrap_installs_nothing_when_the_image_has_the_pins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code_dir = bundled_code_dir(tmp_path)  # the shipped pins: this environment's versions
    monkeypatch.setattr(container_bootstrap.subprocess, "run", pytest.fail)
    assert container_bootstrap.install_requirements(tmp_path, code_dir) is None


def test_bootstrap_drops_the_train_argument(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SageMaker appends `train` to some entry commands; argparse would refuse it."""
    assert container_bootstrap.entry_arguments(["train", "--epochs", "1"]) == ["--epochs", "1"]
    assert container_bootstrap.entry_arguments(["--epochs", "1"]) == ["--epochs", "1"]
    assert container_bootstrap.entry_arguments([]) == []
    executed = []
    monkeypatch.setenv("SM_BASE_DIR", str(tmp_path))
    monkeypatch.setattr(container_bootstrap, "install_requirements", lambda base, code: None)
    monkeypatch.setattr(container_bootstrap.os, "execve", lambda *args: executed.append(args))
    container_bootstrap.main(["train", "--symbols", "BTC"])
    ((_, command, _),) = executed
    assert command[1:] == ["-m", "v8_model.job.train", "--symbols", "BTC"]


def test_every_third_party_import_of_the_job_is_declared() -> None:
    """scipy was imported by the features code but missing from the bootstrap's list: every
    third-party import of the modules the job loads must be pinned (torch: the image's)."""
    import ast
    import importlib.metadata
    import subprocess
    import sys

    loaded = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, v8_model.job.train, v8_model.job.entrypoint, v8_model.job.pipes; "
            "print('\\n'.join(m for m in sys.modules if m.startswith('v8_model')))",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout.split()
    imported: set[str] = set()
    for module in loaded:
        path = REPO / (module.replace(".", "/") + ".py")
        if not path.is_file():
            path = REPO / module.replace(".", "/") / "__init__.py"
        for node in ast.walk(ast.parse(path.read_text())):  # function-level imports too
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.split(".")[0])
    distributions = importlib.metadata.packages_distributions()
    third_party = {
        dist
        for name in imported - set(sys.stdlib_module_names) - {"v8_model", "dagster_pipes"}
        for dist in distributions.get(name, [name])
    }
    from v8_model.job.requirements import read_requirements

    # The check sees lazy imports (boto3 inside a function) and the features code's scipy.
    assert {"scipy", "boto3", "scikit-learn"} <= third_party
    assert third_party - {"torch"} <= set(read_requirements()), third_party


def test_entry_point_checks_its_environment_first(monkeypatch: pytest.MonkeyPatch) -> None:
    from v8_model.job import requirements as job_requirements
    from v8_model.job.requirements import JobEnvironmentError, check_torch

    check_torch("2.8.0")
    check_torch("2.13.0+cpu")
    with pytest.raises(JobEnvironmentError, match="torch 2.5.1 is older than .* 2.8.0"):
        check_torch("2.5.1")
    with pytest.raises(JobEnvironmentError, match="torch is not installed"):
        check_torch(None)
    real = job_requirements.installed_version
    monkeypatch.setattr(
        job_requirements, "installed_version", lambda name: None if name == "scipy" else real(name)
    )
    with pytest.raises(JobEnvironmentError, match="lacks scipy .declared in requirements.txt"):
        job_requirements.check_job_environment()


def test_image_version_default_satisfies_the_minimum_torch() -> None:
    from v8_model.job.requirements import MIN_TORCH_VERSION, version_tuple

    settings = SageMakerSettings(role_arn=ROLE_ARN)
    assert version_tuple(settings.framework_version) >= version_tuple(MIN_TORCH_VERSION)
    assert "pytorch-training:2.8.0-gpu-py312" in training_image_uri(settings)
    old = SageMakerSettings(role_arn=ROLE_ARN, framework_version="2.5.1")
    with pytest.raises(SettingsError, match="framework_version '2.5.1' is below"):
        old.validate_for_launch()
    env = settings_from_env({"CRPBOT_SAGEMAKER_FRAMEWORK_VERSION": "2.9.0"})
    assert SageMakerSettings(**env).framework_version == "2.9.0"


# --- model archive ----------------------------------------------------------------------------


def write_archive(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def model_members(tmp_path: Path) -> dict[str, bytes]:
    save_model(V8TradingNet(), tmp_path / "saved")
    return {
        "BTC/weights.npz": (tmp_path / "saved" / "weights.npz").read_bytes(),
        "BTC/config.json": (tmp_path / "saved" / "config.json").read_bytes(),
        "BTC/processor_BTC_v8.json": tiny_processor("BTC"),
        f"BTC/{METRICS_FILE}": b"{}",
        SUMMARY_FILE: json.dumps({"models": {"BTC": {}}}).encode(),
    }


def test_archive_with_every_file_is_extracted(tmp_path: Path) -> None:
    archive = write_archive(tmp_path / "model.tar.gz", model_members(tmp_path))
    symbol_dir = extract_verified(archive, "BTC", tmp_path / "out")
    assert sorted(p.name for p in symbol_dir.iterdir()) == [
        "config.json",
        "metrics.json",
        "processor_BTC_v8.json",
        "weights.npz",
    ]


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({f"BTC/{METRICS_FILE}": None}, "lacks BTC/metrics.json"),
        ({"BTC/weights.npz": b"not an npz"}, "unusable files"),
        ({"../escape.txt": b"x"}, "is corrupt"),
        ({SUMMARY_FILE: b'{"models": {}}'}, "has no model for BTC"),
    ],
)
def test_incomplete_or_unsafe_archives_are_refused(
    tmp_path: Path, change: dict, words: str
) -> None:
    members = {**model_members(tmp_path), **change}
    members = {name: data for name, data in members.items() if data is not None}
    archive = write_archive(tmp_path / "model.tar.gz", members)
    with pytest.raises(ArtifactError, match=words):
        extract_verified(archive, "BTC", tmp_path / "out")
    assert not (tmp_path / "escape.txt").exists()


# --- throttling -------------------------------------------------------------------------------


def stubbed_sagemaker() -> tuple[object, Stubber]:
    client = new_session().client(
        "sagemaker", region_name=REGION, aws_access_key_id="x", aws_secret_access_key="x"
    )
    return client, Stubber(client)


def describe(status: str, secondary: str) -> dict:
    return {
        "TrainingJobName": "job",
        "TrainingJobArn": f"arn:aws:sagemaker:{REGION}:123456789012:training-job/job",
        "TrainingJobStatus": status,
        "SecondaryStatus": secondary,
        "AlgorithmSpecification": {"TrainingInputMode": "File"},
        "ModelArtifacts": {"S3ModelArtifacts": "s3://b/job/output/model.tar.gz"},
        "ResourceConfig": {
            "InstanceType": "ml.g5.4xlarge",
            "InstanceCount": 1,
            "VolumeSizeInGB": 1,
        },
        "StoppingCondition": {"MaxRuntimeInSeconds": 60},
        "CreationTime": 1735689600,
    }


THROTTLED = (400, {"__type": "ThrottlingException", "message": "Rate exceeded"})


@contextlib.contextmanager
def sagemaker_answering(*answers: tuple[int, dict]) -> Iterator[list[str]]:
    """A SageMaker endpoint on 127.0.0.1 that gives `answers` in order (status, JSON body), one
    per HTTP request, and records each request's operation. Botocore's Stubber answers before the
    retry layer, so only a real endpoint shows what botocore's retries do."""
    pending, operations = list(answers), []

    class Handler(QuietHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            operations.append(self.headers["X-Amz-Target"].rsplit(".", 1)[-1])
            status, body = pending.pop(0) if pending else (500, {"__type": "NoAnswerLeft"})
            self.answer(
                status,
                json.dumps(body).encode(),
                {"Content-Type": "application/x-amz-json-1.1"},
            )

    with serve_http(Handler) as url, pytest.MonkeyPatch.context() as env:
        env.setenv("AWS_ENDPOINT_URL", url)
        env.setenv("AWS_ACCESS_KEY_ID", "testing")
        env.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        env.delenv("AWS_MAX_ATTEMPTS", raising=False)
        yield operations


def test_throttled_calls_are_retried_by_botocore_then_given_up() -> None:
    with sagemaker_answering(THROTTLED, (200, describe("InProgress", "Training"))) as calls:
        job = aws_client("sagemaker", REGION, attempts=2).describe_training_job(
            TrainingJobName="job"
        )
    assert job["SecondaryStatus"] == "Training" and calls == ["DescribeTrainingJob"] * 2

    with sagemaker_answering(THROTTLED, THROTTLED, THROTTLED) as calls:
        client = aws_client("sagemaker", REGION, attempts=2)
        with pytest.raises(client.exceptions.ClientError, match="ThrottlingException"):
            client.describe_training_job(TrainingJobName="job")
    assert len(calls) == 2  # the attempts in all, not one more

    refused = (400, {"__type": "ValidationException", "message": "no such job"})
    with sagemaker_answering(refused, THROTTLED) as calls:
        client = aws_client("sagemaker", REGION, attempts=2)
        with pytest.raises(client.exceptions.ClientError, match="ValidationException"):
            client.describe_training_job(TrainingJobName="job")
    assert len(calls) == 1  # a real error is not retried


def test_aws_max_attempts_overrides_the_projects_attempts(monkeypatch) -> None:
    with sagemaker_answering(THROTTLED, (200, describe("InProgress", "Training"))) as calls:
        monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
        client = aws_client("sagemaker", REGION, attempts=TRAINING_ATTEMPTS)
        with pytest.raises(client.exceptions.ClientError, match="ThrottlingException"):
            client.describe_training_job(TrainingJobName="job")
    assert len(calls) == 1


def test_each_client_has_its_own_session_and_settings_but_the_parsed_models_are_shared(
    monkeypatch,
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1")
    first = aws_client("sagemaker", REGION)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:2")
    second = aws_client("sagemaker", REGION)
    assert (first.meta.endpoint_url, second.meta.endpoint_url) == (
        "http://127.0.0.1:1",
        "http://127.0.0.1:2",
    )
    sessions = [new_session()._session, new_session()._session]  # botocore's, under boto3's
    assert sessions[0] is not sessions[1]
    assert sessions[0].get_component("data_loader") is sessions[1].get_component("data_loader")


def test_polling_survives_throttling() -> None:
    answers = [
        (200, describe("InProgress", "Training")),
        THROTTLED,
        (200, describe("Completed", "Completed")),
    ]
    with sagemaker_answering(*answers) as calls:
        pipes = PipesSageMakerClient(
            bucket="b",
            sagemaker_client=aws_client("sagemaker", REGION),
            s3_client=None,
            logs_client=None,
            poll_interval_s=0.0,
            forward_logs=False,
        )
        params = {"TrainingJobName": "job", "StoppingCondition": {"MaxRuntimeInSeconds": 60}}
        job, history = pipes._wait(dg.build_asset_context(), params, message_reader=None)
    assert job["TrainingJobStatus"] == "Completed" and len(calls) == 3
    assert history == ["InProgress/Training", "Completed/Completed"]


# --- logs and the client as a resource --------------------------------------------------------


def test_log_forwarder_copies_the_stream_then_drains_it(moto_server: str) -> None:
    logs = boto3.client("logs")
    logs.create_log_group(logGroupName=LOG_GROUP)
    logs.create_log_stream(logGroupName=LOG_GROUP, logStreamName="job/algo-1-1")

    def put(*lines: str) -> None:
        now = int(time.time() * 1000)  # CloudWatch refuses events older than 14 days
        events = [{"timestamp": now + i, "message": m} for i, m in enumerate(lines)]
        logs.put_log_events(logGroupName=LOG_GROUP, logStreamName="job/algo-1-1", logEvents=events)

    put("epoch=1", "epoch=2")
    target = io.StringIO()
    forwarder = CloudWatchLogForwarder(
        client=logs, log_stream="job/algo-1-1", interval_s=0.05, target=target
    )
    closed = threading.Event()
    forwarder.start({}, closed)
    put("epoch=3")
    closed.set()  # the session ends: what is left is drained, then the thread ends
    forwarder.stop()
    assert not forwarder.is_running()
    assert target.getvalue() == "epoch=1\nepoch=2\nepoch=3\n"


def test_pipes_client_as_a_resource_param(
    emulator: SageMakerEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Used directly (no trainer): a platform-side failure reaches the run with its reason."""
    monkeypatch.setattr("dagster._core.pipes.utils.WAIT_FOR_LOGS_AFTER_EXECUTION_INTERVAL", 1)
    provision_account(emulator, bucket=BUCKET)
    settings = SageMakerSettings(role_arn=ROLE_ARN)
    request = request_for(settings, code_uri=f"s3://{BUCKET}/no-code-here/")

    @dg.asset
    def trained(
        context: dg.AssetExecutionContext, sagemaker: dg.ResourceParam[PipesSageMakerClient]
    ):
        return sagemaker.run(context=context, create_training_job_params=request).get_results()

    client = PipesSageMakerClient(
        bucket=BUCKET,
        sagemaker_client=emulator.client("sagemaker"),
        s3_client=emulator.client("s3"),
        logs_client=emulator.client("logs"),
        poll_interval_s=0.2,
        message_interval_s=0.2,
    )
    result = dg.materialize([trained], resources={"sagemaker": client}, raise_on_error=False)
    assert not result.success
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    error, messages = failure.step_failure_data.error, []
    while error is not None:  # the step error wraps the client's
        messages.append(error.message)
        error = error.cause
    assert "ended Failed (Failed): ClientError: No S3 objects found under S3 URL" in str(messages)


def test_spot_savings_and_cost_metadata() -> None:
    client, _ = stubbed_sagemaker()
    pipes = PipesSageMakerClient(
        bucket="b", sagemaker_client=client, s3_client=None, logs_client=None
    )
    job = {
        **describe("Completed", "Completed"),
        "EnableManagedSpotTraining": True,
        "TrainingTimeInSeconds": 1000,
        "BillableTimeInSeconds": 300,
    }
    price = instance_price("ml.g5.4xlarge")
    metadata = pipes.job_metadata(job, ["Completed/Completed"], price, 4.06)
    assert metadata["spot_savings_pct"] == 70.0  # SageMaker's 1 - billable / training
    assert metadata["cost_usd"] == pytest.approx(2.03 * 300 / 3600, abs=1e-4)
    assert metadata["estimated_cost_usd_max"] == 4.06
    assert "as of 2025-11-16" in metadata["price_source"]
    unpriced = pipes.job_metadata(job, [], instance_price("ml.p5.48xlarge"), None)
    assert "cost_usd" not in unpriced and unpriced["billable_time_s"] == 300


def test_environment_values_over_sagemakers_limit_are_refused() -> None:
    from crpbot_assets.sagemaker.pipes_client import SageMakerJobError

    with pytest.raises(SageMakerJobError, match="DAGSTER_PIPES_CONTEXT"):
        PipesSageMakerClient._environment({}, {"DAGSTER_PIPES_CONTEXT": "x" * 513})
