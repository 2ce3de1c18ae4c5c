"""Tracking against a real `mlflow server` on 127.0.0.1, and against one that is down, erroring
or too slow: training and promotion go on, the step says what was not tracked and why.

One module-wide scenario on a single symbol, in order: a full run tracked on the server; a
retraining while the server is down (the URI carries a password that must appear nowhere); one
while a server answers every request with HTTP 500; then one on the real server again, tracked
normally. `crpbot status` reads the server between them.
"""

from __future__ import annotations

import http.server
import io
import socket
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stdout
from pathlib import Path

import dagster as dg
import pytest
from conftest import serve_http
from helpers import metadata_of, tracked_run_config
from mlflow import MlflowClient
from servers import free_port, mlflow_server

from crpbot_assets.cli import main as crpbot
from crpbot_assets.definitions import defs
from crpbot_assets.model_registry import CHAMPION_ALIAS, register_promotion
from crpbot_assets.symbol_run import failure_summary
from crpbot_assets.tracking import EXPERIMENT, TRACKING_URI_ENV_VAR, track_training
from v8_model.registry.promotion import read_pointer
from v8_model.storage import open_store

# Four trainings in the module's scenario, all set up within its first test's limit.
pytestmark = pytest.mark.timeout(2400)

SYMBOL = "BTC"
MODEL_NAME = f"crpbot-{SYMBOL}"
PASSWORD = "s3cret-pw-7f3a"
RETRAIN = [dg.AssetKey("model"), dg.AssetKey("production_model")]


class ErrorHandler(http.server.BaseHTTPRequestHandler):
    """Answers every request with HTTP 500 and an MLflow-shaped error body."""

    def _fail(self) -> None:
        body = b'{"error_code": "INTERNAL_ERROR", "message": "the store is on fire"}'
        self.send_response(500)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _fail

    def log_message(self, *args) -> None:  # keep test output quiet
        pass


@contextmanager
def silent_server() -> Iterator[str]:
    """Accepts connections and never answers: a tracking server too slow to be waited for."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        listener.close()


def events_text(instance: dg.DagsterInstance, run_id: str) -> str:
    """Every message and metadata value the run recorded, as one string."""
    parts = []
    for entry in instance.all_logs(run_id):
        parts.append(entry.user_message or "")
        event = entry.dagster_event
        if event is not None and event.is_step_materialization:
            materialization = event.step_materialization_data.materialization
            parts += [str(value.value) for value in materialization.metadata.values()]
    return "\n".join(parts)


@pytest.fixture(scope="module")
def scenario(tmp_path_factory):
    base = tmp_path_factory.mktemp("tracking_server")
    root, home = base / "root", base / "dagster_home"
    home.mkdir()
    pipeline = defs.resolve_job_def("symbol_pipeline")
    config = tracked_run_config(root)
    config["resources"]["profile"]["config"] = {
        **config["resources"]["profile"]["config"],
        "epochs": 1,
        "folds": 1,
    }
    down = f"http://crpbot:{PASSWORD}@127.0.0.1:{free_port()}"
    runs, status = {}, {}
    with (
        mlflow_server(base / "mlflow", base / "logs") as server,
        dg.instance_for_test(temp_dir=str(home)) as instance,
        pytest.MonkeyPatch.context() as env,
    ):

        def run(name: str, uri: str, selection: list[dg.AssetKey] | None) -> None:
            env.setenv(TRACKING_URI_ENV_VAR, uri)
            runs[name] = pipeline.execute_in_process(
                partition_key=SYMBOL,
                instance=instance,
                run_config=config,
                asset_selection=selection,
                raise_on_error=False,
            )

        def read_status(name: str) -> None:
            env.setenv(TRACKING_URI_ENV_VAR, server.url)
            with redirect_stdout(io.StringIO()) as out:
                code = crpbot(["status", SYMBOL, "--root", str(root)])
            status[name] = (code, out.getvalue())

        run("tracked", server.url, None)
        run("down", down, RETRAIN)
        read_status("after_down")
        with serve_http(ErrorHandler) as failing:
            run("erroring", failing, RETRAIN)
        run("recovered", server.url, RETRAIN)
        read_status("after_recovery")
        logs = {name: events_text(instance, result.run_id) for name, result in runs.items()}
        yield {
            "root": root,
            "server": server.url,
            "runs": runs,
            "logs": logs,
            "status": status,
            "client": MlflowClient(tracking_uri=server.url, registry_uri=server.url),
        }


def test_a_training_is_tracked_on_the_server_with_its_artifacts(scenario, tmp_path):
    client = scenario["client"]
    result = scenario["runs"]["tracked"]
    assert result.success, failure_summary(result)
    model = metadata_of(result, "model")
    run = client.get_run(model["mlflow_run_id"])
    assert model["mlflow_run"] == (
        f"{scenario['server']}/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}"
    )
    assert client.get_experiment(run.info.experiment_id).name == EXPERIMENT
    assert run.data.params["epochs"] == "1" and run.data.params["symbol"] == SYMBOL
    [loss] = client.get_metric_history(run.info.run_id, "train_loss")
    assert loss.step == 1 and loss.value > 0
    assert run.data.tags["dagster_run_id"] == result.run_id
    # Artifacts go through the server (mlflow-artifacts:), not to a path this process chose.
    assert run.info.artifact_uri.startswith("mlflow-artifacts:")
    weights = Path(client.download_artifacts(run.info.run_id, "model/weights.npz", str(tmp_path)))
    assert weights.stat().st_size == model["staged_files"]["weights.npz"]["bytes"]


def test_training_and_promotion_go_on_while_the_server_is_down(scenario):
    result = scenario["runs"]["down"]
    assert result.success, failure_summary(result)
    model = metadata_of(result, "model")
    assert "mlflow_run_id" not in model
    reason = model["mlflow_not_tracked"]
    assert reason.startswith("not tracked in MLflow (http://***@127.0.0.1:")
    assert "Connection" in reason or "connect" in reason
    promotion = metadata_of(result, "production_model")
    store = open_store(scenario["root"])
    assert (
        promotion["version"]
        != metadata_of(scenario["runs"]["tracked"], "production_model")["version"]
    )
    assert promotion["mlflow_champion_alias"].startswith("NOT moved: registering the version")
    assert PASSWORD not in scenario["logs"]["down"]
    assert "not tracked in MLflow" in scenario["logs"]["down"]  # the step's warning says why
    assert read_pointer(store, SYMBOL).previous  # the pointer moved on all the same


def test_status_shows_the_registry_behind_the_pointer_after_a_failed_alias_move(scenario):
    code, out = scenario["status"]["after_down"]
    down_version = metadata_of(scenario["runs"]["down"], "production_model")["version"]
    tracked_version = metadata_of(scenario["runs"]["tracked"], "production_model")["version"]
    assert code == 1
    assert (
        f"DISAGREE: production serves {down_version} but {MODEL_NAME}@champion is version 1, "
        f"tagged production_version={tracked_version}"
    ) in out


def test_training_and_promotion_go_on_while_the_server_answers_errors(scenario):
    result = scenario["runs"]["erroring"]
    assert result.success, failure_summary(result)
    model = metadata_of(result, "model")
    assert "mlflow_run_id" not in model
    assert "500" in model["mlflow_not_tracked"]
    promotion = metadata_of(result, "production_model")
    assert promotion["mlflow_champion_alias"].startswith("NOT moved")


def test_a_later_run_is_tracked_normally_and_the_alias_catches_up(scenario):
    client = scenario["client"]
    result = scenario["runs"]["recovered"]
    assert result.success, failure_summary(result)
    model = metadata_of(result, "model")
    run_ids = [
        metadata_of(scenario["runs"][name], "model")["mlflow_run_id"]
        for name in ("tracked", "recovered")
    ]
    assert client.get_run(model["mlflow_run_id"]).info.status == "FINISHED"
    experiment = client.get_experiment_by_name(EXPERIMENT)
    tracked = {run.info.run_id for run in client.search_runs([experiment.experiment_id])}
    assert tracked == set(run_ids)  # the down and erroring trainings left no run behind
    promotion = metadata_of(result, "production_model")
    champion = client.get_model_version_by_alias(MODEL_NAME, CHAMPION_ALIAS)
    assert champion.tags["production_version"] == promotion["version"]
    assert champion.run_id == model["mlflow_run_id"]
    assert promotion["mlflow_champion_alias"] == "moved"
    code, out = scenario["status"]["after_recovery"]
    assert code == 0 and "registry and pointer agree" in out


def test_a_server_that_never_answers_is_given_up_on(scenario, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    store = open_store(scenario["root"])
    with silent_server() as url:
        monkeypatch.setenv(TRACKING_URI_ENV_VAR, url)
        tracked = track_training(
            store,
            SYMBOL,
            storage_root=str(scenario["root"]),
            profile="demo",
            dagster_run_id="run-1",
            figures={},
        )
        move = register_promotion(
            SYMBOL,
            storage_root=str(scenario["root"]),
            production_version="v-test",
            weights_sha256="0" * 64,
            fallback_source="/nowhere",
            mlflow_run_id=None,
            dagster_run_id="run-1",
        )
    assert tracked.run_id is None and "timed out" in tracked.not_tracked.lower()
    assert not move.alias_moved and "timed out" in move.problem.lower()


def test_the_tracking_budget_stops_logging(scenario, monkeypatch):
    monkeypatch.setenv(TRACKING_URI_ENV_VAR, scenario["server"])
    tracked = track_training(
        open_store(scenario["root"]),
        SYMBOL,
        storage_root=str(scenario["root"]),
        profile="demo",
        dagster_run_id="run-2",
        figures={},
        budget_seconds=0.0,
    )
    assert tracked.run_id is None
    assert "tracking budget of 0 s ran out before finding the experiment" in tracked.not_tracked
