"""The storage root as a Dagster resource, and the layout of the objects under it.

The root is a local folder (the embedded default, standing in for S3) or `s3://bucket/prefix`;
`v8_model.storage` serves both through one interface with atomic writes.

Layout under the root (keys as the seed names them where it names them):

    candles/{SYMBOL}_candles.parquet      validated 1-minute candles
    data/{SYMBOL}_features.parquet        the training channel's file
    processors/processor_{SYMBOL}_v8.json the fitted processor (the processor channel's file)
    models/{SYMBOL}/...                   the entry point's SM_MODEL_DIR/{SYMBOL}/ + run_info.json
    production/{SYMBOL}/...               the promoted model + promotion.json
    reports/gate_report.md, .json         the summary over all symbols
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import dagster as dg
import pandas as pd
from pydantic import Field, PrivateAttr

from v8_model.entrypoint import features_filename
from v8_model.processor import processor_filename
from v8_model.storage import Store, open_store

ROOT_ENV_VAR = "CRPBOT_ROOT"
REPO_ROOT = Path(__file__).resolve().parents[1]
# Inside the repo and git-ignored (/var/ in .gitignore), so a fresh clone starts clean.
LOCAL_DEFAULT_ROOT = REPO_ROOT / "var" / "crpbot"

RUN_INFO_FILE = "run_info.json"
PROMOTION_FILE = "promotion.json"
REPORT_MARKDOWN_KEY = "reports/gate_report.md"
REPORT_JSON_KEY = "reports/gate_report.json"


def default_root() -> str:
    return os.environ.get(ROOT_ENV_VAR, str(LOCAL_DEFAULT_ROOT))


def candles_key(symbol: str) -> str:
    return f"candles/{symbol}_candles.parquet"


def features_key(symbol: str) -> str:
    return f"data/{features_filename(symbol)}"


def processor_key(symbol: str) -> str:
    return f"processors/{processor_filename(symbol)}"


def model_folder(symbol: str) -> str:
    return f"models/{symbol}"


def production_folder(symbol: str) -> str:
    return f"production/{symbol}"


class StorageResource(dg.ConfigurableResource):
    """Where every artifact lives: a local directory or `s3://bucket/prefix` (env CRPBOT_ROOT)."""

    root: str = Field(
        default_factory=default_root,
        description="local directory or s3://bucket/prefix; default: env CRPBOT_ROOT, else "
        "<repo>/var/crpbot",
    )
    _store: Store | None = PrivateAttr(default=None)

    @property
    def store(self) -> Store:
        if self._store is None:  # one client per resource instance, not per call
            self._store = open_store(self.root)
        return self._store

    def uri(self, key: str) -> str:
        return self.store.uri(key)

    def read_parquet(self, key: str) -> pd.DataFrame:
        return pd.read_parquet(io.BytesIO(self.store.read_bytes(key)))

    def write_parquet(self, key: str, frame: pd.DataFrame) -> int:
        """Write `frame` atomically; returns the size in bytes."""
        buffer = io.BytesIO()
        frame.to_parquet(buffer, index=False)
        data = buffer.getvalue()
        self.store.write_bytes(key, data)
        return len(data)
