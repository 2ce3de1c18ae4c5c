"""The asset graph end to end, in process, per partition, on small synthetic data.

One module-wide scenario, run once: ETH trains normally; BTC trains with a tiny initial temperature
so its logits blow past ±15 and the logit-range gate genuinely fails; SOL is never trained. Then
the gate report is materialized and the alert sensor ticks against a webhook on 127.0.0.1.

Why 50 days of candles: gate 1 (feature normalization) compares the scaled test segment with the
training segment, and the calendar features (day of week) only average out when the 15% test
segment spans a full week. Synthetic volatility clustering is off for the same reason: with it,
a week of test data is one volatility regime. Training is one epoch at batch 1024.
"""

import json
import shutil
from pathlib import Path

import boto3
import dagster as dg
import pandas as pd
import pytest
from conftest import serve_webhook
from helpers import SMALL_PROFILE, small_run_config, tree_digest

from crpbot_assets import main as main_command
from crpbot_assets.alerts import UI_URL_ENV_VAR, WEBHOOK_ENV_VAR, gate_failure_alerts
from crpbot_assets.assets.metadata import STAGED_FILES_METADATA
from crpbot_assets.checks import FEATURES_CHECK_NAMES, PROFIT_CHECK_NAME
from crpbot_assets.cli import main as crpbot_cli
from crpbot_assets.definitions import defs
from crpbot_assets.profiles import ProfileResource
from crpbot_assets.report import BACKTEST_FIELDS
from v8_model.data.features import FEATURE_NAMES, FEATURES_DATASET_COLUMNS
from v8_model.data.synthetic import generate_candles
from v8_model.evaluation.gates import GATE_NAMES, MAX_ABS_LOGIT
from v8_model.record import strict_json
from v8_model.registry.predict import load_production_model
from v8_model.registry.promotion import current_folder, folder_digests
from v8_model.storage import open_store

EXPLODING_LOGITS = {"temperature-init": "0.001"}  # logits × 1000 at initialisation
MODEL_FILES = {"weights.npz", "config.json", "metrics.json", "run_info.json"}


@pytest.fixture(scope="module")
def scenario(tmp_path_factory):
    base = tmp_path_factory.mktemp("graph")
    home = base / "dagster_home"
    home.mkdir()
    root = base / "root"
    pipeline = defs.resolve_job_def("symbol_pipeline")
    with dg.instance_for_test(temp_dir=str(home)) as instance, serve_webhook() as webhook:
        runs = {
            symbol: pipeline.execute_in_process(
                partition_key=symbol,
                instance=instance,
                run_config=small_run_config(str(root), hyperparameters),
                raise_on_error=False,
            )
            for symbol, hyperparameters in (("BTC", EXPLODING_LOGITS), ("ETH", None))
        }
        report = defs.resolve_job_def("gate_report_job").execute_in_process(
            instance=instance,
            run_config={"resources": {"storage": {"config": {"root": str(root)}}}},
        )
        with pytest.MonkeyPatch.context() as env:
            env.setenv(WEBHOOK_ENV_VAR, webhook.url)
            env.setenv(UI_URL_ENV_VAR, "http://127.0.0.1:3000")
            context = dg.build_sensor_context(instance=instance)
            gate_failure_alerts(context)
        yield {
            "instance": instance,
            "root": root,
            "runs": runs,
            "report": report,
            "alerts": list(webhook.messages),
        }


def checks_by_name(result: dg.ExecuteInProcessResult) -> dict[str, dg.AssetCheckEvaluation]:
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def materialization(result: dg.ExecuteInProcessResult, asset: str) -> dict:
    [event] = [
        e.materialization
        for e in result.get_asset_materialization_events()
        if e.materialization.asset_key == dg.AssetKey(asset)
    ]
    return {key: getattr(value, "value", value) for key, value in event.metadata.items()}


def test_passing_symbol_writes_every_artifact(scenario):
    root: Path = scenario["root"]
    assert scenario["runs"]["ETH"].success
    features = pd.read_parquet(root / "data" / "ETH_features.parquet")
    assert list(features.columns) == list(FEATURES_DATASET_COLUMNS)
    assert (root / "candles" / "ETH_candles.parquet").is_file()
    assert (
        json.loads((root / "processors" / "processor_ETH_v8.json").read_text())["symbol"] == "ETH"
    )
    model_files = {p.name for p in (root / "models" / "ETH").iterdir()}
    assert model_files == MODEL_FILES | {"processor_ETH_v8.json"}
    serving = root / current_folder(open_store(root), "ETH")
    production = {p.name for p in serving.iterdir()}
    assert production == model_files | {"promotion.json"}
    promotion = json.loads((serving / "promotion.json").read_text())
    run_info = json.loads((root / "models" / "ETH" / "run_info.json").read_text())
    assert promotion["job_name"] == run_info["job_name"]
    assert run_info["trainer"] == "local" and run_info["cost_usd"] == 0.0
    assert run_info["hyperparameters"]["epochs"] == "1"
    assert not (root / "models" / "SOL").exists()


def test_materialization_metadata(scenario):
    result = scenario["runs"]["ETH"]
    features = materialization(result, "features")
    assert features["rows"] == len(pd.read_parquet(scenario["root"] / "data/ETH_features.parquet"))
    assert features["rows"] > 50 * 1440 * 0.9
    assert features["MiB"] > 1
    assert features["first_timestamp"] < features["last_timestamp"]
    schema = features["dagster/column_schema"]
    assert [column.name for column in schema.columns] == list(FEATURES_DATASET_COLUMNS)
    assert {c.type for c in schema.columns if c.name in FEATURE_NAMES} == {"float32"}
    assert "| timestamp" in features["preview"]

    model = materialization(result, "model")
    assert model["trainer"] == "local" and model["cost_usd"] == 0.0
    assert model["model_dir"] == str(scenario["root"] / "models" / "ETH")
    assert model["epochs_run"] == 1 and model["device"] == "cpu"
    assert 0 < model["baseline_accuracy"] < model["test_accuracy"] < 1
    assert model["all_gates_passed"] is True

    production = materialization(result, "production_model")
    assert set(production["files"]) == MODEL_FILES | {"processor_ETH_v8.json"}


def test_check_results_per_partition(scenario):
    checks = checks_by_name(scenario["runs"]["ETH"])
    assert set(checks) == set(FEATURES_CHECK_NAMES) | set(GATE_NAMES) | {PROFIT_CHECK_NAME}
    assert all(check.passed for check in checks.values()), {
        name: check.description for name, check in checks.items() if not check.passed
    }
    assert {check.partition for check in checks.values()} == {"ETH"}
    for gate in GATE_NAMES:
        assert {"value", "threshold"} <= set(checks[gate].metadata)
        assert checks[gate].severity == dg.AssetCheckSeverity.ERROR

    history = scenario["instance"].event_log_storage.get_asset_check_execution_history(
        dg.AssetCheckKey(dg.AssetKey("model"), "logit_range"), limit=10
    )
    assert {(r.partition, r.evaluation.passed) for r in history} == {("BTC", False), ("ETH", True)}


def test_failing_gate_fails_the_run_and_blocks_promotion(scenario):
    btc = scenario["runs"]["BTC"]
    assert not btc.success
    gate = checks_by_name(btc)["logit_range"]
    assert not gate.passed and gate.partition == "BTC"
    assert gate.metadata["value"].value > MAX_ABS_LOGIT
    # The model itself was recorded (its gates are its checks), promotion never ran.
    assert {e.asset_key for e in btc.get_asset_materialization_events()} == {
        dg.AssetKey(name) for name in ("candles", "features", "processor", "model")
    }
    assert not (scenario["root"] / "production" / "BTC").exists()
    instance = scenario["instance"]
    promoted = instance.get_materialized_partitions(dg.AssetKey("production_model"))
    assert promoted == {"ETH"}


def test_alert_for_the_failed_gate_reaches_the_webhook(scenario):
    btc = scenario["runs"]["BTC"]
    value = checks_by_name(btc)["logit_range"].metadata["value"].value
    texts = [message["text"] for message in scenario["alerts"]]
    [logit_alert] = [text for text in texts if "logit_range" in text]
    assert f"BTC logit_range = {value:.6g}" in logit_alert
    assert f"http://127.0.0.1:3000/runs/{btc.run_id}" in logit_alert
    failed = {e.check_name for e in btc.get_asset_check_evaluations() if not e.passed}
    assert len(texts) == len(failed)  # one message per failed gate, none for ETH
    assert all("BTC" in text for text in texts)


def test_epoch_lines_reach_the_run_logs(scenario):
    result = scenario["runs"]["ETH"]
    messages = [entry.user_message for entry in scenario["instance"].all_logs(result.run_id)]
    assert any("symbol=ETH epoch=1 train_loss=" in message for message in messages)


def test_gate_report(scenario):
    root = scenario["root"]
    report = json.loads((root / "reports" / "gate_report.json").read_text())
    symbols = report["symbols"]
    assert symbols["SOL"] == {"status": "not trained"}
    assert symbols["ETH"]["status"] == "passed" and symbols["ETH"]["promoted"] is True
    assert symbols["BTC"]["status"] == "failed" and symbols["BTC"]["promoted"] is False
    assert symbols["BTC"]["gates"]["logit_range"]["passed"] is False
    metrics = json.loads((root / "models" / "ETH" / "metrics.json").read_text())
    assert symbols["ETH"]["test_accuracy"] == metrics["test_accuracy"]
    assert symbols["ETH"]["trainer"] == "local" and symbols["ETH"]["cost_usd"] == 0.0
    assert (report["trained"], report["passed"]) == (2, 1)

    markdown = (root / "reports" / "gate_report.md").read_text()
    assert "| SOL | not trained |" in markdown
    assert "| logit_range | **FAIL** |" in markdown
    shown = materialization(scenario["report"], "gate_report")
    assert shown["report"] == markdown
    # The worth section: the backtest figures under their exact names, per fold too.
    worth = symbols["ETH"]["worth"]
    assert worth["backtest"] == metrics["worth"]["backtest"]
    assert set(BACKTEST_FIELDS) <= set(worth["backtest"])
    assert all(set(BACKTEST_FIELDS) <= set(fold) for fold in worth["folds"])
    assert worth["skill"]["rank_ic"] == metrics["worth"]["skill"]["rank_ic"]
    assert "### Worth" in markdown and "| " + " | ".join(BACKTEST_FIELDS) + " |" in markdown
    assert (root / "reports" / "figures" / "ETH_equity_curve.png").is_file()


def test_backtest_asset_writes_its_json_figure_and_profit_check(scenario):
    root: Path = scenario["root"]
    result = scenario["runs"]["ETH"]
    shown = materialization(result, "backtest")
    stored = json.loads((root / "backtests" / "ETH_backtest.json").read_text())
    assert shown["uri"] == str(root / "backtests" / "ETH_backtest.json")
    for name in BACKTEST_FIELDS:
        assert shown[name] == stored["backtest"][name], name
    assert shown["figure_equity_curve"].startswith("![ETH walk-forward equity")
    profit = checks_by_name(result)[PROFIT_CHECK_NAME]
    assert profit.severity == dg.AssetCheckSeverity.WARN  # the demo profile's default
    assert profit.passed == (stored["backtest"]["net_return"] > 0)
    assert profit.metadata["value"].value == stored["backtest"]["net_return"]


def test_s3_root_runs_the_same_graph(s3_bucket, dagster_instance):
    """The storage root on S3 (moto on 127.0.0.1): same assets, same trainer, same layout."""
    root = f"s3://{s3_bucket}/crpbot"
    result = defs.resolve_job_def("symbol_pipeline").execute_in_process(
        partition_key="ETH",
        instance=dagster_instance,
        run_config=small_run_config(root),
        raise_on_error=False,
    )
    assert result.success
    keys = {
        item["Key"] for item in boto3.client("s3").list_objects_v2(Bucket=s3_bucket)["Contents"]
    }
    assert {
        "crpbot/candles/ETH_candles.parquet",
        "crpbot/data/ETH_features.parquet",
        "crpbot/processors/processor_ETH_v8.json",
        "crpbot/models/ETH/weights.npz",
        "crpbot/models/ETH/run_info.json",
        "crpbot/production/ETH/current.json",
    } <= keys
    serving = current_folder(open_store(root), "ETH")
    assert {f"crpbot/{serving}/weights.npz", f"crpbot/{serving}/promotion.json"} <= keys
    assert materialization(result, "features")["uri"] == f"{root}/data/ETH_features.parquet"


def test_main_command_names_the_failed_gate(scenario):
    btc = scenario["runs"]["BTC"]
    value = checks_by_name(btc)["logit_range"].metadata["value"].value
    assert f"check logit_range = {value:.6g}" in main_command.failure_summary(btc)


def test_main_command_exit_code(monkeypatch, capsys, tmp_path):
    calls = []

    def fake_run_all(symbols, profile, instance, watch, **options):
        calls.append((list(symbols), profile, instance.root_directory))
        return {"BTC": "check logit_range = 244.6", "ETH": None, "gate_report": None}

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(main_command, "run_all", fake_run_all)
    assert main_command.main(["--symbols", "btc,ETH", "--profile", "full"]) == 1
    assert calls == [(["BTC", "ETH"], "full", str(tmp_path / "home"))]
    out, err = capsys.readouterr()
    assert "gate report: " in out and out.rstrip().endswith("reports/gate_report.json")
    [mlflow_line] = [line for line in out.splitlines() if line.startswith("MLflow runs: ")]
    assert "mlflow.db (experiment crpbot-v8); browse them with `make mlflow`" in mlflow_line
    assert "FAILED BTC: check logit_range = 244.6" in err
    assert "1 of 3 runs failed: BTC" in err
    with pytest.raises(SystemExit):
        main_command.main(["--symbols", "DOGE"])


def promote_alone(instance: dg.DagsterInstance, root: Path, symbol: str):
    return defs.resolve_job_def("symbol_pipeline").execute_in_process(
        partition_key=symbol,
        instance=instance,
        run_config={"resources": {"storage": {"config": {"root": str(root)}}}},
        asset_selection=[dg.AssetKey("production_model")],
        raise_on_error=False,
    )


def test_production_model_refuses_truncated_staged_weights(scenario, tmp_path):
    """Promotion copies only the bytes the training step recorded; production stays as it was."""
    root = tmp_path / "root"
    shutil.copytree(scenario["root"], root)
    weights = root / "models" / "ETH" / "weights.npz"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    before = tree_digest(root / "production")

    result = promote_alone(scenario["instance"], root, "ETH")
    assert not result.success
    [failure] = result.get_step_failure_events()
    description = failure.step_failure_data.user_failure_data.description
    assert description.startswith("refusing to promote ETH: ")
    assert "models/ETH/weights.npz has sha256" in description and "Fix: retrain ETH" in description
    assert tree_digest(root / "production") == before
    assert load_production_model(root, "ETH")[0] is not None  # the good model still serves


def test_production_model_refuses_a_failed_model_even_when_run_alone(scenario):
    """Defence in depth: without the blocking checks in the run, the stored metrics still decide."""
    result = promote_alone(scenario["instance"], scenario["root"], "BTC")
    assert not result.success
    [failure] = result.get_step_failure_events()
    description = failure.step_failure_data.user_failure_data.description
    assert description.startswith("refusing to promote BTC: gate(s) ['logit_range'")
    assert not (scenario["root"] / "production" / "BTC").exists()


def _losing_copy(scenario, root: Path, instance: dg.DagsterInstance) -> None:
    """ETH's trained files under `root`, its recorded backtest turned into a loss after costs,
    recorded in `instance` as a `model` materialization (as a training run records it)."""
    shutil.copytree(scenario["root"], root)
    metrics_path = root / "models" / "ETH" / "metrics.json"
    metrics = json.loads(metrics_path.read_text())
    assert metrics["all_gates_passed"]
    metrics["worth"]["backtest"]["net_return"] = -0.05
    metrics_path.write_text(strict_json(metrics, indent=1))
    instance.report_runless_asset_event(
        dg.AssetMaterialization(
            asset_key="model",
            partition="ETH",
            metadata={
                STAGED_FILES_METADATA: dg.MetadataValue.json(
                    folder_digests(open_store(root), "models/ETH")
                )
            },
        )
    )


def _promote_with_severity(instance, root: Path, severity: str) -> dg.ExecuteInProcessResult:
    return defs.resolve_job_def("symbol_pipeline").execute_in_process(
        partition_key="ETH",
        instance=instance,
        run_config={
            "resources": {
                "storage": {"config": {"root": str(root)}},
                "profile": {"config": {**SMALL_PROFILE, "profit_check_severity": severity}},
            }
        },
        asset_selection=[dg.AssetKey("production_model")],
        raise_on_error=False,
    )


def test_profit_check_error_blocks_production_model_materialized_on_its_own(
    scenario, tmp_path, dagster_instance
):
    root = tmp_path / "root"
    _losing_copy(scenario, root, dagster_instance)
    shutil.rmtree(root / "production" / "ETH")

    refused = _promote_with_severity(dagster_instance, root, "ERROR")
    assert not refused.success
    [failure] = refused.get_step_failure_events()
    description = failure.step_failure_data.user_failure_data.description
    assert description.startswith(f"refusing to promote ETH: {PROFIT_CHECK_NAME} failed")
    assert "net return -5.00%" in description and "metrics.json" in description
    assert not (root / "production" / "ETH").exists()

    # The same recorded files with the check at WARN: the profit check was the only obstacle.
    assert _promote_with_severity(dagster_instance, root, "WARN").success
    assert load_production_model(root, "ETH")[0] is not None


def test_a_refused_data_refresh_leaves_the_last_good_candles_and_features_and_predict_works(
    scenario, tmp_path, dagster_instance, capsys
):
    root = tmp_path / "root"
    shutil.copytree(scenario["root"], root)
    keys = ("candles/ETH_candles.parquet", "data/ETH_features.parquet")
    published = {key: (root / key).read_bytes() for key in keys}
    # Just enough candles for the profile's row minimum: they pass the candle checks and are
    # staged, but their features (warm-up rows dropped) cover too little for `enough_history`.
    rows = ProfileResource(**SMALL_PROFILE).get().min_rows
    short = tmp_path / "ETH_short.parquet"
    generate_candles("ETH", minutes=rows, seed=9).to_parquet(short)

    result = defs.resolve_job_def("symbol_pipeline").execute_in_process(
        partition_key="ETH",
        instance=dagster_instance,
        run_config={
            "resources": small_run_config(str(root))["resources"],
            "ops": {"candles": {"config": {"source": "parquet", "path": str(short)}}},
        },
        asset_selection=[dg.AssetKey("candles"), dg.AssetKey("features")],
        raise_on_error=False,
    )

    assert not result.success
    [failure] = result.get_step_failure_events()
    assert failure.step_key == "features"
    description = failure.step_failure_data.user_failure_data.description
    assert "nothing was published" in description and "enough_history:" in description
    for key, data in published.items():
        assert (root / key).read_bytes() == data, f"{key} was replaced by a refused refresh"
    assert not (root / "staging" / "candles" / "ETH_candles.parquet").exists()
    assert crpbot_cli(["predict", "ETH", "--root", str(root), "--last", "2"]) == 0
    assert "p_buy" in capsys.readouterr().out
