"""Every training an MLflow run, every promotion a registered version: the embedded SQLite store.

One module-wide scenario, run once on the embedded default (MLFLOW_TRACKING_URI unset): ETH goes
from candles to production (two walk-forward folds, two epochs), then `production_model` runs
again, so the registry holds two versions. What MLflow holds is read back with MLflow's own
client from the SQLite file under the storage root, and through `make mlflow`'s server.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sqlite3
import subprocess
import sys
import urllib.request
from dataclasses import fields
from pathlib import Path

import dagster as dg
import mlflow
import pytest
from helpers import metadata_of, tracked_run_config
from mlflow import MlflowClient
from servers import free_port, http_service, require_module

from crpbot_assets.cli import main as crpbot
from crpbot_assets.definitions import defs
from crpbot_assets.model_registry import CHAMPION_ALIAS
from crpbot_assets.tracking import (
    EXPERIMENT,
    TRACKING_URI_ENV_VAR,
    mlflow_client,
    redact,
    tracking_target,
    where_line,
)
from v8_model.config import TrainConfig, setting_text
from v8_model.evaluation.metrics import Evaluation
from v8_model.registry.promotion import read_pointer
from v8_model.storage import open_store

# The module's scenario trains two folds, set up within its first test's limit.
pytestmark = pytest.mark.timeout(1800)

SYMBOL = "ETH"
MODEL_NAME = f"crpbot-{SYMBOL}"


@pytest.fixture(scope="module")
def scenario(tmp_path_factory):
    base = tmp_path_factory.mktemp("tracking")
    root = base / "root"
    pipeline = defs.resolve_job_def("symbol_pipeline")
    with pytest.MonkeyPatch.context() as env:
        env.delenv(TRACKING_URI_ENV_VAR, raising=False)
        home = base / "dagster_home"
        home.mkdir()
        with dg.instance_for_test(temp_dir=str(home)) as instance:
            first = pipeline.execute_in_process(
                partition_key=SYMBOL, instance=instance, run_config=tracked_run_config(root)
            )
            again = pipeline.execute_in_process(
                partition_key=SYMBOL,
                instance=instance,
                run_config=tracked_run_config(root),
                asset_selection=[dg.AssetKey("production_model")],
            )
        target = tracking_target(str(root))
        yield {
            "root": root,
            "first": first,
            "again": again,
            "client": MlflowClient(tracking_uri=target.uri, registry_uri=target.uri),
        }


def test_the_embedded_store_lives_under_the_storage_root(scenario):
    root = scenario["root"]
    assert (root / "mlflow" / "mlflow.db").is_file()
    model = metadata_of(scenario["first"], "model")
    assert model["mlflow_tracking_uri"] == f"sqlite:///{root.resolve()}/mlflow/mlflow.db"
    assert "mlflow_not_tracked" not in model
    experiment = scenario["client"].get_experiment_by_name(EXPERIMENT)
    assert experiment.artifact_location == (root.resolve() / "mlflow" / "artifacts").as_uri()


def test_training_run_holds_params_metrics_and_step_histories(scenario):
    client, root = scenario["client"], scenario["root"]
    model = metadata_of(scenario["first"], "model")
    run = client.get_run(model["mlflow_run_id"])
    evaluation = Evaluation.from_json((root / "models" / SYMBOL / "metrics.json").read_text())
    run_info = json.loads((root / "models" / SYMBOL / "run_info.json").read_text())

    params = run.data.params
    for item in fields(TrainConfig):
        value = getattr(evaluation.hyperparameters, item.name)
        assert params[item.name] == setting_text(value), item.name
    assert params["hidden_widths"] == "512,256,128" and params["label_horizon"] == "15"
    assert params["epochs"] == "2" and params["folds"] == "2"
    assert params["profile"] == "demo" and params["symbol"] == SYMBOL
    assert params["data_first_timestamp"] == evaluation.first_timestamp
    assert params["data_last_timestamp"] == evaluation.last_timestamp
    assert params["trainer"] == "local" and params["instance_type"] == "local"
    assert params["job_name"] == run_info["job_name"] == run.info.run_name

    metrics, worth = run.data.metrics, evaluation.worth
    assert metrics["test_accuracy"] == evaluation.test_accuracy
    assert metrics["baseline_accuracy"] == evaluation.baseline_accuracy
    assert metrics["macro_f1"] == evaluation.macro_f1 and metrics["ece"] == evaluation.ece
    assert metrics["rank_ic"] == worth.skill.rank_ic
    assert metrics["p_value"] == worth.skill.p_value
    for name in ("net_return", "gross_return", "buy_and_hold_return", "break_even_fee_bps"):
        assert metrics[name] == getattr(worth.backtest, name), name
    for name, gate in evaluation.gates.items():
        assert metrics[f"gate_{name}"] == gate.value
        assert metrics[f"gate_{name}_passed"] == float(gate.passed)
    assert [fold.fold for fold in worth.folds] == [1, 2]
    for fold in worth.folds:
        assert metrics[f"fold_{fold.fold}/rank_ic"] == fold.rank_ic
        assert metrics[f"fold_{fold.fold}/net_return"] == fold.backtest.net_return
        assert params[f"fold_{fold.fold}/test_start"] == fold.test_start

    for name in ("train_loss", "val_loss"):
        history = client.get_metric_history(run.info.run_id, name)
        steps = sorted((point.step, point.value) for point in history)
        assert steps == [(stats.epoch, getattr(stats, name)) for stats in evaluation.history]
        assert len(steps) == evaluation.epochs_run >= 2


def test_training_run_holds_artifacts_tags_and_the_links(scenario, tmp_path):
    client, root = scenario["client"], scenario["root"]
    result = scenario["first"]
    model = metadata_of(result, "model")
    run_id = model["mlflow_run_id"]
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["dagster_run_id"] == result.run_id
    assert run.data.tags["dagster_run_url"].endswith(f"/runs/{result.run_id}")
    assert run.data.tags["symbol"] == SYMBOL
    experiment_id = run.info.experiment_id
    assert (
        model["mlflow_run"] == f"http://127.0.0.1:5000/#/experiments/{experiment_id}/runs/{run_id}"
    )

    staged = model["staged_files"]
    logged = {item.path for item in client.list_artifacts(run_id, "model")}
    assert logged == {f"model/{name}" for name in staged}
    assert {"model/metrics.json", "model/config.json", "model/weights.npz"} <= logged
    assert f"model/processor_{SYMBOL}_v8.json" in logged
    figures = {item.path for item in client.list_artifacts(run_id, "figures")}
    assert {"figures/loss_curves.png", "figures/confusion_matrix.png"} <= figures
    weights = Path(client.download_artifacts(run_id, "model/weights.npz", str(tmp_path)))
    assert hashlib.sha256(weights.read_bytes()).hexdigest() == staged["weights.npz"]["sha256"]
    png = Path(client.download_artifacts(run_id, "figures/loss_curves.png", str(tmp_path)))
    assert png.read_bytes().startswith(b"\x89PNG")
    assert (root / "mlflow" / "artifacts").is_dir()


def test_each_promotion_registers_a_version_and_moves_the_champion(scenario):
    client, store = scenario["client"], open_store(scenario["root"])
    run_id = metadata_of(scenario["first"], "model")["mlflow_run_id"]
    pointer = read_pointer(store, SYMBOL)
    assert len(pointer.previous) == 1  # promoted twice
    versions = {
        item.tags["production_version"]: item
        for item in client.search_model_versions(f"name = '{MODEL_NAME}'")
    }
    assert set(versions) == {pointer.version, pointer.previous[0]}
    champion = client.get_model_version_by_alias(MODEL_NAME, CHAMPION_ALIAS)
    assert champion.tags["production_version"] == pointer.version
    assert champion.version == versions[pointer.version].version
    assert int(champion.version) == int(versions[pointer.previous[0]].version) + 1
    serving_weights = store.read_bytes(
        f"production/{SYMBOL}/versions/{pointer.version}/weights.npz"
    )
    assert champion.tags["weights_sha256"] == hashlib.sha256(serving_weights).hexdigest()
    assert champion.run_id == run_id  # both promotions registered the one tracked training
    assert champion.source.endswith(f"{run_id}/artifacts/model")
    promotion = metadata_of(scenario["again"], "production_model")
    assert promotion["mlflow_model_version"] == str(champion.version)
    assert promotion["mlflow_champion_alias"] == "moved"


def test_rollback_moves_the_alias_back_and_status_compares(scenario, capsys):
    client, root = scenario["client"], scenario["root"]
    store = open_store(root)
    before = read_pointer(store, SYMBOL)
    assert crpbot(["status", SYMBOL, "--root", str(root)]) == 0
    assert "registry and pointer agree" in capsys.readouterr().out

    assert crpbot(["rollback", SYMBOL, "--root", str(root)]) == 0
    out = capsys.readouterr().out
    after = read_pointer(store, SYMBOL)
    assert after.version == before.previous[0]
    champion = client.get_model_version_by_alias(MODEL_NAME, CHAMPION_ALIAS)
    assert champion.tags["production_version"] == after.version
    assert f"{MODEL_NAME}@champion now points to version {champion.version}" in out
    assert crpbot(["status", SYMBOL, "--root", str(root)]) == 0
    assert f"pointer {after.version}" in capsys.readouterr().out

    # The alias moved behind the pointer's back: status says so and exits 1.
    newest = max(int(v.version) for v in client.search_model_versions(f"name='{MODEL_NAME}'"))
    client.set_registered_model_alias(MODEL_NAME, CHAMPION_ALIAS, str(newest))
    assert crpbot(["status", SYMBOL, "--root", str(root)]) == 1
    out = capsys.readouterr().out
    assert f"DISAGREE: production serves {after.version} but {MODEL_NAME}@champion is " in out
    assert f"version {newest}" in out


def test_make_mlflow_serves_the_embedded_store_on_loopback(scenario, tmp_path):
    require_module("flask")  # the `mlflow-ui` extra that `make mlflow` installs
    root, port = scenario["root"], free_port()
    command = [
        sys.executable,
        "-m",
        "crpbot_assets.tracking",
        "--root",
        str(root),
        "--port",
        str(port),
    ]
    url = f"http://127.0.0.1:{port}"
    with http_service("make-mlflow", command, f"{url}/health", tmp_path):
        with urllib.request.urlopen(url, timeout=30) as page:
            assert b"<html" in page.read().lower()  # the UI's pages, not only the API
        query = f"{url}/api/2.0/mlflow/experiments/get-by-name?experiment_name={EXPERIMENT}"
        with urllib.request.urlopen(query, timeout=30) as answer:
            experiment = json.loads(answer.read())["experiment"]
        run_id = metadata_of(scenario["first"], "model")["mlflow_run_id"]
        artifact = f"{url}/get-artifact?path=model/weights.npz&run_uuid={run_id}"
        with urllib.request.urlopen(artifact, timeout=30) as answer:
            weights = answer.read()
    assert experiment["name"] == EXPERIMENT
    assert weights == (root / "models" / SYMBOL / "weights.npz").read_bytes()


def test_where_line_names_the_store_and_never_a_password(monkeypatch, tmp_path):
    line = where_line(str(tmp_path))
    assert line.startswith(f"MLflow runs: sqlite:///{tmp_path.resolve()}/mlflow/mlflow.db")
    assert "make mlflow" in line and "\n" not in line
    monkeypatch.setenv(TRACKING_URI_ENV_VAR, "https://alice:hunter2@mlflow.example:8443/")
    line = where_line(str(tmp_path))
    assert line == f"MLflow runs: https://mlflow.example:8443 (experiment {EXPERIMENT})"
    target = tracking_target(str(tmp_path))
    message = redact(f"cannot reach {target.uri} as alice with hunter2", target)
    assert "hunter2" not in message and "alice" not in message


REGISTER_IN_A_PROCESS = """
import sys
from crpbot_assets.model_registry import register_promotion
move = register_promotion(
    sys.argv[1], storage_root=sys.argv[2], production_version="v1", weights_sha256="0" * 64,
    fallback_source=sys.argv[2], mlflow_run_id=None, dagster_run_id="run",
)
print(move.line())
"""


def test_symbols_in_parallel_processes_share_a_fresh_embedded_store(tmp_path):
    """The main command trains symbols in parallel processes: the first writers of a new SQLite
    store must not run MLflow's schema migrations on it at the same time."""
    symbols = ("BTC", "ETH", "SOL")
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", REGISTER_IN_A_PROCESS, symbol, str(tmp_path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for symbol in symbols
    ]
    outputs = [process.communicate(timeout=300)[0] for process in processes]
    for symbol, output in zip(symbols, outputs, strict=True):
        assert f"MLflow crpbot-{symbol}@champion now points to version 1" in output, output
    target = tracking_target(str(tmp_path))
    client = MlflowClient(tracking_uri=target.uri, registry_uri=target.uri)
    names = {model.name for model in client.search_registered_models()}
    assert names == {f"crpbot-{symbol}" for symbol in symbols}


def test_each_new_embedded_store_is_a_copy_of_one_empty_store(tmp_path, monkeypatch):
    """MLflow makes and migrates an empty store once per release; a new storage root's store is
    a copy of it, which MLflow opens as its own: the schema verified, its default experiment
    added, the registry working. The empty store itself stays empty."""
    monkeypatch.setattr("crpbot_assets.tracking.EMPTY_STORE_CACHE", tmp_path / "cache")
    first = mlflow_client(tracking_target(str(tmp_path / "first")))
    [empty] = (tmp_path / "cache").iterdir()
    assert empty.name == f"mlflow-{mlflow.__version__}-empty.db"
    made = empty.stat().st_mtime_ns
    second = mlflow_client(tracking_target(str(tmp_path / "second")))
    assert empty.stat().st_mtime_ns == made  # made once, then only copied

    for client in (first, second):
        assert [e.name for e in client.search_experiments()] == ["Default"]
    first.create_registered_model("crpbot-BTC")
    assert [m.name for m in first.search_registered_models()] == ["crpbot-BTC"]
    assert second.search_registered_models() == []  # two files, not one
    with contextlib.closing(sqlite3.connect(empty)) as database:
        assert database.execute("SELECT COUNT(*) FROM experiments").fetchone() == (0,)
