"""Training-run figures: valid small PNGs from metrics.json data, clear errors on bad input.

A full set from a real small training run is saved under test-artifacts/plots/ (git-ignored),
with a Markdown page embedding them the way the gate report and Dagster metadata do.
"""

from __future__ import annotations

import base64
import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from v8_model.config import TrainConfig
from v8_model.data.features import build_features_dataset
from v8_model.data.synthetic import generate_candles
from v8_model.defaults import CLASS_NAMES
from v8_model.evaluation.metrics import Evaluation
from v8_model.evaluation.plots import (
    DPI,
    FIGURE_SIZE,
    PNG_MAGIC,
    class_mix_png,
    confusion_matrix_png,
    loss_curves_png,
    markdown_image,
    metrics_figures,
    reliability_diagram_png,
)
from v8_model.model.pipeline import train_and_evaluate

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts" / "plots"
MAX_PNG_BYTES = 60_000  # each image lands in Dagster's event log
BIN = {"lower": 0.4, "upper": 0.5, "confidence": 0.45, "accuracy": 0.5, "count": 7}
HISTORY = [
    {"epoch": 1, "train_loss": 0.13, "val_loss": 0.125, "val_acc": 0.40},
    {"epoch": 2, "train_loss": 0.12, "val_loss": 0.121, "val_acc": 0.42},
    {"epoch": 3, "train_loss": 0.11, "val_loss": 0.123, "val_acc": 0.41},
]


def _assert_png(data: bytes) -> None:
    assert data.startswith(PNG_MAGIC)
    assert len(data) < MAX_PNG_BYTES
    with Image.open(io.BytesIO(data)) as image:
        image.load()  # decodes every pixel: a truncated file fails here
        assert image.format == "PNG"
        assert image.size == (round(FIGURE_SIZE[0] * DPI), round(FIGURE_SIZE[1] * DPI))


@pytest.fixture(scope="module")
def metrics() -> Evaluation:
    candles = generate_candles("BTC", minutes=12 * 1440, seed=1)
    outcome = train_and_evaluate(
        build_features_dataset(candles), symbol="BTC", config=TrainConfig(epochs=2, device="cpu")
    )
    return outcome.evaluation


def test_full_set_from_a_real_training_run(metrics):
    figures = metrics_figures(metrics)
    assert list(figures) == [
        "loss_curves",
        "confusion_matrix",
        "reliability",
        "class_mix",
        "equity_curve",
    ]
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page = [f"# Figures of a {metrics.epochs_run}-epoch BTC run (synthetic market)", ""]
    for name, png in figures.items():
        _assert_png(png)
        (ARTIFACTS / f"{name}.png").write_bytes(png)
        page += [markdown_image(png, name), ""]
    (ARTIFACTS / "figures.md").write_text("\n".join(page), encoding="utf-8")


@pytest.mark.parametrize(
    "draw",
    [
        lambda: loss_curves_png(HISTORY),
        # A diverged epoch (NaN validation loss) is drawn as a gap, not a crash.
        lambda: loss_curves_png([*HISTORY, {"epoch": 4, "train_loss": 1.0, "val_loss": np.nan}]),
        lambda: loss_curves_png([{"epoch": 1, "train_loss": 0.1, "val_loss": np.nan}]),
        # A class absent from the test labels leaves an empty row.
        lambda: confusion_matrix_png([[5, 1, 0], [0, 0, 0], [2, 2, 9]], CLASS_NAMES),
        lambda: reliability_diagram_png([BIN], 0.05),
        lambda: class_mix_png({"SELL": 0.15, "HOLD": 0.6, "BUY": 0.25}),  # on both band edges
    ],
    ids=["loss", "loss-nan-epoch", "loss-all-nan", "confusion-empty-row", "reliability", "mix"],
)
def test_each_figure_is_a_small_png(draw):
    _assert_png(draw())


@pytest.mark.parametrize(
    ("draw", "message"),
    [
        (lambda: loss_curves_png([]), "history is empty"),
        (lambda: loss_curves_png([{"epoch": 1, "train_loss": 0.1}]), "'val_loss'"),
        (lambda: confusion_matrix_png([[1, 2], [3, 4]], CLASS_NAMES), r"shape \(2, 2\)"),
        (lambda: confusion_matrix_png([[1, 2, 3]] * 2 + [[1, -1, 0]]), "non-negative"),
        (lambda: reliability_diagram_png([], 0.0), "reliability table is empty"),
        (
            lambda: reliability_diagram_png([{"lower": 0.0, "upper": 0.1}], 0.0),
            "'confidence'",
        ),
        (lambda: reliability_diagram_png([BIN], float("nan")), "ece must be a finite"),
        (lambda: class_mix_png({}), "class mix is empty"),
        (lambda: class_mix_png({"SELL": "a lot"}), "every share must be a number"),
        (lambda: markdown_image(b"GIF89a", "x"), "expects PNG bytes"),
    ],
    ids=[
        "empty-history",
        "history-key",
        "matrix-shape",
        "matrix-negative",
        "empty-reliability",
        "reliability-key",
        "ece-nan",
        "empty-mix",
        "mix-text",
        "not-png",
    ],
)
def test_bad_input_is_a_clear_value_error(draw, message):
    with pytest.raises(ValueError, match=message):
        draw()


def test_markdown_image_embeds_the_png_itself():
    png = class_mix_png({"SELL": 0.3, "HOLD": 0.4, "BUY": 0.3})
    tag = markdown_image(png, "class mix")
    prefix = "![class mix](data:image/png;base64,"
    assert tag.startswith(prefix) and tag.endswith(")")
    assert base64.b64decode(tag[len(prefix) : -1]) == png


def test_draws_without_pyplot_or_a_display():
    code = (
        "import sys; from v8_model.evaluation.plots import class_mix_png; "
        "class_mix_png({'SELL': 0.3, 'HOLD': 0.4, 'BUY': 0.3}); "
        "assert 'matplotlib.pyplot' not in sys.modules"
    )
    env = {"PATH": "/usr/bin:/bin", "MPLBACKEND": "TkAgg"}  # a GUI default would need a display
    subprocess.run(
        [sys.executable, "-c", code], check=True, env=env, cwd=ARTIFACTS.parents[1], timeout=120
    )
