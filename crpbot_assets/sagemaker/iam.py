"""The IAM permissions the SageMaker path needs, derived from the calls the code makes.

Two principals:
- the *caller*: whoever runs Dagster or `crpbot` (launches, follows and stops jobs, uploads the
  source bundle, reads the job's logs, runs preflight);
- the *job role*: the role SageMaker assumes for the job (reads the channels, writes the model,
  checkpoints and Pipes messages, writes logs and metrics, pulls the image).

`OPERATION_ACTIONS` maps each AWS operation the caller's code sends to the IAM action it needs;
a test records every operation of a real (emulated) launch and preflight and checks each one is
in `caller_statements`. `docs/sagemaker.md` shows both policies; a test keeps it equal to these.
Preflight checks them with IAM's policy simulator (`simulate_denied`) and reads the role's trust
policy (`trusts_sagemaker`).
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from crpbot_assets.sagemaker.pipes_client import LOG_GROUP
from crpbot_assets.sagemaker.settings import SageMakerSettings

SAGEMAKER_PRINCIPAL = "sagemaker.amazonaws.com"

# (service, operation) → IAM action, where the action is not simply "<prefix>:<operation>";
# None = no permission needed.
OPERATION_ACTIONS: dict[tuple[str, str], str | None] = {
    ("sts", "GetCallerIdentity"): None,  # answers for any valid credentials
    ("s3", "HeadBucket"): "s3:ListBucket",
    ("s3", "HeadObject"): "s3:GetObject",
    ("s3", "ListObjectsV2"): "s3:ListBucket",
    ("s3", "DeleteObjects"): "s3:DeleteObject",
    ("s3", "CreateMultipartUpload"): "s3:PutObject",
    ("s3", "UploadPart"): "s3:PutObject",
    ("s3", "CompleteMultipartUpload"): "s3:PutObject",
}
SERVICE_PREFIXES = {"service-quotas": "servicequotas"}


def iam_action(service: str, operation: str) -> str | None:
    """The IAM action an AWS operation needs (botocore's service name and operation name)."""
    if (service, operation) in OPERATION_ACTIONS:
        return OPERATION_ACTIONS[(service, operation)]
    return f"{SERVICE_PREFIXES.get(service, service)}:{operation}"


@dataclass(frozen=True)
class Statement:
    """One policy statement: what it is for, its actions and resources (and a condition)."""

    sid: str
    actions: tuple[str, ...]
    resources: tuple[str, ...]
    condition: dict | None = None

    def document(self) -> dict:
        statement: dict = {
            "Sid": self.sid,
            "Effect": "Allow",
            "Action": list(self.actions),
            "Resource": list(self.resources) if len(self.resources) > 1 else self.resources[0],
        }
        if self.condition:
            statement["Condition"] = self.condition
        return statement


def _partition(settings: SageMakerSettings) -> str:
    return settings.role_arn.split(":")[1] if settings.role_account() else "aws"


def _bucket_arns(settings: SageMakerSettings) -> tuple[str, str]:
    partition = _partition(settings)
    return f"arn:{partition}:s3:::{settings.bucket}", f"arn:{partition}:s3:::{settings.bucket}/*"


def _log_group_arn(settings: SageMakerSettings, account: str) -> str:
    return f"arn:{_partition(settings)}:logs:{settings.region}:{account}:log-group:{LOG_GROUP}:*"


def caller_statements(settings: SageMakerSettings, account: str | None = None) -> list[Statement]:
    """What the machine running Dagster / `crpbot` needs."""
    account = account or settings.role_account() or "<account>"
    partition, region = _partition(settings), settings.region
    bucket, objects = _bucket_arns(settings)
    role = settings.role_arn or f"arn:{partition}:iam::{account}:role/<training-role>"
    return [
        Statement(
            "TrainingJobs",
            (
                "sagemaker:CreateTrainingJob",
                "sagemaker:AddTags",  # CreateTrainingJob with Tags
                "sagemaker:DescribeTrainingJob",
                "sagemaker:StopTrainingJob",
            ),
            (f"arn:{partition}:sagemaker:{region}:{account}:training-job/*",),
        ),
        Statement("ListTrainingJobs", ("sagemaker:ListTrainingJobs",), ("*",)),
        Statement(
            "PassTheTrainingRole",
            ("iam:PassRole",),
            (role,),
            {"StringEquals": {"iam:PassedToService": SAGEMAKER_PRINCIPAL}},
        ),
        Statement("PreflightReadsTheRole", ("iam:GetRole", "iam:SimulatePrincipalPolicy"), (role,)),
        Statement("Bucket", ("s3:ListBucket", "s3:GetBucketLocation"), (bucket,)),
        Statement(
            "StorageCodeAndPipes", ("s3:GetObject", "s3:PutObject", "s3:DeleteObject"), (objects,)
        ),
        Statement(
            "FollowTheJobsLogs",
            ("logs:DescribeLogStreams", "logs:GetLogEvents"),
            (_log_group_arn(settings, account),),
        ),
        Statement(
            "PreflightReadsQuotas",
            ("servicequotas:GetServiceQuota", "servicequotas:GetAWSDefaultServiceQuota"),
            ("*",),
        ),
    ]


def job_role_statements(settings: SageMakerSettings, account: str | None = None) -> list[Statement]:
    """What the training role needs (SageMaker assumes it to run the job)."""
    account = account or settings.role_account() or "<account>"
    bucket, objects = _bucket_arns(settings)
    return [
        # File-mode S3Prefix channels list the prefix; checkpoint sync deletes what the job deleted.
        Statement("ListChannels", ("s3:ListBucket",), (bucket,)),
        Statement(
            "ChannelsModelCheckpointsPipes",
            ("s3:GetObject", "s3:PutObject", "s3:DeleteObject"),
            (objects,),
        ),
        Statement(
            "JobLogs",
            (
                "logs:CreateLogGroup",
                "logs:CreateLogStream",
                "logs:PutLogEvents",
                "logs:DescribeLogStreams",
            ),
            (_log_group_arn(settings, account),),
        ),
        # The metric definitions (train:loss, ...) are published as CloudWatch metrics.
        Statement(
            "JobMetrics",
            ("cloudwatch:PutMetricData",),
            ("*",),
            {"StringEquals": {"cloudwatch:namespace": "/aws/sagemaker/TrainingJobs"}},
        ),
        # The AWS PyTorch training image lives in AWS's own ECR account.
        Statement(
            "PullTheTrainingImage",
            (
                "ecr:GetAuthorizationToken",
                "ecr:BatchCheckLayerAvailability",
                "ecr:GetDownloadUrlForLayer",
                "ecr:BatchGetImage",
            ),
            ("*",),
        ),
    ]


def policy_document(statements: list[Statement]) -> dict:
    return {"Version": "2012-10-17", "Statement": [s.document() for s in statements]}


def trust_policy() -> dict:
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": SAGEMAKER_PRINCIPAL},
                "Action": "sts:AssumeRole",
            }
        ],
    }


# --- reading IAM: the checks preflight makes with these statements -------------------------


def trusts_sagemaker(policy: Any) -> bool:
    """Whether an assume-role policy lets sagemaker.amazonaws.com assume the role."""
    if isinstance(policy, str):  # IAM returns it URL-encoded when botocore does not decode it
        policy = json.loads(urllib.parse.unquote(policy))
    statements = policy.get("Statement", [])
    for statement in [statements] if isinstance(statements, dict) else statements:
        actions = statement.get("Action", [])
        services = statement.get("Principal", {}).get("Service", [])
        actions = [actions] if isinstance(actions, str) else actions
        services = [services] if isinstance(services, str) else services
        if (
            statement.get("Effect") == "Allow"
            and SAGEMAKER_PRINCIPAL in services
            and any(action in {"sts:AssumeRole", "sts:*", "*"} for action in actions)
        ):
            return True
    return False


def iam_principal_arn(caller_arn: str) -> str | None:
    """The IAM ARN to simulate for the caller: a user or role as is, an assumed-role session as
    its role (without a path: STS does not return it), None for the account root."""
    parts = caller_arn.split(":", 5)
    if len(parts) < 6 or parts[5] == "root":
        return None
    partition, service, account, resource = parts[1], parts[2], parts[4], parts[5]
    if service == "sts" and resource.startswith("assumed-role/"):
        return f"arn:{partition}:iam::{account}:role/{resource.split('/')[1]}"
    if resource.startswith(("user/", "role/")):
        return f"arn:{partition}:iam::{account}:{resource}"
    return caller_arn  # e.g. a federated user: the simulator says whether it can answer


def simulate_denied(iam: Any, principal_arn: str, statements: Sequence[Statement]) -> list[str]:
    """The actions of `statements` that IAM's policy simulator denies to `principal_arn`."""
    denied = []
    for statement in statements:
        results = iam.simulate_principal_policy(
            PolicySourceArn=principal_arn,
            ActionNames=list(statement.actions),
            ResourceArns=list(statement.resources),
        )["EvaluationResults"]
        denied += [
            f"{result['EvalActionName']} on {result.get('EvalResourceName', '*')}"
            for result in results
            if result["EvalDecision"] != "allowed"
        ]
    return denied
