"""A Dagster Pipes client for SageMaker training jobs (dagster-aws has ECS, EMR, Glue, Lambda only).

Modelled on dagster-aws's `PipesGlueClient` / `PipesECSClient`:
- context: `PipesS3ContextInjector`; its (short) bootstrap parameters travel in the job's
  `Environment`, whose values SageMaker caps at 512 characters;
- messages: `PipesS3MessageReader` (the entry point writes with `PipesS3MessageWriter`);
- logs: the job's CloudWatch streams (`/aws/sagemaker/TrainingJobs`, `<job>/algo-1-<epoch>`) are
  forwarded to the step's stdout as SageMaker creates them (a spot restart opens a new one);
- polling and stopping use this client's own boto3 clients, whose botocore retries (see `aws.py`)
  ride out throttling;
- a create whose response was lost (the retry finds the name in use) adopts the job when it is
  this session's own (same Pipes context in its Environment), and refuses it otherwise;
- any error while waiting (interrupt, expired token, network) stops the job before it propagates,
  so no billed job is orphaned; Failed or Stopped raises with the
  job's FailureReason (or why it stopped); Completed returns the session's results plus metadata:
  job name and console link, status history, training and billable seconds, instance, spot
  savings, and cost (the upper bound estimated before launch and the billed cost after), the
  start-up / training / upload split of its wall time, its warm pool's status and whether it
  reused another job's warm pool.
"""

from __future__ import annotations

import copy
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import IO, Any

import dagster as dg
from botocore.exceptions import BotoCoreError, ClientError
from dagster._core.pipes.utils import PipesLogReader
from dagster_aws.pipes import PipesS3ContextInjector, PipesS3MessageReader

from crpbot_assets.sagemaker.aws import error_code
from crpbot_assets.sagemaker.pricing import Price, spot_savings_percent
from crpbot_assets.sagemaker.time_split import TimeSplit

LOG_GROUP = "/aws/sagemaker/TrainingJobs"
TERMINAL_STATUSES = frozenset({"Completed", "Failed", "Stopped"})
ENVIRONMENT_VALUE_LIMIT = 512  # SageMaker's limit on each Environment value
# Warm pools another job can have handed over: the reusing job is named in their ReusedByJob.
HANDED_OVER_POOL_STATUSES = ("InUse", "Reused")
# Past MaxRuntime (+ MaxWait for spot) SageMaker ends the job itself; this slack covers instance
# provisioning and the upload, so the client's own wait is bounded too.
WAIT_SLACK_S = 3600


class SageMakerJobError(RuntimeError):
    """The training job ended Failed or Stopped, or could not be followed to its end."""

    def __init__(self, message: str, job: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.job = dict(job or {})


def console_url(region: str, job_name: str) -> str:
    return (
        f"https://{region}.console.aws.amazon.com/sagemaker/home?region={region}#/jobs/{job_name}"
    )


def end_reason(job: Mapping[str, Any]) -> str:
    """Why a job ended Failed or Stopped, in SageMaker's own words."""
    status, secondary = job.get("TrainingJobStatus"), job.get("SecondaryStatus")
    reason = job.get("FailureReason")
    if not reason:
        transitions = job.get("SecondaryStatusTransitions") or []
        reason = (
            transitions[-1].get("StatusMessage") if transitions else None
        ) or "no reason given"
    if secondary == "MaxRuntimeExceeded":
        limit = job.get("StoppingCondition", {}).get("MaxRuntimeInSeconds")
        reason = f"{reason} (MaxRuntimeInSeconds={limit}: raise max_runtime_s or train less)"
    return f"{status} ({secondary}): {reason}"


class _PrefixedS3MessageReader(PipesS3MessageReader):
    """PipesS3MessageReader that writes under a key prefix (the stock one uses the bucket root)."""

    def __init__(self, *, key_prefix: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.key_prefix = key_prefix
        self.message_prefix: str | None = None

    @contextmanager
    def get_params(self) -> Iterator[dict]:
        with super().get_params() as params:
            self.message_prefix = f"{self.key_prefix}{params['key_prefix']}"
            yield {**params, "key_prefix": self.message_prefix}


class CloudWatchLogForwarder(PipesLogReader):
    """Copies a CloudWatch log stream to a text stream (default: the step's stdout) until the
    Pipes session closes, then drains what is left. Polls at an interval; never busy-loops."""

    def __init__(
        self,
        *,
        client: Any,
        log_stream: str,
        log_group: str = LOG_GROUP,
        interval_s: float = 5.0,
        target: IO[str] | None = None,
    ) -> None:
        self.client = client
        self.log_group = log_group
        self.log_stream = log_stream
        self.interval_s = interval_s
        self.target = target
        self.thread: threading.Thread | None = None
        self.warning: str | None = None

    @property
    def name(self) -> str:
        return f"CloudWatchLogForwarder({self.log_group}/{self.log_stream})"

    def target_is_readable(self, params: Mapping[str, Any]) -> bool:
        return True  # the client adds this reader only once the stream exists

    def start(self, params: Mapping[str, Any], is_session_closed: threading.Event) -> None:
        self.thread = threading.Thread(target=self._run, args=(is_session_closed,), daemon=True)
        self.thread.start()

    def stop(self) -> None:
        if self.thread is not None:
            self.thread.join(timeout=max(30.0, 3 * self.interval_s))

    def is_running(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    def _write(self, text: str) -> None:
        stream = self.target or sys.stdout  # resolved late: test runners swap sys.stdout
        stream.write(text)
        stream.flush()

    def _run(self, is_session_closed: threading.Event) -> None:
        token = None
        while True:
            closing = is_session_closed.is_set()
            token = self._drain(token)
            if closing:
                return
            is_session_closed.wait(self.interval_s)

    def _drain(self, token: str | None) -> str | None:
        """Forward every event after `token`; returns the token to continue from."""
        while True:
            params = {"logGroupName": self.log_group, "logStreamName": self.log_stream}
            params.update({"nextToken": token} if token else {"startFromHead": True})
            try:
                response = self.client.get_log_events(**params)
            except ClientError as error:  # logs are best effort: training goes on without them
                self.warning = f"CloudWatch log forwarding paused: {error}"
                return token
            lines = [event["message"].rstrip("\n") for event in response.get("events", [])]
            if lines:
                self._write("".join(f"{line}\n" for line in lines))
            next_token = response.get("nextForwardToken")
            if not lines or next_token == token:
                return next_token or token
            token = next_token


class PipesSageMakerClient(dg.PipesClient):
    """Launch a SageMaker training job enriched with Dagster Pipes and wait for it.

    Use it directly as a resource with `dg.ResourceParam[PipesSageMakerClient]`, or through
    `SageMakerTrainer`. Clients are boto3 clients (tests pass ones aimed at a local server).

    Args:
        bucket: S3 bucket for the Pipes context and messages.
        sagemaker_client, s3_client, logs_client: boto3 clients in the job's region.
        pipes_prefix: key prefix for Pipes objects in the bucket.
        poll_interval_s: seconds between DescribeTrainingJob calls.
        message_interval_s: seconds between reads of Pipes message chunks.
        forward_termination: stop the job when the Dagster run is interrupted.
        forward_logs: forward the job's CloudWatch log lines to stdout.
    """

    def __init__(
        self,
        *,
        bucket: str,
        sagemaker_client: Any,
        s3_client: Any,
        logs_client: Any,
        pipes_prefix: str = "dagster-pipes/",
        poll_interval_s: float = 30.0,
        message_interval_s: float = 10.0,
        forward_termination: bool = True,
        forward_logs: bool = True,
    ) -> None:
        self.bucket = bucket
        self.sagemaker = sagemaker_client
        self.s3 = s3_client
        self.logs = logs_client
        self.pipes_prefix = pipes_prefix.strip("/") + "/"
        self.poll_interval_s = poll_interval_s
        self.message_interval_s = message_interval_s
        self.forward_termination = forward_termination
        self.forward_logs = forward_logs

    def run(  # pyright: ignore[reportIncompatibleMethodOverride]
        self,
        *,
        context: dg.AssetExecutionContext | dg.OpExecutionContext,
        create_training_job_params: Mapping[str, Any],
        extras: Mapping[str, Any] | None = None,
        price: Price | None = None,
    ) -> dg.PipesClientCompletedInvocation:
        """Create the training job, stream its Pipes messages and logs, and wait for its end.

        Args:
            context: the asset or op context.
            create_training_job_params: keyword arguments of boto3's `create_training_job`.
            extras: extra values for the external process's Pipes context.
            price: instance price, for the estimated and billed cost metadata.
        """
        params = copy.deepcopy(dict(create_training_job_params))
        job_name = params["TrainingJobName"]
        region = self.sagemaker.meta.region_name
        estimated = self._estimated_cost(params, price)
        message_reader = _PrefixedS3MessageReader(
            key_prefix=f"{self.pipes_prefix}messages/",
            bucket=self.bucket,
            client=self.s3,
            interval=self.message_interval_s,
        )
        context_injector = PipesS3ContextInjector(
            bucket=self.bucket, client=self.s3, key_prefix=f"{self.pipes_prefix}context/"
        )
        try:
            with dg.open_pipes_session(
                context=context,
                message_reader=message_reader,
                context_injector=context_injector,
                extras=dict(extras or {}),
            ) as session:
                params["Environment"] = self._environment(params, session.get_bootstrap_env_vars())
                params["Tags"] = [
                    *params.get("Tags", []),
                    *(
                        {"Key": key, "Value": value}
                        for key, value in session.default_remote_invocation_info.items()
                    ),
                ]
                self._create(context, params, estimated, price)
                context.log.info(
                    f"SageMaker training job {job_name}: {console_url(region, job_name)}"
                )
                try:
                    job, history = self._wait(context, params, message_reader)
                except (dg.DagsterExecutionInterruptedError, KeyboardInterrupt):
                    if self.forward_termination:
                        self._stop(context, job_name, "the Dagster run was interrupted")
                    raise
                except BaseException as error:
                    # Expired credentials, a network outage, a bug: nobody would follow the
                    # job any more, so it must not go on billing.
                    self._stop(context, job_name, f"waiting on it failed ({error!r})")
                    raise
        finally:
            self._delete_messages(context, message_reader.message_prefix)
        if job["TrainingJobStatus"] != "Completed":
            raise SageMakerJobError(
                f"SageMaker training job {job_name} ended {end_reason(job)} "
                f"[{console_url(region, job_name)}]",
                job,
            )
        context.log.info(f"SageMaker training job {job_name} completed")
        return dg.PipesClientCompletedInvocation(
            session, metadata=self.job_metadata(job, history, price, estimated)
        )

    # --- steps ------------------------------------------------------------------------------------

    @staticmethod
    def _estimated_cost(params: Mapping[str, Any], price: Price | None) -> float | None:
        """Upper bound: SageMaker bills at most MaxRuntimeInSeconds per instance."""
        if price is None:
            return None
        count = params["ResourceConfig"].get("InstanceCount", 1)
        return price.cost_usd(params["StoppingCondition"]["MaxRuntimeInSeconds"], count)

    @staticmethod
    def _environment(params: Mapping[str, Any], pipes_env: Mapping[str, str]) -> dict[str, str]:
        environment = {**params.get("Environment", {}), **pipes_env}
        too_long = [
            key for key, value in environment.items() if len(value) > ENVIRONMENT_VALUE_LIMIT
        ]
        if too_long:
            raise SageMakerJobError(
                f"Environment values over SageMaker's {ENVIRONMENT_VALUE_LIMIT}-character limit: "
                f"{', '.join(too_long)}"
            )
        return environment

    def _create(
        self,
        context: dg.AssetExecutionContext | dg.OpExecutionContext,
        params: dict[str, Any],
        estimated: float | None,
        price: Price | None,
    ) -> None:
        resource = params["ResourceConfig"]
        if estimated is not None and price is not None:
            context.log.info(
                f"Launching {resource['InstanceCount']} x {resource['InstanceType']}: at most "
                f"{params['StoppingCondition']['MaxRuntimeInSeconds']} s, estimated cost at most "
                f"${estimated:.2f} at ${price.usd_per_hour}/h ({price.source})"
            )
        try:
            self.sagemaker.create_training_job(**params)
        except ClientError as error:
            if error_code(error) == "ResourceInUse" and self._is_ours(params):
                # botocore retried a create whose first response was lost: the job is running.
                context.log.warning(
                    f"SageMaker training job {params['TrainingJobName']} already exists and "
                    "carries this run's Pipes context: the first create went through; following it"
                )
                return
            raise SageMakerJobError(
                f"SageMaker refused training job {params['TrainingJobName']}: "
                f"{error_code(error)}: {error.response.get('Error', {}).get('Message', '')}"
            ) from error

    def _is_ours(self, params: Mapping[str, Any]) -> bool:
        """Whether the existing job of this name was created from `params` (this Pipes session:
        its Environment holds the session's unique context and message locations)."""
        try:
            job = self.describe(params["TrainingJobName"])
        except ClientError:
            return False
        return job.get("Environment") == params.get("Environment") and job.get(
            "RoleArn"
        ) == params.get("RoleArn")

    def describe(self, job_name: str) -> dict[str, Any]:
        return self.sagemaker.describe_training_job(TrainingJobName=job_name)

    def _wait(
        self,
        context: dg.AssetExecutionContext | dg.OpExecutionContext,
        params: Mapping[str, Any],
        message_reader: PipesS3MessageReader,
    ) -> tuple[dict[str, Any], list[str]]:
        """Poll until the job ends; returns the final description and the statuses seen."""
        job_name = params["TrainingJobName"]
        stopping = params["StoppingCondition"]
        budget = stopping.get("MaxWaitTimeInSeconds", stopping["MaxRuntimeInSeconds"])
        deadline = time.monotonic() + budget + WAIT_SLACK_S
        history: list[str] = []
        forwarded: set[str] = set()  # log streams already followed
        while True:
            job = self.describe(job_name)
            state = f"{job['TrainingJobStatus']}/{job.get('SecondaryStatus', '')}"
            if not history or history[-1] != state:
                history.append(state)
                context.log.info(f"SageMaker training job {job_name}: {state}")
            if self.forward_logs:
                self._attach_log_streams(context, job_name, message_reader, forwarded)
            if job["TrainingJobStatus"] in TERMINAL_STATUSES:
                return job, history
            if time.monotonic() > deadline:
                self._stop(context, job_name, "it outlived its stopping condition")
                raise SageMakerJobError(
                    f"SageMaker training job {job_name} still {state} {budget + WAIT_SLACK_S} s "
                    "after launch; stopped it",
                    job,
                )
            time.sleep(self.poll_interval_s)

    def _attach_log_streams(
        self,
        context: dg.AssetExecutionContext | dg.OpExecutionContext,
        job_name: str,
        message_reader: PipesS3MessageReader,
        forwarded: set[str],
    ) -> None:
        """Forward every log stream of the job not yet forwarded: the first once SageMaker creates
        it, and each new one a spot restart opens. Logs are best effort: training goes on."""
        try:
            pages = self.logs.get_paginator("describe_log_streams").paginate(
                logGroupName=LOG_GROUP, logStreamNamePrefix=f"{job_name}/"
            )
            streams = [stream["logStreamName"] for page in pages for stream in page["logStreams"]]
        except ClientError as error:
            if error_code(error) != "ResourceNotFoundException":  # no job has logged yet
                context.log.warning(f"Not forwarding the job's CloudWatch logs now: {error}")
            return
        except BotoCoreError as error:
            context.log.warning(f"Not forwarding the job's CloudWatch logs now: {error}")
            return
        for stream in streams:
            if stream in forwarded:
                continue
            forwarded.add(stream)
            message_reader.add_log_reader(
                CloudWatchLogForwarder(
                    client=self.logs, log_stream=stream, interval_s=self.message_interval_s
                )
            )

    def _stop(
        self, context: dg.AssetExecutionContext | dg.OpExecutionContext, job_name: str, why: str
    ) -> None:
        context.log.warning(f"Stopping SageMaker training job {job_name}: {why}")
        try:
            self.sagemaker.stop_training_job(TrainingJobName=job_name)
        except (ClientError, BotoCoreError) as error:
            # Already ending (ValidationException) or unreachable: say so, keep the first error.
            context.log.warning(f"Could not stop SageMaker training job {job_name}: {error}")

    def _delete_messages(
        self, context: dg.AssetExecutionContext | dg.OpExecutionContext, prefix: str | None
    ) -> None:
        """Pipes message chunks are read by now; leave no per-run litter in the bucket."""
        if not prefix:
            return
        try:
            pages = self.s3.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=f"{prefix}/"
            )
            for page in pages:  # at most 1000 keys a page, DeleteObjects' own limit
                keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
                if keys:
                    self.s3.delete_objects(
                        Bucket=self.bucket, Delete={"Objects": keys, "Quiet": True}
                    )
        except ClientError as error:  # litter, not a training failure: say so and go on
            context.log.warning(
                f"Could not delete Pipes messages under s3://{self.bucket}/{prefix}: {error}"
            )

    # --- metadata ---------------------------------------------------------------------------------

    def reused_pool_of(self, job_name: str) -> str | None:
        """The job whose warm pool `job_name` started on, "" when it started cold, None when
        that cannot be read (ListTrainingJobs refused). SageMaker records the reuse on the pool's
        own job (WarmPoolStatus.ReusedByJob), so the newest handed-over pools are searched."""
        try:
            for status in HANDED_OVER_POOL_STATUSES:
                summaries = self.sagemaker.list_training_jobs(
                    WarmPoolStatusEquals=status,
                    SortBy="CreationTime",
                    SortOrder="Descending",
                    MaxResults=100,
                )["TrainingJobSummaries"]
                for summary in summaries:
                    if summary.get("WarmPoolStatus", {}).get("ReusedByJob") == job_name:
                        return summary["TrainingJobName"]
        except (ClientError, BotoCoreError):
            return None
        return ""

    def job_metadata(
        self,
        job: Mapping[str, Any],
        history: list[str],
        price: Price | None,
        estimated_cost: float | None,
    ) -> dict[str, Any]:
        """What the UI shows about the job on the materialization and the gate checks."""
        job_name = job["TrainingJobName"]
        region = self.sagemaker.meta.region_name
        resource = job.get("ResourceConfig", {})
        training_s = int(job.get("TrainingTimeInSeconds", 0))
        billable_s = int(job.get("BillableTimeInSeconds", training_s))
        count = int(resource.get("InstanceCount", 1))
        spot = bool(job.get("EnableManagedSpotTraining", False))
        transitions = job.get("SecondaryStatusTransitions") or []
        rows = [
            f"| {t.get('Status', '')} | {t.get('StartTime', '')} | {t.get('EndTime', '')} | "
            f"{t.get('StatusMessage', '')} |"
            for t in transitions
        ]
        metadata: dict[str, Any] = {
            "sagemaker_job_name": job_name,
            "sagemaker_job_url": dg.MetadataValue.url(console_url(region, job_name)),
            "sagemaker_status_history": dg.MetadataValue.md(
                "| status | start | end | message |\n| --- | --- | --- | --- |\n" + "\n".join(rows)
            ),
            "sagemaker_statuses_seen": " → ".join(history),
            "training_time_s": training_s,
            "billable_time_s": billable_s,
            "instance_type": resource.get("InstanceType", ""),
            "instance_count": count,
            "managed_spot": spot,
        }
        metadata.update(TimeSplit.from_transitions(transitions).as_metadata())
        metadata["billable_s"] = billable_s
        if resource.get("KeepAlivePeriodInSeconds"):
            reused_of = self.reused_pool_of(job_name)
            metadata["keep_alive_s"] = int(resource["KeepAlivePeriodInSeconds"])
            metadata["warm_pool_status"] = job.get("WarmPoolStatus", {}).get("Status", "none")
            metadata["warm_pool_reused"] = "unknown" if reused_of is None else bool(reused_of)
            if reused_of:
                metadata["reused_warm_pool_of"] = reused_of
        savings = spot_savings_percent(training_s, billable_s) if spot else None
        if savings is not None:
            metadata["spot_savings_pct"] = savings
        if price is not None and price.usd_per_hour is not None:
            metadata["price_usd_per_hour"] = price.usd_per_hour
            metadata["price_source"] = price.source
            metadata["estimated_cost_usd_max"] = estimated_cost
            metadata["cost_usd"] = price.cost_usd(billable_s, count)
        elif price is not None:  # unknown, never a made-up 0.0
            metadata["cost"] = f"unknown: {price.source} (set price_per_hour_usd)"
        return metadata
