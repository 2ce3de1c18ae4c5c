"""Dagster Pipes from inside the training process (the external side; `dagster_pipes` only).

Locally the context and messages travel through files; on SageMaker through S3, because a training
job's Environment values are limited to 512 characters. The launcher's parameters say which.
"""

from __future__ import annotations

import os

from dagster_pipes import (
    DAGSTER_PIPES_CONTEXT_ENV_VAR,
    DAGSTER_PIPES_MESSAGES_ENV_VAR,
    PipesContext,
    PipesDefaultContextLoader,
    PipesDefaultMessageWriter,
    PipesS3ContextLoader,
    PipesS3MessageWriter,
    decode_env_var,
    open_dagster_pipes,
)


def open_pipes() -> PipesContext:
    """Open the Pipes session, with S3 transports where the launcher's parameters name a bucket."""
    context_params = decode_env_var(os.environ[DAGSTER_PIPES_CONTEXT_ENV_VAR])
    raw_message_params = os.environ.get(DAGSTER_PIPES_MESSAGES_ENV_VAR)
    message_params = decode_env_var(raw_message_params) if raw_message_params else {}
    s3_client = None
    if "bucket" in context_params or "bucket" in message_params:
        import boto3

        s3_client = boto3.client("s3")
    context_loader = (
        PipesS3ContextLoader(client=s3_client)
        if "bucket" in context_params
        else PipesDefaultContextLoader()
    )
    message_writer = (
        PipesS3MessageWriter(client=s3_client)
        if "bucket" in message_params
        else PipesDefaultMessageWriter()
    )
    return open_dagster_pipes(context_loader=context_loader, message_writer=message_writer)
