"""The main command for a symbol added through the setting (CRPBOT_SYMBOLS), run once as a user
runs it: the symbol materialized end to end, the console it printed, the records it left."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
from helpers import ALL_GATES, TABLE_HEADER

from crpbot_assets.assets import SYMBOL_ASSET_NAMES
from crpbot_assets.storage import features_key
from v8_model.evaluation.gates import GATE_NAMES

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def added_symbol_run(tmp_path_factory) -> dict:
    """The main command as a user runs it, for DOGE added through CRPBOT_SYMBOLS, on synthetic
    data (demo profile), with the repo's instance settings in a fresh DAGSTER_HOME.

    Returns its exit code, stdout, stderr, storage root and DAGSTER_HOME.
    """
    base = tmp_path_factory.mktemp("added_symbol")
    home = base / "home"
    home.mkdir()
    shutil.copy(REPO / ".dagster_home" / "dagster.yaml", home)
    env = {
        **{name: value for name, value in os.environ.items() if name != "MLFLOW_TRACKING_URI"},
        "CRPBOT_SYMBOLS": "BTC,ETH,SOL,DOGE",
        "CRPBOT_ROOT": str(base / "root"),
        "DAGSTER_HOME": str(home),
        "CRPBOT_PROFILE": "demo",
        "COLUMNS": "80",
    }
    done = subprocess.run(
        [sys.executable, "-m", "crpbot_assets.main", "--symbols", "doge"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    return {
        "returncode": done.returncode,
        "stdout": done.stdout,
        "stderr": done.stderr,
        "root": base / "root",
        "home": home,
    }


def test_an_added_symbol_is_materialized_end_to_end(added_symbol_run):
    run = added_symbol_run
    assert run["returncode"] == 0, run["stdout"] + run["stderr"]
    root = run["root"]
    assert (root / features_key("DOGE")).is_file()
    assert json.loads((root / "production" / "DOGE" / "current.json").read_text())
    with dg.DagsterInstance.from_config(str(run["home"])) as instance:
        for name in SYMBOL_ASSET_NAMES:
            assert instance.get_materialized_partitions(dg.AssetKey(name)) == {"DOGE"}, name
    report = json.loads((root / "reports" / "gate_report.json").read_text())
    assert list(report["symbols"]) == ["BTC", "ETH", "SOL", "DOGE"]
    assert report["symbols"]["DOGE"]["status"] == "passed"
    assert report["symbols"]["DOGE"]["promoted"] is True
    assert report["symbols"]["BTC"]["status"] == "not trained"


def test_console_has_the_summary_and_no_event_records(added_symbol_run):
    out, err = added_symbol_run["stdout"], added_symbol_run["stderr"]
    assert added_symbol_run["returncode"] == 0, out + err
    lines = out.splitlines()
    assert any(TABLE_HEADER.search(line) for line in lines), out
    # The table's row (the progress line also starts with the symbol).
    [row] = [line for line in lines if re.match(r"DOGE\s+(ok|failed)\s", line)]
    assert row.split()[:4] == ["DOGE", "ok", ALL_GATES, "yes"]
    assert re.search(r"DOGE\s+done\s+\S+\s+epoch\s+\d+/\d+\s+train \d\.\d+\s+val \d\.\d+", out)
    assert "gate report: " in out and "reports/gate_report.md" in out
    store = added_symbol_run["root"].resolve() / "mlflow" / "mlflow.db"
    assert f"MLflow runs: sqlite:///{store} (experiment crpbot-v8)" in out
    assert re.search(
        rf"^DOGE: promoted: all {len(GATE_NAMES)} gates passed; rank IC [+-]\d\.\d{{4}} .*, p = ",
        out,
        re.MULTILINE,
    ), out
    # Dagster's event records and its start-up notices stay off the console.
    for text in (" - DEBUG - ", "STEP_START", "ASSET_MATERIALIZATION", "dagster - "):
        assert text not in out + err
    assert "telemetry" not in (out + err).lower()
    assert "No dagster instance configuration file" not in err
    assert len(lines) <= 20  # one screen for one symbol, table included


def test_the_event_records_are_in_the_run_logs(added_symbol_run):
    """What the console leaves out is recorded in the instance (the UI's run logs)."""
    with dg.DagsterInstance.from_config(str(added_symbol_run["home"])) as instance:
        [run] = instance.get_run_records(filters=dg.RunsFilter(job_name="symbol_pipeline"))
        records = instance.get_records_for_run(run.dagster_run.run_id).records
        starts = {
            record.event_log_entry.step_key
            for record in records
            if record.event_log_entry.dagster_event is not None
            and record.event_log_entry.dagster_event.event_type_value == "STEP_START"
        }
        epochs = [
            record
            for record in records
            if "epoch=" in (record.event_log_entry.user_message or "")
            and record.event_log_entry.dagster_event is None
        ]
    assert {"candles", "features", "processor", "model", "production_model"} <= starts
    assert epochs
