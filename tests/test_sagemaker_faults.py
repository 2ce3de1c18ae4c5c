"""What goes wrong on SageMaker reaches the Dagster run clearly, and nothing half-done is promoted.

Jobs run for real in the emulator (see sagemaker_emulator.py); the `model` asset is the project's
own, with the SageMaker trainer.
"""

from __future__ import annotations

import os
import signal
import threading

import dagster as dg
import pytest
from sagemaker_emulator import (
    BUCKET,
    QUOTA_NAME,
    SageMakerEmulator,
    emulated_trainer,
    materialize_model,
    provision_account,
    training_inputs,
)

# Long enough to be stopped mid-training, bounded by the emulator's own deadline anyway.
LONG_RUN = {"epochs": "1000", "patience": "1000"}


@pytest.fixture
def cloud(emulator: SageMakerEmulator, monkeypatch: pytest.MonkeyPatch) -> SageMakerEmulator:
    """An account ready to train BTC: bucket, role, quota, features file and processor."""
    # A killed job never sends Pipes' "closed" message, and Dagster then waits 10 s for late
    # messages; 1 s is plenty against a local server and keeps these tests short.
    monkeypatch.setattr("dagster._core.pipes.utils.WAIT_FOR_LOGS_AFTER_EXECUTION_INTERVAL", 1)
    provision_account(emulator, bucket=BUCKET, files=training_inputs("BTC"))
    emulator.quotas = {QUOTA_NAME: 1}
    return emulator


def failure_text(result: dg.ExecuteInProcessResult) -> str:
    """The step failure as the UI shows it: the error message and the Failure's description."""
    texts = []
    for event in result.all_events:
        if event.event_type == dg.DagsterEventType.STEP_FAILURE:
            data = event.step_failure_data
            texts.append(data.error.to_string() if data.error else "")
            if data.user_failure_data is not None:
                texts.append(data.user_failure_data.description or "")
    return "\n".join(texts)


def model_keys(cloud: SageMakerEmulator) -> list[str]:
    listed = cloud.client("s3").list_objects_v2(Bucket=BUCKET, Prefix="models/")
    return [item["Key"] for item in listed.get("Contents", [])]


def only_job(cloud: SageMakerEmulator) -> dict:
    (name,) = cloud.jobs
    return cloud.client("sagemaker").describe_training_job(TrainingJobName=name)


def in_background(action) -> threading.Thread:
    thread = threading.Thread(target=action, daemon=True)
    thread.start()
    return thread


def test_failed_job_reason_reaches_the_run(cloud: SageMakerEmulator) -> None:
    result = materialize_model(emulated_trainer(), {"temperature-init": "-1"})
    assert not result.success
    job = only_job(cloud)
    assert job["TrainingJobStatus"] == "Failed"
    assert job["FailureReason"].startswith("AlgorithmError: ")
    text = failure_text(result)
    assert job["FailureReason"] in text and "temperature_init" in text  # the entry point's words
    assert job["TrainingJobName"] in text and "Failed" in text
    assert model_keys(cloud) == []


def test_stopped_job_raises(cloud: SageMakerEmulator) -> None:
    def stop_when_training() -> None:
        name = cloud.wait_for_any_job()
        cloud.client("sagemaker").stop_training_job(TrainingJobName=name)

    stopper = in_background(stop_when_training)
    result = materialize_model(emulated_trainer(), LONG_RUN)
    stopper.join(timeout=10)
    assert not result.success
    assert only_job(cloud)["TrainingJobStatus"] == "Stopped"
    assert "Stopped (Stopped): The training job was stopped" in failure_text(result)
    assert model_keys(cloud) == []


def test_max_runtime_exceeded(cloud: SageMakerEmulator) -> None:
    result = materialize_model(emulated_trainer(max_runtime_s=3), LONG_RUN)
    assert not result.success
    job = only_job(cloud)
    assert (job["TrainingJobStatus"], job["SecondaryStatus"]) == ("Stopped", "MaxRuntimeExceeded")
    text = failure_text(result)
    assert "MaxRuntimeExceeded" in text and "MaxRuntimeInSeconds=3" in text
    assert model_keys(cloud) == []


def test_cancelled_run_stops_its_job(cloud: SageMakerEmulator) -> None:
    """Terminating a run signals its process; the interrupt must stop the (billed) job."""

    def interrupt_when_training() -> None:
        cloud.wait_for_any_job()
        os.kill(os.getpid(), signal.SIGINT)

    interrupter = in_background(interrupt_when_training)
    result = materialize_model(emulated_trainer(), LONG_RUN)
    interrupter.join(timeout=10)
    assert not result.success
    assert "DagsterExecutionInterruptedError" in failure_text(result)
    (name,) = cloud.jobs
    assert cloud.wait_for_status(name, {"Stopped"}, timeout_s=30) == "Stopped"
    assert only_job(cloud)["SecondaryStatus"] == "Stopped"  # stopped by request, not by timeout


@pytest.mark.parametrize(("fault", "words"), [("missing", "is missing"), ("corrupt", "is corrupt")])
def test_bad_model_archive_promotes_nothing(
    cloud: SageMakerEmulator, fault: str, words: str
) -> None:
    cloud.artifact_fault = fault
    result = materialize_model(emulated_trainer())
    assert not result.success
    assert only_job(cloud)["TrainingJobStatus"] == "Completed"
    text = failure_text(result)
    assert "model.tar.gz" in text and words in text and "nothing was promoted" in text
    assert model_keys(cloud) == []
    assert not result.get_asset_materialization_events()


def test_failed_preflight_launches_nothing(cloud: SageMakerEmulator) -> None:
    cloud.quotas = {QUOTA_NAME: 0}  # the original run died on a g5 quota of 0
    result = materialize_model(emulated_trainer())
    assert not result.success
    assert cloud.jobs == {}
    text = failure_text(result)
    assert "no SageMaker job for BTC" in text and "quota" in text and "is 0" in text


def test_storage_root_must_be_the_settings_bucket(cloud: SageMakerEmulator) -> None:
    result = materialize_model(emulated_trainer(bucket="another-bucket"))
    assert not result.success
    assert "storage root" in failure_text(result)
    assert cloud.jobs == {}
