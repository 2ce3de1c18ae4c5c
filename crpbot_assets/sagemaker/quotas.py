"""SageMaker's per-instance-type Service Quotas, looked up by quota code.

Quota names are display text (AWS has reworded them before); codes are stable identifiers. The
codes below come from a Service Quotas listing of ServiceCode `sagemaker` (ListAWSDefaultService
Quotas); the name each code must carry is checked on every lookup, so a wrong or re-assigned code
shows up as a WARN instead of a wrong answer. A type missing from the table is reported as not
checked, with the quota's name to look up in the console.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from botocore.exceptions import ClientError

from crpbot_assets.sagemaker.aws import error_code

SERVICE_CODE = "sagemaker"


class Usage(StrEnum):
    TRAINING = "training job usage"
    SPOT_TRAINING = "spot training job usage"
    WARM_POOL = "training warm pool usage"


# instance type → quota code per usage, for the instance types of the price table.
QUOTA_CODES: dict[str, dict[Usage, str]] = {
    "ml.g5.xlarge": {
        Usage.TRAINING: "L-B6D80D9C",
        Usage.SPOT_TRAINING: "L-DE07CBDF",
        Usage.WARM_POOL: "L-8E6F4665",
    },
    "ml.g5.2xlarge": {
        Usage.TRAINING: "L-2D6DEB3C",
        Usage.SPOT_TRAINING: "L-CAEE7DB7",
        Usage.WARM_POOL: "L-822C5A39",
    },
    "ml.g5.4xlarge": {
        Usage.TRAINING: "L-FE869B40",
        Usage.SPOT_TRAINING: "L-DB4D51CF",
        Usage.WARM_POOL: "L-88E48241",
    },
    "ml.g6.xlarge": {
        Usage.TRAINING: "L-56AE9D73",
        Usage.SPOT_TRAINING: "L-A886A53A",
        Usage.WARM_POOL: "L-99881E10",
    },
}


def quota_name(instance_type: str, usage: Usage) -> str:
    """The Service Quotas name of a per-type quota, e.g. 'ml.g5.4xlarge for training job usage'."""
    return f"{instance_type} for {usage.value}"


@dataclass(frozen=True)
class QuotaValue:
    code: str
    name: str  # as Service Quotas returned it
    value: float
    source: str  # "applied" or "AWS default"


def quota_code(instance_type: str, usage: Usage) -> str | None:
    return QUOTA_CODES.get(instance_type, {}).get(usage)


def read_quota(service_quotas: Any, code: str) -> QuotaValue:
    """The account's applied value of quota `code`, else AWS's default (never adjusted)."""
    try:
        quota = service_quotas.get_service_quota(ServiceCode=SERVICE_CODE, QuotaCode=code)["Quota"]
        source = "applied"
    except ClientError as error:
        if error_code(error) != "NoSuchResourceException":
            raise
        quota = service_quotas.get_aws_default_service_quota(
            ServiceCode=SERVICE_CODE, QuotaCode=code
        )["Quota"]
        source = "AWS default"
    return QuotaValue(code, quota.get("QuotaName", ""), float(quota["Value"]), source)
