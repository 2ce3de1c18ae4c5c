"""Pictures: the model's figures as Markdown metadata, and in the gate report, file and UI.

One small real run (ETH: 12 days of synthetic candles, one epoch; its gates may pass or fail,
the pictures come either way), then the gate report with SOL given a metrics.json from an older
trainer that lacks the training history. The rendered report is saved under
test-artifacts/gate_report/ (git-ignored) to look at.
"""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
from pathlib import Path

import dagster as dg
import pytest
from PIL import Image

from crpbot_assets.definitions import defs
from crpbot_assets.report import FIGURE_TITLES
from v8_model.evaluation.gates import GATE_NAMES
from v8_model.evaluation.plots import PNG_MAGIC
from v8_model.layout import REPORT_LINKED_MARKDOWN_KEY

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts" / "gate_report"
FIGURES = ("loss_curves", "confusion_matrix", "reliability", "class_mix", "equity_curve")
MAX_PNG_BYTES = 60_000  # each image is kept in Dagster's event log
DATA_URI = re.compile(r"!\[([^\]]*)\]\(data:image/png;base64,([A-Za-z0-9+/=]+)\)")
LINK = re.compile(r"!\[([^\]]*)\]\((figures/[^)]+\.png)\)")


@pytest.fixture(scope="module")
def scenario(tmp_path_factory):
    base = tmp_path_factory.mktemp("pictures")
    root = base / "root"
    run_config = {
        "resources": {
            "storage": {"config": {"root": str(root)}},
            "profile": {
                "config": {"days": 12, "epochs": 1, "batch_size": 1024, "min_coverage_days": 7}
            },
        }
    }
    with dg.instance_for_test(temp_dir=str(base)) as instance:
        pipeline = defs.resolve_job_def("symbol_pipeline").execute_in_process(
            partition_key="ETH", instance=instance, run_config=run_config, raise_on_error=False
        )
        # A metrics.json written before the figures existed: numbers, no training history.
        metrics = json.loads((root / "models" / "ETH" / "metrics.json").read_text())
        del metrics["history"]
        (root / "models" / "SOL").mkdir(parents=True)
        (root / "models" / "SOL" / "metrics.json").write_text(json.dumps(metrics))
        report = defs.resolve_job_def("gate_report_job").execute_in_process(
            instance=instance, run_config={"resources": run_config["resources"]}
        )
    yield {"root": root, "pipeline": pipeline, "report": report}


def metadata(result: dg.ExecuteInProcessResult, asset: str) -> dict:
    [event] = [
        e.materialization
        for e in result.get_asset_materialization_events()
        if e.materialization.asset_key == dg.AssetKey(asset)
    ]
    return {key: getattr(value, "value", value) for key, value in event.metadata.items()}


def decode_png(data: bytes) -> Image.Image:
    assert data.startswith(PNG_MAGIC) and len(data) < MAX_PNG_BYTES
    image = Image.open(io.BytesIO(data))
    image.load()  # every pixel decodes: the PNG is whole
    return image


def test_model_materialization_carries_the_figures(scenario):
    shown = metadata(scenario["pipeline"], "model")
    assert [key for key in shown if key.startswith("figure_")] == [f"figure_{f}" for f in FIGURES]
    for name in FIGURES:
        [(alt, encoded)] = DATA_URI.findall(shown[f"figure_{name}"])
        assert alt == f"ETH {FIGURE_TITLES[name]}"
        decode_png(base64.b64decode(encoded))
    # The entry point's metadata and the trainer's are still there beside the figures.
    assert {"test_accuracy", "class_mix", "all_gates_passed", "trainer", "job_name"} <= set(shown)
    checks = scenario["pipeline"].get_asset_check_evaluations()
    assert {c.check_name for c in checks if c.asset_key == dg.AssetKey("model")} == set(GATE_NAMES)


def test_gate_report_embeds_each_trained_symbols_figures(scenario):
    root = scenario["root"]
    markdown = (root / "reports" / "gate_report.md").read_text()
    assert metadata(scenario["report"], "gate_report")["report"] == markdown
    images = DATA_URI.findall(markdown)
    assert [alt for alt, _ in images] == [f"ETH {FIGURE_TITLES[name]}" for name in FIGURES]
    for _, encoded in images:
        decode_png(base64.b64decode(encoded))
    # The ETH section holds its figures after its gate table.
    eth = markdown[markdown.index("## ETH") : markdown.index("## SOL")]
    assert eth.index("| gate | result |") < eth.index("![ETH ")
    # SOL's metrics cannot be drawn: its numbers are reported, and why the figures are missing.
    sol = markdown[markdown.index("## SOL") :]
    assert "| gate | result |" in sol
    assert "Figures unavailable: cannot draw the figures of " in sol and "'history'" in sol
    assert "## BTC\n\nNo model under `models/BTC/`: not trained." in markdown

    report = json.loads((root / "reports" / "gate_report.json").read_text())
    assert report["symbols"]["ETH"]["figures"] == {
        name: f"reports/figures/ETH_{name}.png" for name in FIGURES
    }
    assert "figures" not in report["symbols"]["SOL"] and report["symbols"]["SOL"]["figures_error"]

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(root / "reports" / "gate_report.md", ARTIFACTS / "gate_report.md")


def test_linked_report_and_figure_files(scenario):
    root = scenario["root"]
    reports = root / "reports"
    linked = (root / REPORT_LINKED_MARKDOWN_KEY).read_text()
    links = LINK.findall(linked)
    assert [path for _, path in links] == [f"figures/ETH_{name}.png" for name in FIGURES]
    assert "data:image" not in linked and len(linked) < 10_000
    embedded = (reports / "gate_report.md").read_text()
    # The same report but for how the images are reached.
    assert DATA_URI.sub("IMAGE", embedded) == LINK.sub("IMAGE", linked)
    pngs = {alt: base64.b64decode(data) for alt, data in DATA_URI.findall(embedded)}
    for name in FIGURES:
        assert (reports / "figures" / f"ETH_{name}.png").read_bytes() == pngs[
            f"ETH {FIGURE_TITLES[name]}"
        ]
    shown = metadata(scenario["report"], "gate_report")
    assert shown["linked_markdown_uri"] == str(root / REPORT_LINKED_MARKDOWN_KEY)
    assert shown["figures_uri"] == str(reports / "figures")
    assert shown["figure_files"] == len(FIGURES)
    # What the report adds to the event log: its base64 images, together under four PNGs' worth
    # at the largest size, and a few KB of text.
    assert len(embedded) < 4 * MAX_PNG_BYTES * 4 / 3 + 10_000
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(root / REPORT_LINKED_MARKDOWN_KEY, ARTIFACTS / "gate_report_linked.md")
    shutil.copytree(reports / "figures", ARTIFACTS / "figures", dirs_exist_ok=True)
