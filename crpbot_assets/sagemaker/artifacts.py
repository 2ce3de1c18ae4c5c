"""A finished job's `model.tar.gz`: download it and verify it before anything is published.

Nothing reaches storage unless the archive opens, holds every file the entry point writes
(SYMBOL/weights.npz, SYMBOL/config.json, SYMBOL/processor_SYMBOL_v8.json, SYMBOL/metrics.json,
training_summary.json), and those files load with the library's own loaders (format version,
feature names, no unpickling). A missing or corrupt archive raises ArtifactError naming it.
"""

from __future__ import annotations

import json
import tarfile
import zlib
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from crpbot_assets.sagemaker.aws import error_code
from v8_model.data.processor import ProcessorLoadError, V8FeatureProcessor
from v8_model.layout import (
    CONFIG_FILE,
    METRICS_FILE,
    SUMMARY_FILE,
    WEIGHTS_FILE,
    processor_filename,
)
from v8_model.storage import parse_s3_uri

ARCHIVE_NAME = "model.tar.gz"


class ArtifactError(RuntimeError):
    """The job's model archive is missing, unreadable or incomplete; nothing was promoted."""


def required_members(symbol: str) -> list[str]:
    """What the entry point writes: SM_MODEL_DIR/{SYMBOL}/ files and the training summary."""
    names = (WEIGHTS_FILE, CONFIG_FILE, processor_filename(symbol), METRICS_FILE)
    return [f"{symbol}/{name}" for name in names] + [SUMMARY_FILE]


def download_archive(s3: Any, uri: str, target: Path) -> Path:
    bucket, key = parse_s3_uri(uri)
    try:
        s3.download_file(bucket, key, str(target))
    except ClientError as error:
        if error_code(error) in {"404", "NoSuchKey", "NotFound"}:
            raise ArtifactError(
                f"{uri} is missing: the job reported Completed but left no model archive; "
                "nothing was promoted"
            ) from error
        raise
    return target


def extract_verified(archive: Path, symbol: str, target_dir: Path) -> Path:
    """Extract `archive` into `target_dir` after checking it; returns target_dir/SYMBOL."""
    try:
        with tarfile.open(archive, mode="r:gz") as tar:
            names = {
                member.name.removeprefix("./") for member in tar.getmembers() if member.isfile()
            }
            missing = [name for name in required_members(symbol) if name not in names]
            if missing:
                raise ArtifactError(
                    f"{archive.name} lacks {', '.join(missing)} (it holds {sorted(names)}); "
                    "nothing was promoted"
                )
            tar.extractall(target_dir, filter="data")  # refuses links and paths leaving target
    except (tarfile.TarError, EOFError, zlib.error, OSError) as error:
        raise ArtifactError(
            f"{archive.name} is corrupt ({type(error).__name__}: {error}); nothing was promoted"
        ) from error
    # Loading the weights needs torch: imported here, so loading the Dagster definitions does not.
    from v8_model.model.net import ModelLoadError, load_model

    symbol_dir = target_dir / symbol
    try:
        load_model(symbol_dir)
        V8FeatureProcessor.load(symbol_dir / processor_filename(symbol))
        json.loads((symbol_dir / METRICS_FILE).read_text(encoding="utf-8"))
        summary = json.loads((target_dir / SUMMARY_FILE).read_text(encoding="utf-8"))
    except (ModelLoadError, ProcessorLoadError, ValueError) as error:
        raise ArtifactError(
            f"{archive.name} holds unusable files: {error}; nothing was promoted"
        ) from error
    if symbol not in summary.get("models", {}):
        raise ArtifactError(f"{SUMMARY_FILE} in {archive.name} has no model for {symbol}")
    return symbol_dir
