"""Every training an MLflow run (SPEC §11): where the store is, and how a run is logged.

Where: the standard `MLFLOW_TRACKING_URI` (an MLflow server, a database, or a SageMaker managed
MLflow tracking server's ARN through the `sagemaker-mlflow` plugin). Unset, the embedded default:
a SQLite store `mlflow/mlflow.db` and an artifact folder `mlflow/artifacts/` under the local
storage root (`<repo>/var/crpbot` when the storage root is on S3); `make mlflow` serves its UI.

Tracking happens on the orchestrator side, from what the training step published under
`models/{SYMBOL}/`, so local and SageMaker trainings are tracked alike and a training job needs
no network path to the tracking server. One training is one run in the experiment `crpbot-v8`:
the walk-forward folds are fold-prefixed metrics of that run (`fold_1/rank_ic`, ...), the last
fold being the main split whose model is the one trained and promoted.

Each promotion registers a model version and moves its `champion` alias: that is
`crpbot_assets.model_registry`'s, through this module's target, client and bounds.

Nothing here fails a training or a promotion: each public function returns an outcome saying
what was not tracked and why (credentials redacted). HTTP calls are bounded (timeout, retries)
unless the user set MLflow's own variables, and a training's logging stops at a deadline.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import dagster as dg
import requests
import sqlalchemy.exc
from botocore.exceptions import BotoCoreError, ClientError

from crpbot_assets.storage import LOCAL_DEFAULT_ROOT, REPO_ROOT, model_folder
from crpbot_assets.trainers import RunInfo
from v8_model.config import setting_text
from v8_model.evaluation.metrics import Evaluation
from v8_model.layout import METRICS_FILE, RUN_INFO_FILE
from v8_model.storage import Store, atomic_copy

if TYPE_CHECKING:
    from mlflow import MlflowClient

TRACKING_URI_ENV_VAR = "MLFLOW_TRACKING_URI"
# Where the MLflow UI of a non-HTTP store is served (`make mlflow`); links in metadata use it.
UI_URL_ENV_VAR = "CRPBOT_MLFLOW_UI_URL"
DEFAULT_UI_URL = "http://127.0.0.1:5000"
EXPERIMENT = "crpbot-v8"
EMBEDDED_FOLDER = "mlflow"
EMBEDDED_DB = "mlflow.db"
EMBEDDED_ARTIFACTS = "artifacts"
MODEL_ARTIFACTS = "model"  # the published model folder, as the run's artifact subfolder
FIGURE_ARTIFACTS = "figures"
RUN_ID_METADATA = "mlflow_run_id"  # on the `model` materialization; promotion registers from it
# MLflow's own HTTP settings, used unless the user set them: its defaults (120 s timeout, 7
# retries with exponential backoff) would hold a training for many minutes on a dead server.
# Telemetry off too: a training step should not call third parties the user did not name.
HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",
}
# No new call starts after this long: a slow server costs a training at most this plus one call.
TRACKING_BUDGET_SECONDS = 120.0
# A new embedded store starts as a copy of an empty one that MLflow created and migrated once per
# MLflow release (git-ignored, like the default storage root): running its schema migrations
# cost about a CPU second for every new storage root.
EMPTY_STORE_CACHE = REPO_ROOT / "var" / "cache"
# Environment variables whose values must never appear in a message.
SECRET_ENV_VARS = (
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_TRACKING_TOKEN",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
)


class TrackingTimeout(TimeoutError):
    """The tracking budget ran out before the next call."""


def tracking_errors() -> tuple[type[BaseException], ...]:
    """What a tracking call may raise that must not fail the caller: MLflow's own errors, the
    network and the disk, the SQL store, AWS (a SageMaker ARN), and the budget running out."""
    from mlflow.exceptions import MlflowException

    return (
        MlflowException,
        OSError,
        requests.RequestException,
        sqlalchemy.exc.SQLAlchemyError,
        BotoCoreError,
        ClientError,
        TrackingTimeout,
    )


@dataclass(frozen=True)
class TrackingTarget:
    """Where runs and models go: the tracking URI and, for the embedded default, its folder."""

    uri: str
    embedded_folder: Path | None  # the SQLite store's folder; None when MLFLOW_TRACKING_URI set

    @property
    def shown(self) -> str:
        """The URI without credentials, for messages and metadata."""
        return redact_uri(self.uri)

    @property
    def ui_url(self) -> str | None:
        """The MLflow UI's base URL: the server itself, or `make mlflow`'s for a local store."""
        scheme = urlsplit(self.uri).scheme
        if scheme in ("http", "https"):
            parts = urlsplit(self.uri)
            return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2])).rstrip("/")
        if scheme in ("sqlite", "file", "") or self.embedded_folder is not None:
            return os.environ.get(UI_URL_ENV_VAR, DEFAULT_UI_URL).rstrip("/")
        return None  # a database server or an ARN: its UI is wherever its operator serves it

    @property
    def artifact_location(self) -> str | None:
        """The experiment's artifact folder for the embedded default; a server chooses its own."""
        if self.embedded_folder is None:
            return None
        return (self.embedded_folder / EMBEDDED_ARTIFACTS).as_uri()

    def exists(self) -> bool:
        """False only for an embedded store that nothing has written yet."""
        return self.embedded_folder is None or (self.embedded_folder / EMBEDDED_DB).is_file()

    def run_url(self, experiment_id: str, run_id: str) -> str | None:
        base = self.ui_url
        return None if base is None else f"{base}/#/experiments/{experiment_id}/runs/{run_id}"

    def model_url(self, name: str, version: str) -> str | None:
        base = self.ui_url
        return None if base is None else f"{base}/#/models/{name}/versions/{version}"


def tracking_target(storage_root: str) -> TrackingTarget:
    """MLFLOW_TRACKING_URI when set, else the SQLite store under the local storage root."""
    uri = os.environ.get(TRACKING_URI_ENV_VAR, "").strip()
    if uri:
        return TrackingTarget(uri=uri, embedded_folder=None)
    local_root = LOCAL_DEFAULT_ROOT if "://" in storage_root else Path(storage_root)
    folder = local_root.resolve() / EMBEDDED_FOLDER
    return TrackingTarget(uri=f"sqlite:///{folder / EMBEDDED_DB}", embedded_folder=folder)


def registered_model_name(symbol: str) -> str:
    return f"crpbot-{symbol}"


def redact_uri(uri: str) -> str:
    """`uri` without a user name or password in it."""
    parts = urlsplit(uri)
    if not parts.netloc or "@" not in parts.netloc:
        return uri
    return urlunsplit(parts._replace(netloc="***@" + parts.netloc.rpartition("@")[2]))


def redact(text: str, target: TrackingTarget) -> str:
    """`text` with the target's credentials and secret environment values replaced by ***."""
    secrets = [os.environ.get(name, "") for name in SECRET_ENV_VARS]
    userinfo = urlsplit(target.uri).netloc.rpartition("@")[0]
    secrets += [userinfo, *userinfo.split(":")] if userinfo else []
    text = text.replace(target.uri, target.shown)
    for secret in sorted(filter(None, secrets), key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def failure_reason(error: BaseException, target: TrackingTarget) -> str:
    message = " ".join(str(error).split())  # MLflow's messages span lines
    return redact(f"{type(error).__name__}: {message}", target)[:600]


@contextlib.contextmanager
def bounded_http() -> Iterator[None]:
    """MLflow's HTTP settings at HTTP_DEFAULTS while inside, unless the user set them."""
    added = [name for name in HTTP_DEFAULTS if name not in os.environ]
    for name in added:
        os.environ[name] = HTTP_DEFAULTS[name]
    try:
        yield
    finally:
        for name in added:
            os.environ.pop(name, None)


class Deadline:
    """Raises TrackingTimeout from `check` once `seconds` have passed since it was made."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._end = time.monotonic() + seconds

    def check(self, before: str) -> None:
        if time.monotonic() > self._end:
            raise TrackingTimeout(
                f"the tracking budget of {self.seconds:g} s ran out before {before}"
            )


@contextlib.contextmanager
def _embedded_lock(folder: Path) -> Iterator[None]:
    """One process at a time opens the embedded store: symbols train in parallel processes, and
    two first writers would both create the SQLite file and add MLflow's default experiment."""
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / ".lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def empty_store() -> Path:
    """The SQLite file MLflow leaves on an empty database (its tables, migrated to this release's
    schema; no experiment yet), made on first use and then kept."""
    import mlflow
    from mlflow.store.db.utils import _initialize_tables  # what MLflow runs on a new database

    path = EMPTY_STORE_CACHE / f"mlflow-{mlflow.__version__}-empty.db"
    if path.is_file():
        return path
    with tempfile.TemporaryDirectory() as scratch:
        made = Path(scratch) / EMBEDDED_DB
        engine = sqlalchemy.create_engine(f"sqlite:///{made}")
        try:
            _initialize_tables(engine)
        finally:
            engine.dispose()
        atomic_copy(made, path)  # whole or absent: processes may make it at the same time
    return path


def _create_embedded_store(folder: Path) -> None:
    """A copy of the empty store at `folder`'s database, if it has none. MLflow then adds its
    default experiment, with this store's own settings, when the store is first opened."""
    database = folder / EMBEDDED_DB
    if not database.exists():
        atomic_copy(empty_store(), database)


def mlflow_client(target: TrackingTarget) -> MlflowClient:
    from mlflow import MlflowClient

    if target.embedded_folder is None:
        return MlflowClient(tracking_uri=target.uri, registry_uri=target.uri)
    with _embedded_lock(target.embedded_folder):
        _create_embedded_store(target.embedded_folder)
        # Opening the tracking store adds MLflow's default experiment to a new file, and the
        # first registry call opens the registry's: one process at a time.
        client = MlflowClient(tracking_uri=target.uri, registry_uri=target.uri)
        client.search_registered_models(max_results=1)
    return client


def _experiment_id(client: MlflowClient, target: TrackingTarget) -> str:
    from mlflow.exceptions import MlflowException

    experiment = client.get_experiment_by_name(EXPERIMENT)
    if experiment is not None:
        return experiment.experiment_id
    try:
        return client.create_experiment(EXPERIMENT, artifact_location=target.artifact_location)
    except MlflowException:
        # Another symbol's process created it between the two calls.
        experiment = client.get_experiment_by_name(EXPERIMENT)
        if experiment is None:
            raise
        return experiment.experiment_id


# --- what a training run records ------------------------------------------------------------


def training_params(evaluation: Evaluation, run_info: RunInfo, profile: str) -> dict[str, str]:
    """Every TrainConfig field under its own name, then the profile, data range and where it ran."""
    settings = evaluation.hyperparameters.to_dict()
    params = {name: setting_text(value) for name, value in settings.items()}
    params.update(
        profile=profile,
        symbol=evaluation.symbol,
        data_first_timestamp=evaluation.first_timestamp,
        data_last_timestamp=evaluation.last_timestamp,
        data_rows=str(evaluation.rows),
        test_start=evaluation.test_start,
        trainer=run_info.trainer,
        job_name=run_info.job_name,
        instance_type=run_info.instance_type,
        training_device=evaluation.device,
    )
    if evaluation.worth is not None:
        for fold in evaluation.worth.folds:
            params[f"fold_{fold.fold}/test_start"] = fold.test_start
            params[f"fold_{fold.fold}/test_end"] = fold.test_end
    return params


def training_metrics(evaluation: Evaluation, run_info: RunInfo) -> dict[str, float]:
    """The run's single-valued metrics: test figures, worth, each gate, each fold, the time."""
    metrics: dict[str, float] = {
        "test_accuracy": evaluation.test_accuracy,
        "baseline_accuracy": evaluation.baseline_accuracy,
        "macro_f1": evaluation.macro_f1,
        "baseline_macro_f1": evaluation.baseline_macro_f1,
        "ece": evaluation.ece,
        "test_rows": evaluation.test_rows,
        "best_epoch": evaluation.best_epoch,
        "best_val_loss": evaluation.best_val_loss,
        "epochs_run": evaluation.epochs_run,
        "train_seconds": evaluation.train_seconds,
        "wall_seconds": run_info.wall_seconds,
        "all_gates_passed": float(evaluation.all_gates_passed),
    }
    if run_info.cost_usd is not None:
        metrics["cost_usd"] = run_info.cost_usd
    for name, gate in evaluation.gates.items():
        metrics[f"gate_{name}"] = gate.value
        metrics[f"gate_{name}_passed"] = float(gate.passed)
    worth = evaluation.worth
    if worth is not None:
        skill = worth.skill
        metrics.update(
            rank_ic=skill.rank_ic,
            rank_ic_ci_low=skill.ci_low,
            rank_ic_ci_high=skill.ci_high,
            p_value=skill.p_value,
            skill_passed=float(skill.passed),
        )
        metrics.update(_backtest_numbers(asdict(worth.backtest)))
        for fold in worth.folds:
            prefix = f"fold_{fold.fold}/"
            metrics[f"{prefix}rank_ic"] = fold.rank_ic
            metrics[f"{prefix}confidence_threshold"] = fold.confidence_threshold
            metrics[f"{prefix}train_rows"] = fold.train_rows
            metrics[f"{prefix}test_rows"] = fold.test_rows
            for name, value in _backtest_numbers(asdict(fold.backtest)).items():
                metrics[prefix + name] = value
    return metrics


def _backtest_numbers(figures: Mapping[str, Any]) -> dict[str, float]:
    return {name: float(value) for name, value in figures.items() if name != "note"}


def epoch_histories(evaluation: Evaluation) -> dict[str, list[tuple[int, float]]]:
    """Per-epoch step histories: name → [(epoch, value), ...]."""
    history = evaluation.history or []
    return {
        name: [(stats.epoch, float(getattr(stats, name))) for stats in history]
        for name in ("train_loss", "val_loss", "val_acc", "learning_rate")
    }


def dagster_run_url(dagster_run_id: str) -> str:
    from crpbot_assets.alerts import DEFAULT_UI_URL as DAGSTER_UI_URL
    from crpbot_assets.alerts import UI_URL_ENV_VAR as DAGSTER_UI_ENV_VAR

    base = os.environ.get(DAGSTER_UI_ENV_VAR, DAGSTER_UI_URL).rstrip("/")
    return f"{base}/runs/{dagster_run_id}"


@dataclass(frozen=True)
class TrackedRun:
    """What tracking a training did: its MLflow run, or why it was not tracked."""

    target: str  # the tracking URI, credentials redacted
    run_id: str | None = None
    run_url: str | None = None
    not_tracked: str | None = None

    def metadata(self) -> dict[str, dg.MetadataValue]:
        """For the `model` materialization: the run id and its link, or the reason."""
        metadata = {"mlflow_tracking_uri": dg.MetadataValue.text(self.target)}
        if self.run_id is None:
            return {**metadata, "mlflow_not_tracked": dg.MetadataValue.text(self.not_tracked or "")}
        metadata[RUN_ID_METADATA] = dg.MetadataValue.text(self.run_id)
        if self.run_url is not None:
            metadata["mlflow_run"] = dg.MetadataValue.url(self.run_url)
        return metadata


def track_training(
    store: Store,
    symbol: str,
    *,
    storage_root: str,
    profile: str,
    dagster_run_id: str,
    figures: Mapping[str, bytes],
    budget_seconds: float = TRACKING_BUDGET_SECONDS,
) -> TrackedRun:
    """Log the training published under `models/{symbol}/` as one MLflow run; never raises for
    an unreachable, slow or refusing tracking store (the outcome says what was not tracked)."""
    target = tracking_target(storage_root)
    folder = model_folder(symbol)
    try:
        evaluation = Evaluation.from_json(
            store.read_text(f"{folder}/{METRICS_FILE}"),
            source=store.uri(f"{folder}/{METRICS_FILE}"),
        )
        run_info = RunInfo.from_dict(json.loads(store.read_text(f"{folder}/{RUN_INFO_FILE}")))
    except (FileNotFoundError, ValueError, TypeError) as error:  # JSONDecodeError is a ValueError
        return TrackedRun(
            target=target.shown,
            not_tracked=f"not tracked in MLflow: the training's record is unreadable ({error})",
        )
    deadline = Deadline(budget_seconds)
    run_id = None
    try:
        with bounded_http():
            client = mlflow_client(target)
            deadline.check("finding the experiment")
            experiment_id = _experiment_id(client, target)
            deadline.check("creating the run")
            run = client.create_run(
                experiment_id,
                run_name=run_info.job_name,
                tags={
                    "symbol": symbol,
                    "trainer": run_info.trainer,
                    "dagster_run_id": dagster_run_id,
                    "dagster_run_url": dagster_run_url(dagster_run_id),
                    "all_gates_passed": str(evaluation.all_gates_passed).lower(),
                },
            )
            run_id = run.info.run_id
            _log_run(client, run_id, evaluation, run_info, profile, deadline)
            _log_artifacts(client, run_id, store, folder, figures, deadline)
            deadline.check("closing the run")
            client.set_terminated(run_id, "FINISHED")
    except tracking_errors() as error:
        reason = f"not tracked in MLflow ({target.shown}): {failure_reason(error, target)}"
        if run_id is not None:
            reason += _close_failed(target, run_id)
        return TrackedRun(target=target.shown, not_tracked=reason)
    return TrackedRun(
        target=target.shown, run_id=run_id, run_url=target.run_url(experiment_id, run_id)
    )


def _close_failed(target: TrackingTarget, run_id: str) -> str:
    """Mark a half-logged run FAILED; says what became of it, for the not-tracked reason."""
    from mlflow import MlflowClient

    try:
        with bounded_http():
            MlflowClient(tracking_uri=target.uri).set_terminated(run_id, "FAILED")
    except tracking_errors() as error:
        return f"; run {run_id} stays incomplete ({failure_reason(error, target)})"
    return f"; run {run_id} holds what was logged before and is marked FAILED"


def _log_run(
    client: MlflowClient,
    run_id: str,
    evaluation: Evaluation,
    run_info: RunInfo,
    profile: str,
    deadline: Deadline,
) -> None:
    from mlflow.entities import Metric, Param

    now = int(time.time() * 1000)
    params = [
        Param(name, value) for name, value in training_params(evaluation, run_info, profile).items()
    ]
    metrics = [
        Metric(name, value, now, 0)
        for name, value in training_metrics(evaluation, run_info).items()
    ]
    metrics += [
        Metric(name, value, now, step)
        for name, steps in epoch_histories(evaluation).items()
        for step, value in steps
    ]
    deadline.check("logging params and metrics")
    client.log_batch(run_id, metrics=metrics, params=params)  # the client splits big batches


def _log_artifacts(
    client: MlflowClient,
    run_id: str,
    store: Store,
    folder: str,
    figures: Mapping[str, bytes],
    deadline: Deadline,
) -> None:
    """The published model folder under `model/` and the figures under `figures/`."""
    with tempfile.TemporaryDirectory(prefix="crpbot-mlflow-") as tmp:
        model_dir = Path(tmp) / MODEL_ARTIFACTS
        for key in store.list_keys(folder):
            store.download_file(key, model_dir / key.removeprefix(f"{folder}/"))
        figures_dir = Path(tmp) / FIGURE_ARTIFACTS
        figures_dir.mkdir()
        for name, png in figures.items():
            (figures_dir / f"{name}.png").write_bytes(png)
        for subfolder in (model_dir, figures_dir):
            deadline.check(f"uploading {subfolder.name}/")
            client.log_artifacts(run_id, str(subfolder), subfolder.name)


# --- where the runs are ---------------------------------------------------------------------


def where_line(storage_root: str) -> str:
    """One line for the main command's summary: where the runs are and how to look at them."""
    target = tracking_target(storage_root)
    if target.embedded_folder is not None:
        return (
            f"MLflow runs: {target.shown} (experiment {EXPERIMENT}); browse them with "
            f"`make mlflow` (mlflow ui on {DEFAULT_UI_URL})"
        )
    shown = target.ui_url or target.shown
    return f"MLflow runs: {shown} (experiment {EXPERIMENT})"


# MLflow's server starts job runners (huey consumers, one process per job type) for its GenAI
# jobs, which crpbot's runs never submit: about 2.7 CPU s each at every start, for nothing.
SERVER_WITHOUT_JOBS = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


def serve_command(storage_root: str, port: int) -> tuple[TrackingTarget, list[str]]:
    """The `mlflow server` command that serves the embedded store's UI on 127.0.0.1."""
    target = tracking_target(storage_root)
    if target.embedded_folder is None:
        raise ValueError(
            f"{TRACKING_URI_ENV_VAR} points at {target.shown}: open that server's UI instead "
            f"(unset {TRACKING_URI_ENV_VAR} to browse the embedded store)"
        )
    target.embedded_folder.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", target.uri]
    # Experiments made by the UI keep their artifacts beside the training runs' (crpbot's own
    # experiment names its artifact folder itself).
    command += ["--artifacts-destination", str(target.embedded_folder / EMBEDDED_ARTIFACTS)]
    # One worker: a UI for one user, and uvicorn's supervisor kills workers slow to start.
    return target, [*command, "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]


def main(argv: list[str] | None = None) -> int:
    """`make mlflow`: serve the embedded store's MLflow UI on 127.0.0.1 (replaces this process)."""
    import argparse

    from crpbot_assets.storage import default_root

    parser = argparse.ArgumentParser(
        prog="python -m crpbot_assets.tracking", description=main.__doc__
    )
    parser.add_argument("--port", type=int, default=urlsplit(DEFAULT_UI_URL).port)
    parser.add_argument("--root", help="storage root, a folder or s3://bucket/prefix [CRPBOT_ROOT]")
    args = parser.parse_args(argv)
    try:
        target, command = serve_command(args.root or default_root(), args.port)
    except ValueError as error:
        print(f"make mlflow: {error}", file=sys.stderr)
        return 2
    print(f"MLflow UI of {target.shown} on http://127.0.0.1:{args.port}", flush=True)
    os.execve(command[0], command, {**SERVER_WITHOUT_JOBS, **os.environ})  # never returns


if __name__ == "__main__":
    raise SystemExit(main())
