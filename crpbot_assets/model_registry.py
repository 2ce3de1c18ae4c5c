"""The MLflow model registry: every promotion a version of `crpbot-{SYMBOL}`, `champion` on it.

Each promotion registers a version of `crpbot-{SYMBOL}` (tags `production_version` and
`weights_sha256`) whose source is the training run's `model/` artifacts, and moves its `champion`
alias there; rollback moves the alias back. The project's `production/{SYMBOL}/current.json`
stays what serving reads; `crpbot status` compares the two (`read_champion`, `disagreement`).

Where the registry is, and how its calls are bounded and redacted, is `crpbot_assets.tracking`'s
(the runs' side). Nothing here fails a promotion: each function returns what was not done and why.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import dagster as dg

from crpbot_assets.tracking import (
    MODEL_ARTIFACTS,
    TrackingTarget,
    bounded_http,
    failure_reason,
    mlflow_client,
    registered_model_name,
    tracking_errors,
    tracking_target,
)

if TYPE_CHECKING:
    from mlflow import MlflowClient

CHAMPION_ALIAS = "champion"
PRODUCTION_VERSION_TAG = "production_version"
WEIGHTS_SHA256_TAG = "weights_sha256"


@dataclass(frozen=True)
class ChampionMove:
    """What a promotion or rollback did in the registry: the version, whether the alias moved."""

    target: str
    model: str
    version: str | None = None
    version_url: str | None = None
    alias_moved: bool = False
    problem: str | None = None  # why the version or the alias move is missing

    def metadata(self) -> dict[str, dg.MetadataValue]:
        metadata = {
            "mlflow_registered_model": dg.MetadataValue.text(self.model),
            "mlflow_champion_alias": dg.MetadataValue.text(
                "moved" if self.alias_moved else f"NOT moved: {self.problem}"
            ),
        }
        if self.version is not None:
            metadata["mlflow_model_version"] = dg.MetadataValue.text(self.version)
        if self.version_url is not None:
            metadata["mlflow_model_version_url"] = dg.MetadataValue.url(self.version_url)
        return metadata

    def line(self) -> str:
        """One sentence for the CLI and the step's log."""
        where = f"{self.model}@{CHAMPION_ALIAS}"
        if self.alias_moved:
            return f"MLflow {where} now points to version {self.version} ({self.target})"
        return (
            f"MLflow {where} was NOT moved ({self.target}): {self.problem}; "
            "`crpbot status` shows the registry and the pointer side by side"
        )


def register_promotion(
    symbol: str,
    *,
    storage_root: str,
    production_version: str,
    weights_sha256: str,
    fallback_source: str,
    mlflow_run_id: str | None,
    dagster_run_id: str,
) -> ChampionMove:
    """Register the promoted model as a new version of `crpbot-{symbol}` and point `champion`
    at it. The version's source is the training run's `model/` artifacts, or `fallback_source`
    (the promoted folder) when the training was not tracked."""
    target = tracking_target(storage_root)
    name = registered_model_name(symbol)
    tags = {
        PRODUCTION_VERSION_TAG: production_version,
        WEIGHTS_SHA256_TAG: weights_sha256,
        "dagster_run_id": dagster_run_id,
    }
    version = None
    try:
        with bounded_http():
            client = mlflow_client(target)
            _ensure_registered_model(client, name)
            source = fallback_source
            if mlflow_run_id is not None:
                source = f"{client.get_run(mlflow_run_id).info.artifact_uri}/{MODEL_ARTIFACTS}"
            version = client.create_model_version(
                name, source, run_id=mlflow_run_id, tags=tags
            ).version
            client.set_registered_model_alias(name, CHAMPION_ALIAS, str(version))
    except tracking_errors() as error:
        stage = "registering the version" if version is None else "moving the alias"
        return ChampionMove(
            target=target.shown,
            model=name,
            version=None if version is None else str(version),
            problem=f"{stage} failed: {failure_reason(error, target)}",
        )
    return ChampionMove(
        target=target.shown,
        model=name,
        version=str(version),
        version_url=target.model_url(name, str(version)),
        alias_moved=True,
    )


def _ensure_registered_model(client: MlflowClient, name: str) -> None:
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS, ErrorCode

    try:
        client.create_registered_model(
            name, description="crpbot V8 direction model; `champion` is what production serves"
        )
    except MlflowException as error:
        if error.error_code != ErrorCode.Name(RESOURCE_ALREADY_EXISTS):
            raise


def move_champion(symbol: str, *, storage_root: str, production_version: str) -> ChampionMove:
    """Point `champion` at the registered version tagged with `production_version` (rollback)."""
    target = tracking_target(storage_root)
    name = registered_model_name(symbol)
    if not target.exists():
        return ChampionMove(
            target=target.shown, model=name, problem="no MLflow store there yet (nothing tracked)"
        )
    try:
        with bounded_http():
            client = mlflow_client(target)
            found = client.search_model_versions(
                f"name = '{name}' and tags.{PRODUCTION_VERSION_TAG} = '{production_version}'"
            )
            if not found:
                return ChampionMove(
                    target=target.shown,
                    model=name,
                    problem=f"no registered version carries {PRODUCTION_VERSION_TAG}="
                    f"{production_version} (promoted while the registry was unreachable)",
                )
            version = str(max(int(item.version) for item in found))
            client.set_registered_model_alias(name, CHAMPION_ALIAS, version)
    except tracking_errors() as error:
        return ChampionMove(
            target=target.shown,
            model=name,
            problem=f"moving the alias failed: {failure_reason(error, target)}",
        )
    return ChampionMove(
        target=target.shown,
        model=name,
        version=version,
        version_url=target.model_url(name, version),
        alias_moved=True,
    )


@dataclass(frozen=True)
class Champion:
    """The registry's `champion` of one symbol, as `crpbot status` reads it."""

    model: str
    version: str | None = None  # None: no champion (or the registry could not be read)
    production_version: str | None = None
    unreadable: str | None = None


def read_champion(symbol: str, *, storage_root: str) -> tuple[TrackingTarget, Champion]:
    """The registry's champion of `symbol`; never creates a store that does not exist yet."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, ErrorCode

    target = tracking_target(storage_root)
    name = registered_model_name(symbol)
    if not target.exists():
        return target, Champion(model=name)
    try:
        with bounded_http():
            client = mlflow_client(target)
            version = client.get_model_version_by_alias(name, CHAMPION_ALIAS)
    except MlflowException as error:
        if error.error_code == ErrorCode.Name(RESOURCE_DOES_NOT_EXIST):
            return target, Champion(model=name)
        return target, Champion(model=name, unreadable=failure_reason(error, target))
    except tracking_errors() as error:
        return target, Champion(model=name, unreadable=failure_reason(error, target))
    return target, Champion(
        model=name,
        version=str(version.version),
        production_version=version.tags.get(PRODUCTION_VERSION_TAG),
    )


def disagreement(serving: str | None, champion: Champion) -> str | None:
    """Why the registry's champion and the production pointer disagree; None when they agree."""
    alias = f"{champion.model}@{CHAMPION_ALIAS}"
    if champion.unreadable is not None:
        return f"the registry could not be read ({champion.unreadable})"
    if champion.version is None:
        if serving is None:
            return None
        return (
            f"production serves {serving} but {alias} does not exist (its move failed or the "
            "registry was unreachable at promotion)"
        )
    if champion.production_version == serving:
        return None
    return (
        f"production serves {serving or 'nothing'} but {alias} is version {champion.version}, "
        f"tagged {PRODUCTION_VERSION_TAG}={champion.production_version} (serving reads the "
        "pointer; promote or roll back to move the alias)"
    )
