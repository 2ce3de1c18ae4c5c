"""A faithful, offline SageMaker for tests: moto's API, plus training jobs that really run.

moto's `ThreadedMotoServer` (conftest's `moto_server`, on 127.0.0.1) serves S3, SageMaker, IAM,
STS, CloudWatch Logs and Service Quotas over real HTTP, so the code under test uses ordinary boto3
clients (through AWS_ENDPOINT_URL) with botocore's serialisation, validation and retries intact.
moto's training jobs, though, are "Completed" at once and run nothing, and it has no
StopTrainingJob. This module patches moto's SageMaker backend (in this process, where the server
thread runs) so that a created job behaves like SageMaker's:

- status InProgress with secondary statuses Starting → Downloading → Training → Uploading, then
  Completed / Failed (FailureReason = "AlgorithmError: " + the failure file's first 1024
  characters) / Stopped (StopTrainingJob) / Stopped with MaxRuntimeExceeded (the AWS API
  documents MaxRuntimeExceeded as a secondary status of Stopped);
- the container contract: the job's channels are downloaded from (moto) S3 into a container tree
  built by crpbot_assets.sagemaker.container.emulate_training_container, and the job's own
  ContainerEntrypoint (+ ContainerArguments) runs in a subprocess with `/opt/ml` mapped to that
  tree (SM_BASE_DIR). Like SageMaker itself, and unlike the training toolkit, it sets no SM_*
  variables: the process sees the job's Environment, TRAINING_JOB_NAME/ARN and AWS_REGION (plus
  the test server's endpoint and dummy credentials standing in for the role);
- stdout/stderr lines go to CloudWatch Logs `/aws/sagemaker/TrainingJobs`, `<job>/algo-1-<t>`;
- the model directory is tarred to `<S3OutputPath>/<job>/output/model.tar.gz`;
- TrainingTimeInSeconds and BillableTimeInSeconds (on-demand billing);
- warm pools: a job with ResourceConfig.KeepAlivePeriodInSeconds leaves its instance warm
  (WarmPoolStatus Available) for that long; a later job with the same role, instance type, count
  and volume that also asks for keep-alive takes it over (the pool's job: InUse, then Reused
  with ReusedByJob once the new job ends) and skips the start-up (`startup_delay_s`, standing in
  for provisioning and the image pull, is spent only by cold starts); an expired pool is
  Terminated. ListTrainingJobs honours WarmPoolStatusEquals (moto ignores it);
- IAM's policy simulator (SimulatePrincipalPolicy, which moto lacks): every action is allowed
  except those in `denied_actions` (for a principal in `denied_principals`, or any); a principal
  in `simulation_forbidden` gets AccessDenied, as a caller without iam:SimulatePrincipalPolicy;
- Service Quotas answers for ServiceCode "sagemaker" from `quotas` (moto knows only "vpc"), by
  quota code as the project's table assigns them (GetAWSDefaultServiceQuota; no applied values).

Patching the backend (rather than wrapping a boto3 client) keeps the code under test unmodified:
it cannot tell this server from SageMaker except by speed. Fault injection: `artifact_fault`.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import math
import os
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd
import pytest
from moto.core.responses import ActionResult, EmptyResult
from moto.iam.exceptions import IAMException
from moto.iam.responses import IamResponse
from moto.sagemaker.exceptions import ValidationError
from moto.sagemaker.models import SageMakerModelBackend
from moto.sagemaker.responses import SageMakerResponse
from moto.servicequotas.exceptions import NoSuchResource
from moto.servicequotas.models import ServiceQuotasBackend
from moto.servicequotas.responses import ServiceQuotasResponse

from crpbot_assets.sagemaker.aws import new_session
from crpbot_assets.sagemaker.container import emulate_training_container
from crpbot_assets.sagemaker.quotas import QUOTA_CODES, quota_name
from crpbot_assets.sagemaker.trainer import SageMakerTrainer
from crpbot_assets.symbol_processes import THREADS_ENV_VAR
from v8_model.data.features import build_features_dataset
from v8_model.data.processor import processor_filename
from v8_model.data.segments import fit_processor
from v8_model.data.synthetic import generate_candles
from v8_model.job import contract

LOG_GROUP = "/aws/sagemaker/TrainingJobs"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
ACCOUNT = "123456789012"  # moto's default account
REGION = "us-east-2"
BUCKET = "crpbot-sagemaker-training"  # the seed's bucket: the trainer's default
QUOTA_NAME = "ml.g5.4xlarge for training job usage"
WARM_POOL_QUOTA_NAME = "ml.g5.4xlarge for training warm pool usage"
ROLE_NAME = "CrpbotSageMakerTraining"
ROLE_ARN = f"arn:aws:iam::{ACCOUNT}:role/{ROLE_NAME}"
SAGEMAKER_TRUST = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Principal": {"Service": "sagemaker.amazonaws.com"},
            "Action": "sts:AssumeRole",
        }
    ],
}
STOP_GRACE_S = 5.0  # SageMaker allows 120 s after SIGTERM; tests need not wait that long
JOB_DEADLINE_S = 300.0  # no emulated job outlives this, whatever its stopping condition


class _Job:
    """The emulator's bookkeeping for one job; moto's FakeTrainingJob holds the API view."""

    def __init__(self, fake: Any, backend: SageMakerModelBackend) -> None:
        self.fake = fake
        self.backend = backend
        self.stop_requested = threading.Event()
        self.thread: threading.Thread | None = None
        self.process: subprocess.Popen | None = None


class SageMakerEmulator:
    """Runs the training jobs created on the moto server; see the module docstring."""

    def __init__(self, endpoint_url: str, workdir: Path) -> None:
        self.endpoint_url = endpoint_url
        self.workdir = workdir
        self.jobs: dict[str, _Job] = {}
        self.artifact_fault: str | None = None  # None, "missing" or "corrupt"
        self.quotas: dict[str, float] = {}  # AWS default values by quota name
        self.denied_actions: dict[str, set[str]] = {}  # principal ARN → actions it may not do
        self.simulation_forbidden = False  # the caller may not use the policy simulator
        self.log_lines: dict[str, list[str]] = {}
        self.startup_delay_s = 0.0  # a cold start's provisioning and image pull
        self.reused_pool_of: dict[str, str] = {}  # job → the job whose warm pool it took over
        self.warm_until: dict[str, float] = {}  # job with a warm pool → monotonic expiry
        self.pool_lock = threading.Lock()

    # --- clients of the emulated platform itself -----------------------------------------------

    def client(self, service: str, region: str = REGION) -> Any:
        return new_session().client(
            service,
            region_name=region,
            endpoint_url=self.endpoint_url,
            aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        )

    # --- moto patches ----------------------------------------------------------------------------

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        emulator = self
        original_create = SageMakerModelBackend.create_training_job
        original_create_response = SageMakerResponse.create_training_job
        environments: dict[str, dict[str, str]] = {}

        def create_training_job_response(response: SageMakerResponse) -> ActionResult:
            # moto drops the request's Environment; keep it for the job's process.
            name = response._get_param("TrainingJobName")
            environments[name] = response._get_param("Environment") or {}
            return original_create_response(response)

        def create_training_job(backend: SageMakerModelBackend, **kwargs: Any) -> Any:
            fake = original_create(backend, **kwargs)
            fake.environment = environments.pop(fake.training_job_name, {})
            emulator._start(fake, backend)
            return fake

        def stop_training_job_backend(backend: SageMakerModelBackend, name: str) -> None:
            job = emulator.jobs.get(name)
            if job is None or job.backend is not backend:
                raise ValidationError(message=f"Requested resource not found: {name}")
            if job.fake.training_job_status != "InProgress":
                raise ValidationError(
                    message=f"The job status is {job.fake.training_job_status}: cannot stop it"
                )
            emulator._set_status(job, "Stopping", "Stopping", "Stopping the training job")
            job.stop_requested.set()

        original_list_training_jobs = SageMakerResponse.list_training_jobs

        def list_training_jobs(response: SageMakerResponse) -> Any:
            status = response._get_param("WarmPoolStatusEquals")
            if not status:
                return original_list_training_jobs(response)
            emulator._expire_pools()
            jobs = sorted(
                (
                    job.fake
                    for job in emulator.jobs.values()
                    if job.backend is response.sagemaker_backend
                ),
                key=lambda fake: fake.creation_time,
                reverse=response._get_param("SortOrder", "Ascending") == "Descending",
            )
            summaries = [
                {
                    "TrainingJobName": fake.training_job_name,
                    "TrainingJobArn": fake.arn,
                    "CreationTime": fake.creation_time,
                    "TrainingJobStatus": fake.training_job_status,
                    "WarmPoolStatus": fake.warm_pool_status,
                }
                for fake in jobs
                if getattr(fake, "warm_pool_status", {}).get("Status") == status
            ]
            return ActionResult({"TrainingJobSummaries": summaries})

        def stop_training_job(response: SageMakerResponse) -> ActionResult:
            response.sagemaker_backend.stop_training_job(response._get_param("TrainingJobName"))
            return EmptyResult()

        codes = {
            quota_name(instance_type, usage): code
            for instance_type, by_usage in QUOTA_CODES.items()
            for usage, code in by_usage.items()
        }

        def quotas(values: dict[str, float]) -> list[dict]:
            return [
                {
                    "ServiceCode": "sagemaker",
                    "QuotaName": name,
                    "QuotaCode": codes.get(name, f"L-{i:08X}"),
                    "Value": value,
                }
                for i, (name, value) in enumerate(sorted(values.items()))
            ]

        original_defaults = ServiceQuotasBackend.list_aws_default_service_quotas

        def list_aws_default_service_quotas(backend: ServiceQuotasBackend, service_code: str):
            if service_code == "sagemaker":
                return quotas(emulator.quotas)
            return original_defaults(backend, service_code)

        def list_service_quotas(response: ServiceQuotasResponse) -> str:
            # No quota was ever adjusted in this account: AWS's defaults apply (moto lacks it).
            return json.dumps({"Quotas": []})

        original_get = ServiceQuotasResponse.get_service_quota

        def get_service_quota(response: ServiceQuotasResponse) -> str:
            if json.loads(response.body).get("ServiceCode") == "sagemaker":
                raise NoSuchResource  # never adjusted: AWS answers with the default only
            return original_get(response)

        def get_aws_default_service_quota(response: ServiceQuotasResponse) -> str:
            params = json.loads(response.body)
            by_code = {quota["QuotaCode"]: quota for quota in quotas(emulator.quotas)}
            if params.get("ServiceCode") != "sagemaker" or params.get("QuotaCode") not in by_code:
                raise NoSuchResource
            return json.dumps({"Quota": by_code[params["QuotaCode"]]})

        def simulate_principal_policy(response: IamResponse) -> ActionResult:
            if emulator.simulation_forbidden:
                raise IAMException(
                    "AccessDenied", "not authorized to perform: iam:SimulatePrincipalPolicy"
                )
            principal = response._get_param("PolicySourceArn")
            if ":role/" in principal:
                response.backend.get_role(principal.rsplit("/", 1)[1])  # NoSuchEntity if absent
            denied = emulator.denied_actions.get(principal, set())
            resources = response._get_param("ResourceArns", []) or ["*"]
            results = [
                {
                    "EvalActionName": action,
                    "EvalResourceName": resource,
                    "EvalDecision": "implicitDeny" if action in denied else "allowed",
                }
                for action in response._get_param("ActionNames", [])
                for resource in resources
            ]
            return ActionResult({"EvaluationResults": results, "IsTruncated": False})

        monkeypatch.setattr(
            IamResponse, "simulate_principal_policy", simulate_principal_policy, raising=False
        )
        monkeypatch.setattr(SageMakerResponse, "create_training_job", create_training_job_response)
        monkeypatch.setattr(SageMakerModelBackend, "create_training_job", create_training_job)
        monkeypatch.setattr(
            SageMakerModelBackend, "stop_training_job", stop_training_job_backend, raising=False
        )
        monkeypatch.setattr(
            SageMakerResponse, "stop_training_job", stop_training_job, raising=False
        )
        monkeypatch.setattr(SageMakerResponse, "list_training_jobs", list_training_jobs)
        monkeypatch.setattr(
            ServiceQuotasBackend, "list_aws_default_service_quotas", list_aws_default_service_quotas
        )
        monkeypatch.setattr(
            ServiceQuotasResponse, "list_service_quotas", list_service_quotas, raising=False
        )
        monkeypatch.setattr(ServiceQuotasResponse, "get_service_quota", get_service_quota)
        monkeypatch.setattr(
            ServiceQuotasResponse,
            "get_aws_default_service_quota",
            get_aws_default_service_quota,
            raising=False,
        )

    # --- job lifecycle ---------------------------------------------------------------------------

    def _start(self, fake: Any, backend: SageMakerModelBackend) -> None:
        job = _Job(fake, backend)
        fake.training_end_time = None  # moto fills in its instant "Completed" values
        fake.model_artifacts = None
        fake.secondary_status_transitions = []
        reused = self._take_warm_pool(fake)
        message = (
            f"Found a matching warm pool (from {reused}): reusing its instance"
            if reused
            else "Preparing the instances for training"
        )
        self._set_status(job, "InProgress", "Starting", message)
        self.jobs[fake.training_job_name] = job
        job.thread = threading.Thread(target=self._run, args=(job,), daemon=True)
        job.thread.start()

    @staticmethod
    def _pool_key(fake: Any) -> tuple:
        resource = fake.resource_config
        return (
            fake.role_arn,
            resource["InstanceType"],
            resource.get("InstanceCount", 1),
            resource.get("VolumeSizeInGB"),
        )

    def _expire_pools(self) -> None:
        with self.pool_lock:
            for name, until in list(self.warm_until.items()):
                if time.monotonic() > until:
                    del self.warm_until[name]
                    self.jobs[name].fake.warm_pool_status = {"Status": "Terminated"}

    def _take_warm_pool(self, fake: Any) -> str | None:
        """The job whose Available warm pool `fake` takes over, if it asks for keep-alive."""
        if not fake.resource_config.get("KeepAlivePeriodInSeconds"):
            return None
        self._expire_pools()
        with self.pool_lock:
            for name in list(self.warm_until):
                pool_job = self.jobs[name].fake
                if self._pool_key(pool_job) == self._pool_key(fake):
                    del self.warm_until[name]
                    pool_job.warm_pool_status = {
                        "Status": "InUse",
                        "ReusedByJob": fake.training_job_name,
                    }
                    self.reused_pool_of[fake.training_job_name] = name
                    return name
        return None

    def _hand_over_pools(self, job: _Job, outcome: str) -> None:
        """At a job's end: the pool it took over is Reused; its own instance stays warm."""
        fake = job.fake
        with self.pool_lock:
            previous = self.reused_pool_of.get(fake.training_job_name)
            if previous:
                self.jobs[previous].fake.warm_pool_status = {
                    "Status": "Reused",
                    "ReusedByJob": fake.training_job_name,
                    "ResourceRetainedBillableTimeInSeconds": 0,
                }
            keep_alive = fake.resource_config.get("KeepAlivePeriodInSeconds")
            if keep_alive and outcome == "Completed":
                fake.warm_pool_status = {
                    "Status": "Available",
                    "ResourceRetainedBillableTimeInSeconds": 0,
                }
                self.warm_until[fake.training_job_name] = time.monotonic() + keep_alive

    def _set_status(self, job: _Job, status: str, secondary: str, message: str) -> None:
        now = datetime.now(UTC)
        transitions = [dict(t) for t in job.fake.secondary_status_transitions]
        if transitions:
            transitions[-1]["EndTime"] = now
        transitions.append({"Status": secondary, "StartTime": now, "StatusMessage": message})
        job.fake.secondary_status_transitions = transitions  # replaced whole: readers see old/new
        job.fake.secondary_status = secondary
        job.fake.training_job_status = status
        job.fake.last_modified_time = now

    def _run(self, job: _Job) -> None:
        started = time.monotonic()
        try:
            self._lifecycle(job, started)
        except Exception as error:  # an emulator bug must end the job, not leave it InProgress
            self._finish(job, started, "Failed", f"InternalServerError: emulator: {error!r}")
            raise

    def _lifecycle(self, job: _Job, started: float) -> None:
        fake = job.fake
        region = fake.arn.split(":")[3]
        root = self.workdir / fake.training_job_name / "opt_ml"
        container = emulate_training_container(
            root,
            job_name=fake.training_job_name,
            hyperparameters=fake.hyper_parameters or {},
            channels={c["ChannelName"]: c.get("ContentType", "") for c in fake.input_data_config},
            instance_type=fake.resource_config["InstanceType"],
            num_gpus=0,
        )
        if fake.training_job_name not in self.reused_pool_of:
            # A cold start: provisioning and the image pull, which a warm pool skips.
            job.stop_requested.wait(self.startup_delay_s)
        self._set_status(job, "InProgress", "Downloading", "Downloading input data")
        s3 = self.client("s3", region)
        for channel in fake.input_data_config:
            uri = channel["DataSource"]["S3DataSource"]["S3Uri"]
            if not self._download_channel(s3, uri, container.channel_dir(channel["ChannelName"])):
                self._finish(
                    job, started, "Failed", f'ClientError: No S3 objects found under S3 URL "{uri}"'
                )
                return
        self._set_status(job, "InProgress", "Training", "Training image download completed")
        outcome = self._train(job, root, region)
        if outcome == "Completed":
            self._set_status(job, "InProgress", "Uploading", "Uploading generated training model")
        reason = None
        if outcome == "Failed":
            written = container.failure_reason() or "exited non-zero without a failure file"
            reason = f"AlgorithmError: {written}"
        else:  # SageMaker uploads the model folder of stopped jobs too
            self._upload_model(s3, job, container.model_dir)
        self._finish(job, started, outcome, reason)

    @staticmethod
    def _download_channel(s3: Any, uri: str, target: Path) -> bool:
        """SageMaker's S3Prefix rule: every key under the prefix, placed relative to the prefix's
        last '/' (so a prefix naming one object yields that file by its name)."""
        bucket, _, prefix = uri[len("s3://") :].partition("/")
        base = prefix.rsplit("/", 1)[0] + "/" if "/" in prefix else ""
        found = False
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                path = target / item["Key"][len(base) :]
                path.parent.mkdir(parents=True, exist_ok=True)
                s3.download_file(bucket, item["Key"], str(path))
                found = True
        return found

    def _train(self, job: _Job, root: Path, region: str) -> str:
        fake = job.fake
        spec = fake.algorithm_specification
        command = [
            arg.replace(contract.ML_ROOT, str(root), 1) if arg.startswith(contract.ML_ROOT) else arg
            for arg in [*spec.get("ContainerEntrypoint", []), *spec.get("ContainerArguments", [])]
        ]
        env = {
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "HOME": str(root),
            **fake.environment,
            contract.BASE_DIR_ENV: str(root),  # the container's /opt/ml
            "TRAINING_JOB_NAME": fake.training_job_name,
            "TRAINING_JOB_ARN": fake.arn,
            "AWS_REGION": region,
            "AWS_DEFAULT_REGION": region,
            "AWS_ENDPOINT_URL": self.endpoint_url,  # stands in for the VPC's route to S3
            # No route to PyPI (as under network isolation): the bootstrap must not need one here.
            "PIP_NO_INDEX": "1",
            **CREDENTIALS,  # stands in for the role's credentials
        }
        # The emulated instance's cores are this test process's share (one torch thread under
        # pytest-xdist, tests/conftest.py), as a real instance's are its own: two threads spinning
        # on 2 cores that the other workers keep busy cost a small job 3-4 times its CPU.
        if THREADS_ENV_VAR in os.environ:
            env[THREADS_ENV_VAR] = os.environ[THREADS_ENV_VAR]
        logs = self.client("logs", region)
        stream = f"{fake.training_job_name}/algo-1-{int(time.time())}"
        self._ensure_log_stream(logs, stream)
        lines: list[str] = []
        self.log_lines[fake.training_job_name] = lines
        job.process = subprocess.Popen(
            command,
            cwd=root,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # its own process group: stop kills it and its children
        )
        reader = threading.Thread(target=self._read_lines, args=(job.process, lines), daemon=True)
        reader.start()
        limit = fake.stopping_condition.get("MaxRuntimeInSeconds", JOB_DEADLINE_S)
        deadline = time.monotonic() + min(limit, JOB_DEADLINE_S)
        sent = 0
        outcome = None
        while outcome is None:
            if job.process.poll() is not None:
                outcome = "Completed" if job.process.returncode == 0 else "Failed"
            elif job.stop_requested.is_set():
                self._terminate(job.process)
                outcome = "Stopped"
            elif time.monotonic() > deadline:
                self._terminate(job.process)
                outcome = "MaxRuntimeExceeded"
            sent = self._ship_logs(logs, stream, lines, sent)
            job.stop_requested.wait(0.2)
        reader.join(timeout=10)
        self._ship_logs(logs, stream, lines, sent)
        return outcome

    @staticmethod
    def _read_lines(process: subprocess.Popen, lines: list[str]) -> None:
        for line in process.stdout:
            lines.append(line.rstrip("\n"))

    @staticmethod
    def _terminate(process: subprocess.Popen) -> None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=STOP_GRACE_S)

    @staticmethod
    def _ensure_log_stream(logs: Any, stream: str) -> None:
        # The group is shared by every job, as on SageMaker: another job may have created it.
        with contextlib.suppress(logs.exceptions.ResourceAlreadyExistsException):
            logs.create_log_group(logGroupName=LOG_GROUP)
        logs.create_log_stream(logGroupName=LOG_GROUP, logStreamName=stream)

    @staticmethod
    def _ship_logs(logs: Any, stream: str, lines: list[str], sent: int) -> int:
        pending = lines[sent:]
        if pending:
            now = int(time.time() * 1000)
            logs.put_log_events(
                logGroupName=LOG_GROUP,
                logStreamName=stream,
                logEvents=[{"timestamp": now, "message": line or " "} for line in pending],
            )
        return sent + len(pending)

    def _upload_model(self, s3: Any, job: _Job, model_dir: Path) -> None:
        fake = job.fake
        bucket, _, prefix = fake.output_data_config["S3OutputPath"][len("s3://") :].partition("/")
        key = f"{prefix.rstrip('/')}/{fake.training_job_name}/output/model.tar.gz".lstrip("/")
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
            for path in sorted(model_dir.rglob("*")):
                if path.is_file():
                    tar.add(path, arcname=path.relative_to(model_dir).as_posix())
        body = buffer.getvalue()
        if self.artifact_fault == "corrupt":
            body = body[: len(body) // 2]  # a truncated upload
        if self.artifact_fault != "missing":
            s3.put_object(Bucket=bucket, Key=key, Body=body)
        fake.model_artifacts = {"S3ModelArtifacts": f"s3://{bucket}/{key}"}

    def _finish(self, job: _Job, started: float, outcome: str, reason: str | None) -> None:
        fake = job.fake
        seconds = max(1, math.ceil(time.monotonic() - started))
        fake.training_time_in_seconds = seconds
        fake.billable_time_in_seconds = seconds  # on-demand: spot discounts are not emulated
        fake.training_end_time = datetime.now(UTC)
        if reason:
            fake.failure_reason = reason
        self._hand_over_pools(job, outcome)
        status, secondary, message = {
            "Completed": ("Completed", "Completed", "Training job completed"),
            "Failed": ("Failed", "Failed", "Training job failed"),
            "Stopped": ("Stopped", "Stopped", "The training job was stopped"),
            "MaxRuntimeExceeded": (
                "Stopped",
                "MaxRuntimeExceeded",
                "Training job runtime exceeded MaxRuntimeInSeconds provided",
            ),
        }[outcome]
        self._set_status(job, status, secondary, message)

    # --- test helpers ----------------------------------------------------------------------------

    def wait_for_status(self, name: str, statuses: set[str], timeout_s: float = 120.0) -> str:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            job = self.jobs.get(name)
            if job is not None and job.fake.training_job_status in statuses:
                return job.fake.training_job_status
            time.sleep(0.1)
        raise TimeoutError(f"job {name} not in {statuses} after {timeout_s} s")

    def wait_for_any_job(self, status: str = "InProgress", timeout_s: float = 60.0) -> str:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for name, job in list(self.jobs.items()):
                if job.fake.training_job_status == status and job.process is not None:
                    return name
            time.sleep(0.1)
        raise TimeoutError(f"no job {status} after {timeout_s} s")

    def shutdown(self) -> None:
        """Kill what still runs and wait for every job thread: nothing outlives a test."""
        for job in self.jobs.values():
            if job.process is not None and job.process.poll() is None:
                self._terminate(job.process)
            job.stop_requested.set()
        for job in self.jobs.values():
            if job.thread is not None:
                job.thread.join(timeout=30)


@contextmanager
def running_emulator(
    endpoint: str, monkeypatch: pytest.MonkeyPatch, workdir: Path
) -> Iterator[SageMakerEmulator]:
    """The emulator on the moto server at `endpoint` (conftest's `moto_server`), for one test;
    no job it started outlives the test. Test modules wrap it in an `emulator` fixture."""
    emulated = SageMakerEmulator(endpoint, workdir / "sagemaker")
    emulated.install(monkeypatch)
    try:
        yield emulated
    finally:
        emulated.shutdown()


def provision_account(
    emulated: SageMakerEmulator,
    *,
    bucket: str,
    files: dict[str, bytes] | None = None,
    trust: dict | None = None,
    region: str = REGION,
) -> None:
    """Bucket (in `region`), the training role, and objects `files` (key → bytes)."""
    s3 = emulated.client("s3", region)
    s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": region})
    emulated.client("iam").create_role(
        RoleName=ROLE_NAME, AssumeRolePolicyDocument=json.dumps(trust or SAGEMAKER_TRUST)
    )
    for key, body in (files or {}).items():
        s3.put_object(Bucket=bucket, Key=key, Body=body)


@functools.cache
def tiny_dataset(symbol: str, days: int = 10) -> bytes:
    """A real `{SYMBOL}_features.parquet` of `days` synthetic days (about 6 MB for 10)."""
    candles = generate_candles(symbol, minutes=days * 1440, seed=7, signal=0.3)
    buffer = io.BytesIO()
    build_features_dataset(candles).to_parquet(buffer, index=False)
    return buffer.getvalue()


@functools.cache
def tiny_processor(symbol: str) -> bytes:
    """The processor file fitted on `tiny_dataset(symbol)`, as the processor asset writes it."""
    dataset = pd.read_parquet(io.BytesIO(tiny_dataset(symbol)))
    with tempfile.TemporaryDirectory() as tmp:
        path = fit_processor(dataset, symbol).save(Path(tmp) / processor_filename(symbol))
        return path.read_bytes()


def training_inputs(symbol: str, prefix: str = "") -> dict[str, bytes]:
    """Storage objects a job for `symbol` reads: its features file and its processor."""
    root = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
    return {
        f"{root}data/{symbol}_features.parquet": tiny_dataset(symbol),
        f"{root}processors/{processor_filename(symbol)}": tiny_processor(symbol),
    }


def emulated_trainer(**overrides: Any) -> SageMakerTrainer:
    """The seed's settings, with test-sized polling and a row minimum for 10-day files."""
    settings = {
        "role_arn": ROLE_ARN,
        "bucket": BUCKET,
        "region": REGION,
        "min_features_rows": 1_000,
        "poll_interval_s": 0.5,
        "message_interval_s": 0.5,
        **overrides,
    }
    return SageMakerTrainer(**settings)


def materialize_model(
    trainer: SageMakerTrainer, hyperparameters: dict[str, str] | None = None
) -> dg.ExecuteInProcessResult:
    """The project's `model` asset for BTC with `trainer`, storage in the emulated bucket."""
    from crpbot_assets.assets import model
    from crpbot_assets.profiles import ProfileResource
    from crpbot_assets.storage import StorageResource

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.PreviewWarning)
        return dg.materialize(
            [model],
            partition_key="BTC",
            resources={
                "storage": StorageResource(root=f"s3://{BUCKET}"),
                "profile": ProfileResource(name="demo", epochs=1),
                "trainer": trainer,
            },
            run_config={"ops": {"model": {"config": {"hyperparameters": hyperparameters or {}}}}},
            raise_on_error=False,
        )
