"""The whole cloud path for one symbol, offline: preflight, launch, Pipes, logs, artifacts, gates,
promotion and report — the real asset graph with the SageMaker trainer against the emulator."""

from __future__ import annotations

import json
import warnings

import dagster as dg
import pytest
from mlflow import MlflowClient
from sagemaker_emulator import (
    BUCKET,
    QUOTA_NAME,
    ROLE_ARN,
    SageMakerEmulator,
    emulated_trainer,
    provision_account,
)

from crpbot_assets.assets import (
    candles,
    features,
    gate_report,
    model,
    processor,
    production_model,
)
from crpbot_assets.checks import features_checks
from crpbot_assets.profiles import ProfileResource
from crpbot_assets.resources import ExchangeResource
from crpbot_assets.sagemaker.dagster_objects import (
    PREFLIGHT_CHECK_NAME,
    sagemaker_asset_checks,
    trainer_from_env,
)
from crpbot_assets.sagemaker.trainer import SageMakerTrainer
from crpbot_assets.storage import StorageResource
from crpbot_assets.tracking import tracking_target
from crpbot_assets.trainers import LocalTrainer
from v8_model.evaluation.gates import GATE_NAMES


def test_one_symbol_end_to_end(emulator: SageMakerEmulator, capsys: pytest.CaptureFixture) -> None:
    provision_account(emulator, bucket=BUCKET)
    emulator.quotas = {QUOTA_NAME: 2}
    trainer = emulated_trainer()
    storage = StorageResource(root=f"s3://{BUCKET}")
    resources = {
        "storage": storage,
        "profile": ProfileResource(name="demo", days=10, epochs=2, min_coverage_days=5),
        "trainer": trainer,
        "exchanges": ExchangeResource(),
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.PreviewWarning)  # partitioned asset checks
        result = dg.materialize(
            [candles, features, processor, model, production_model, features_checks,
             *sagemaker_asset_checks(trainer)],
            partition_key="BTC",
            resources=resources,
            raise_on_error=False,
        )  # fmt: skip

    # One job, for BTC only, that ran the packaged entry point under the container contract.
    assert list(emulator.jobs) and len(emulator.jobs) == 1
    job_name = next(iter(emulator.jobs))
    job = emulator.client("sagemaker").describe_training_job(TrainingJobName=job_name)
    assert job["TrainingJobStatus"] == "Completed"
    assert job["HyperParameters"]["symbols"] == "BTC"
    assert job["HyperParameters"]["epochs"] == "2"  # the run profile's value
    log = "\n".join(emulator.log_lines[job_name])
    assert "bootstrap: exec" in log and "/input/data/code/src" in log  # the bundled source ran
    assert "symbol=BTC epoch=2 " in log

    # The preflight check passed and shows the S3 dataset's size, rows and modification time.
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    preflight = checks[PREFLIGHT_CHECK_NAME]
    assert preflight.passed
    shown = preflight.metadata
    assert shown["rows"].value > 10_000 and shown["size_mb"].value > 1
    assert "last_modified" in shown

    # Pipes brought the gates: one evaluation per gate, equal to the stored metrics.
    metrics = json.loads(storage.store.read_text("models/BTC/metrics.json"))
    for name in GATE_NAMES:
        assert checks[name].passed == metrics["gates"][name]["passed"]
        assert checks[name].metadata["value"].value == pytest.approx(
            metrics["gates"][name]["value"]
        )

    # The model materialization carries the job's story and cost; artifacts are where local's are.
    materialized = {
        m.asset_key.to_user_string(): m for m in result.get_asset_materialization_events()
    }
    model_metadata = materialized["model"].materialization.metadata
    assert model_metadata["sagemaker_job_name"].value == job_name
    assert "console.aws.amazon.com/sagemaker" in model_metadata["sagemaker_job_url"].value
    assert "Completed" in model_metadata["sagemaker_status_history"].value
    assert model_metadata["instance_type"].value == "ml.g5.4xlarge"
    assert model_metadata["billable_time_s"].value == job["BillableTimeInSeconds"]
    assert model_metadata["estimated_cost_usd_max"].value == pytest.approx(2.03 * 2)
    expected_cost = round(2.03 * job["BillableTimeInSeconds"] / 3600, 4)
    assert model_metadata["cost_usd"].value == pytest.approx(expected_cost)
    assert model_metadata["test_accuracy"].value == pytest.approx(metrics["test_accuracy"])
    keys = set(storage.store.list_keys("models/BTC"))
    assert keys == {
        f"models/BTC/{name}"
        for name in ("weights.npz", "config.json", "processor_BTC_v8.json", "metrics.json",
                     "run_info.json")
    }  # fmt: skip
    run_info = json.loads(storage.store.read_text("models/BTC/run_info.json"))
    assert run_info["trainer"] == "sagemaker" and run_info["job_name"] == job_name
    assert run_info["cost_usd"] == pytest.approx(expected_cost)

    # Tracked like a local training, from what the job published: where it ran, its metrics.
    # With an S3 storage root and no MLFLOW_TRACKING_URI the embedded store is the local
    # default root's (a temporary folder in the tests).
    mlflow_uri = tracking_target(storage.root).uri
    assert "local_root/mlflow/mlflow.db" in mlflow_uri
    mlflow_run = MlflowClient(tracking_uri=mlflow_uri).get_run(
        model_metadata["mlflow_run_id"].value
    )
    assert mlflow_run.data.params["trainer"] == "sagemaker"
    assert mlflow_run.data.params["job_name"] == job_name == mlflow_run.info.run_name
    assert mlflow_run.data.params["instance_type"] == "ml.g5.4xlarge"
    assert mlflow_run.data.metrics["test_accuracy"] == metrics["test_accuracy"]
    assert mlflow_run.data.metrics["cost_usd"] == pytest.approx(expected_cost)

    # The job's CloudWatch lines reached the step's stdout.
    assert "symbol=BTC epoch=1 " in capsys.readouterr().out

    # Promotion follows the gates; the run fails exactly when a blocking gate failed.
    promoted = "production_model" in materialized
    assert promoted == metrics["all_gates_passed"] == result.success

    # No Pipes litter left in the bucket; the report names where BTC trained and what it cost.
    s3 = emulator.client("s3")
    assert s3.list_objects_v2(Bucket=BUCKET, Prefix="v8-final/pipes/messages/")["KeyCount"] == 0
    report_result = dg.materialize([gate_report], resources={"storage": storage})
    assert report_result.success
    report = json.loads(storage.store.read_text("reports/gate_report.json"))
    assert report["symbols"]["BTC"]["trainer"] == "sagemaker"
    assert report["symbols"]["BTC"]["cost_usd"] == pytest.approx(expected_cost)


def test_trainer_switch_by_environment() -> None:
    assert isinstance(trainer_from_env({}), LocalTrainer)
    trainer = trainer_from_env(
        {
            "CRPBOT_TRAINER": "sagemaker",
            "CRPBOT_SAGEMAKER_ROLE_ARN": ROLE_ARN,
            "CRPBOT_BUCKET": "my-bucket",
            "CRPBOT_REGION": "eu-west-1",
            "AWS_REGION": "ap-south-1",  # the shell's default never chooses the jobs' region
            "CRPBOT_INSTANCE_TYPE": "ml.g5.2xlarge",
        }
    )
    assert isinstance(trainer, SageMakerTrainer)
    assert (trainer.role_arn, trainer.bucket, trainer.region, trainer.instance_type) == (
        ROLE_ARN,
        "my-bucket",
        "eu-west-1",
        "ml.g5.2xlarge",
    )
    assert sagemaker_asset_checks(LocalTrainer()) == []
    with pytest.raises(ValueError, match="CRPBOT_TRAINER"):
        trainer_from_env({"CRPBOT_TRAINER": "cloud"})
