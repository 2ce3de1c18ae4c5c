"""The project's own source, packaged for the training job's `code` channel.

The original launcher never told SageMaker where its code was ("train.py not found"). Here the
job receives, as an ordinary input channel, exactly the source this process runs:

    <code channel>/bootstrap.py            container_bootstrap.py (the ContainerEntrypoint)
    <code channel>/src/v8_model/...        the ML library and `python -m v8_model.job.train`
    <code channel>/src/dagster_pipes/...   Pipes' external side, the orchestrator's exact version
    <code channel>/MANIFEST.json           file list and digest, uploaded last

The S3 prefix is content-addressed (`<work>/code/<digest>/`): identical source is uploaded once,
and concurrent jobs built from different source never overwrite each other's files.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path
from typing import Any

from crpbot_assets.sagemaker import container_bootstrap
from crpbot_assets.sagemaker.settings import SageMakerSettings
from v8_model.job.contract import CODE_CHANNEL, CONTAINER

BUNDLED_PACKAGES = ("v8_model", "dagster_pipes")
BOOTSTRAP_NAME = "bootstrap.py"
MANIFEST_NAME = "MANIFEST.json"
# Where SageMaker puts the code channel inside the container (File mode).
CONTAINER_CODE_DIR = str(CONTAINER.channel_dir(CODE_CHANNEL))


def _package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)  # finds the package without importing torch etc.
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"package {package!r} is not installed; it must ship with the job")
    return Path(next(iter(spec.submodule_search_locations)))


def bundle_files() -> dict[str, bytes]:
    """Relative path in the channel → content, for every file the job needs."""
    files = {BOOTSTRAP_NAME: Path(container_bootstrap.__file__).read_bytes()}
    for package in BUNDLED_PACKAGES:
        root = _package_dir(package)
        for path in sorted(root.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
                files[f"src/{package}/{path.relative_to(root).as_posix()}"] = path.read_bytes()
    return files


def bundle_digest(files: dict[str, bytes]) -> str:
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(name.encode() + b"\0" + hashlib.sha256(files[name]).digest())
    return digest.hexdigest()[:16]


class CodeBundle:
    """The bundle's files and where they live (or will live) in S3."""

    def __init__(self, settings: SageMakerSettings, files: dict[str, bytes] | None = None) -> None:
        self.files = bundle_files() if files is None else files
        self.digest = bundle_digest(self.files)
        self.bucket = settings.bucket
        self.key_prefix = settings.work_key("code", self.digest) + "/"

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key_prefix}"

    def upload(self, s3: Any) -> str:
        """Upload unless this digest is already there (the manifest goes last); returns the URI."""
        manifest_key = self.key_prefix + MANIFEST_NAME
        listed = s3.list_objects_v2(Bucket=self.bucket, Prefix=manifest_key, MaxKeys=1)
        if listed.get("KeyCount", 0):
            return self.uri
        for name, content in self.files.items():
            s3.put_object(Bucket=self.bucket, Key=self.key_prefix + name, Body=content)
        manifest = {"digest": self.digest, "files": sorted(self.files)}
        s3.put_object(
            Bucket=self.bucket,
            Key=manifest_key,
            Body=json.dumps(manifest, indent=1, allow_nan=False),
        )
        return self.uri
