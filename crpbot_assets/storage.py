"""The storage root as a Dagster resource.

The root is a local folder (the embedded default, standing in for S3) or `s3://bucket/prefix`;
`v8_model.storage` serves both through one interface with atomic writes.

The layout of the objects under the root is `v8_model.layout`.
"""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg
from pydantic import Field, PrivateAttr

from v8_model.layout import (  # noqa: F401 - the layout, re-exported for the assets
    PROMOTION_FILE,
    REPORT_JSON_KEY,
    REPORT_LINKED_MARKDOWN_KEY,
    REPORT_MARKDOWN_KEY,
    RUN_INFO_FILE,
    candles_key,
    features_key,
    model_folder,
    processor_key,
    production_folder,
    production_version_folder,
    staged_candles_key,
)
from v8_model.storage import Store, open_store

ROOT_ENV_VAR = "CRPBOT_ROOT"
REPO_ROOT = Path(__file__).resolve().parents[1]
# Inside the repo and git-ignored (/var/ in .gitignore), so a fresh clone starts clean.
LOCAL_DEFAULT_ROOT = REPO_ROOT / "var" / "crpbot"


def default_root() -> str:
    return os.environ.get(ROOT_ENV_VAR, str(LOCAL_DEFAULT_ROOT))


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
