"""AWS clients for the SageMaker path, with botocore's retries as the one retry layer.

Clients come from a fresh boto3 Session each (sessions are not thread-safe; Pipes reads messages
and logs in threads), so the standard credential chain and AWS_ENDPOINT_URL (a local test server)
apply unchanged. The sessions share one botocore data loader, which caches the service models
and endpoint rules it parsed: with a loader of its own, every client parsed them again (0.12
against 0.015 CPU s a client, bench/aws_clients.py; SageMaker's model alone is 2.7 MB of JSON).

Retries are botocore's "standard" mode only: it retries throttling, transient 5xx answers and
connection errors inside each call, with jittered exponential backoff (capped at 20 s a wait). No
project loop wraps it, so a failing call costs one bounded backoff, not two nested ones. A
training run polls for hours and gets more attempts than a preflight, which a person waits for;
`AWS_MAX_ATTEMPTS` (the standard AWS setting, total attempts) overrides both.
"""

from __future__ import annotations

import functools
import os
from typing import Any

import boto3
import botocore.session
from botocore.config import Config
from botocore.exceptions import ClientError

# Total attempts a call gets. 10 means up to 9 throttling waits of rand(0, 1) x 1, 2, 4, 8, 16, 20,
# 20, 20, 20 s (botocore's backoff): at most 111 s, about a minute on average, while a two-hour job
# is polled. 3 is botocore's own default, for checks a person waits on (an endpoint that answers
# errors fails fast, not after minutes of retries).
TRAINING_ATTEMPTS = 10
PREFLIGHT_ATTEMPTS = 3


def error_code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def retry_config(attempts: int) -> Config:
    """botocore's standard retry mode with `attempts` in all, unless AWS_MAX_ATTEMPTS is set."""
    if os.environ.get("AWS_MAX_ATTEMPTS"):
        return Config(retries={"mode": "standard"})  # botocore reads AWS_MAX_ATTEMPTS itself
    return Config(retries={"mode": "standard", "total_max_attempts": attempts})


@functools.cache
def _shared_data_loader() -> Any:
    # A loader only reads botocore's data files and caches what it parsed: safe to share.
    return botocore.session.get_session().get_component("data_loader")


def new_session() -> boto3.session.Session:
    """A boto3 Session of its own that shares the process's parsed service models."""
    core = botocore.session.get_session()
    core.register_component("data_loader", _shared_data_loader())
    return boto3.session.Session(botocore_session=core)


def aws_client(service: str, region: str, attempts: int = TRAINING_ATTEMPTS) -> Any:
    """A boto3 client for `service` in `region`, with standard retries (`attempts` in all)."""
    return new_session().client(service, region_name=region, config=retry_config(attempts))


class AwsClients:
    """The clients one SageMaker run or preflight needs, created on first use.

    Tests pass prebuilt clients (e.g. one wrapped in botocore's Stubber) through `overrides`.
    """

    def __init__(
        self,
        region: str,
        overrides: dict[str, Any] | None = None,
        attempts: int = TRAINING_ATTEMPTS,
    ) -> None:
        self.region = region
        self.attempts = attempts
        self._clients: dict[str, Any] = dict(overrides or {})

    def get(self, service: str) -> Any:
        if service not in self._clients:
            self._clients[service] = aws_client(service, self.region, self.attempts)
        return self._clients[service]

    @property
    def s3(self) -> Any:
        return self.get("s3")

    @property
    def sts(self) -> Any:
        return self.get("sts")

    @property
    def iam(self) -> Any:
        return self.get("iam")

    @property
    def sagemaker(self) -> Any:
        return self.get("sagemaker")

    @property
    def logs(self) -> Any:
        return self.get("logs")

    @property
    def service_quotas(self) -> Any:
        return self.get("service-quotas")
