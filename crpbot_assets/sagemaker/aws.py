"""AWS clients for the SageMaker path, and bounded retries on throttling.

Clients come from a fresh boto3 Session each (sessions are not thread-safe; Pipes reads messages
and logs in threads), so the standard credential chain and AWS_ENDPOINT_URL (a local test server)
apply unchanged. Two layers of retries, on purpose:
- botocore's "standard" retry mode retries throttling and transient errors inside each HTTP call;
- `call_with_retries` adds a longer, bounded backoff around the calls a two-hour job depends on
  (create, describe, stop), so a burst of throttling during polling never fails a training run.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

BOTOCORE_CONFIG = Config(retries={"mode": "standard", "max_attempts": 8})

THROTTLING_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "RequestThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "SlowDown",
    }
)

T = TypeVar("T")


def error_code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def is_throttling(error: ClientError) -> bool:
    return error_code(error) in THROTTLING_CODES


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter on throttling: attempts in all, delays capped."""

    attempts: int = 8
    base_delay_s: float = 1.0
    max_delay_s: float = 60.0

    def delay_s(self, attempt: int) -> float:
        return min(self.max_delay_s, self.base_delay_s * 2 ** (attempt - 1)) * random.uniform(
            0.5, 1.0
        )


DEFAULT_RETRY = RetryPolicy()


def call_with_retries(
    call: Callable[..., T],
    policy: RetryPolicy = DEFAULT_RETRY,
    on_retry: Callable[[ClientError, float], None] | None = None,
    **kwargs: Any,
) -> T:
    """`call(**kwargs)`, retried on throttling errors only, at most `policy.attempts` times."""
    for attempt in range(1, policy.attempts + 1):
        try:
            return call(**kwargs)
        except ClientError as error:
            if not is_throttling(error) or attempt == policy.attempts:
                raise
            delay = policy.delay_s(attempt)
            if on_retry is not None:
                on_retry(error, delay)
            time.sleep(delay)
    raise AssertionError("unreachable: the last attempt returns or raises")


def aws_client(service: str, region: str) -> Any:
    """A boto3 client for `service` in `region`, with standard retries."""
    return boto3.session.Session().client(service, region_name=region, config=BOTOCORE_CONFIG)


class AwsClients:
    """The clients one SageMaker run or preflight needs, created on first use.

    Tests pass prebuilt clients (e.g. one wrapped in botocore's Stubber) through `overrides`.
    """

    def __init__(self, region: str, overrides: dict[str, Any] | None = None) -> None:
        self.region = region
        self._clients: dict[str, Any] = dict(overrides or {})

    def get(self, service: str) -> Any:
        if service not in self._clients:
            self._clients[service] = aws_client(service, self.region)
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
