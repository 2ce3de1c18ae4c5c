"""Training on SageMaker GPUs: settings, request builder, Pipes client, trainer and preflight.

Import what you need from its module (the Dagster objects from
`crpbot_assets.sagemaker.dagster_objects`); this package imports nothing, so that the local
trainer's container emulation (`crpbot_assets.sagemaker.container`) loads without boto3 and the
SageMaker trainer. `docs/sagemaker.md` explains the design (plain boto3 launch, packaged source,
emulator-tested).
"""
