"""The training job: `python -m v8_model.job.train` under the SageMaker container contract, Dagster
Pipes from inside it, the environment check and the subprocess lifetime.
"""
