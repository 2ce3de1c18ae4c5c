"""Pictures of a training run, drawn from the plain data in `metrics.json`, returned as PNG bytes.

Headless and thread-safe: every figure is a `matplotlib.figure.Figure` drawn on its own Agg
canvas; pyplot and its global figure registry are never touched, so Dagster's threads and a
server without a display are fine. Images are small (about 450 × 290 px) because Dagster keeps
materialization metadata in its event log; `markdown_image` embeds one as a base64 data URI,
which Dagster's Markdown metadata and the gate report file both render.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from v8_model.defaults import CLASS_NAMES, MINUTES_PER_DAY
from v8_model.evaluation.gates import CLASS_SHARE_BAND
from v8_model.evaluation.metrics import EquityCurve, Evaluation

FIGURE_SIZE = (5.0, 3.2)  # inches
DPI = 90
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

_IN_BAND_COLOR = "tab:blue"
_OUT_OF_BAND_COLOR = "tab:red"


def _new_figure() -> Figure:
    figure = Figure(figsize=FIGURE_SIZE, dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    # No "Software" text chunk: the same data gives the same bytes on any matplotlib version.
    figure.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()


def _column(rows: Sequence[Mapping], key: str, what: str) -> np.ndarray:
    try:
        return np.array([float(row[key]) for row in rows], dtype=np.float64)
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f"{what}: every entry needs a numeric {key!r} ({error!r})") from error


def loss_curves_png(history: Sequence[Mapping]) -> bytes:
    """Training and validation loss per epoch, with the best (lowest validation loss) epoch marked.

    `history` is metrics.json's list of {epoch, train_loss, val_loss, ...}.
    """
    if not history:
        raise ValueError("history is empty: there is no epoch to plot")
    what = "history"
    epochs = _column(history, "epoch", what)
    train_loss = _column(history, "train_loss", what)
    val_loss = _column(history, "val_loss", what)

    figure = _new_figure()
    axes = figure.add_subplot()
    axes.plot(epochs, train_loss, marker=".", label="train")
    axes.plot(epochs, val_loss, marker=".", label="validation")
    finite = np.isfinite(val_loss)
    if finite.any():
        # The first lowest finite validation loss: the epoch the training loop keeps.
        best = int(np.flatnonzero(finite)[np.argmin(val_loss[finite])])
        axes.axvline(epochs[best], color="tab:green", linestyle="--", linewidth=1)
        axes.plot(
            epochs[best],
            val_loss[best],
            marker="*",
            markersize=12,
            color="tab:green",
            linestyle="none",
            label=f"best epoch {epochs[best]:g} ({val_loss[best]:.4f})",
        )
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel("epoch")
    axes.set_ylabel("focal loss")
    axes.set_title("Loss per epoch")
    axes.legend(fontsize="small")
    axes.grid(alpha=0.3)
    return _png(figure)


def confusion_matrix_png(
    matrix: Sequence[Sequence[float]], class_names: Sequence[str] = CLASS_NAMES
) -> bytes:
    """The test confusion matrix: colour is the row-normalised share, each cell shows both."""
    counts = np.asarray(matrix, dtype=np.float64)
    n_classes = len(class_names)
    if counts.shape != (n_classes, n_classes):
        raise ValueError(
            f"confusion matrix has shape {counts.shape}, expected ({n_classes}, {n_classes}) "
            f"for classes {list(class_names)}"
        )
    if not (np.all(np.isfinite(counts)) and np.all(counts >= 0)):
        raise ValueError("confusion matrix must hold finite, non-negative counts")
    row_totals = counts.sum(axis=1, keepdims=True)
    # A class absent from the test labels has an empty row: its shares are 0, not 0 / 0.
    shares = np.divide(counts, row_totals, out=np.zeros_like(counts), where=row_totals > 0)

    figure = _new_figure()
    axes = figure.add_subplot()
    image = axes.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    for (row, column), count in np.ndenumerate(counts):
        share = shares[row, column]
        axes.text(
            column,
            row,
            f"{count:.0f}\n{share:.0%}",
            ha="center",
            va="center",
            fontsize="small",
            color="white" if share > 0.6 else "black",
        )
    ticks = range(n_classes)
    axes.set_xticks(ticks, labels=list(class_names))
    axes.set_yticks(ticks, labels=list(class_names))
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title("Test confusion matrix")
    figure.colorbar(image, ax=axes, label="share of true class")
    return _png(figure)


def reliability_diagram_png(reliability: Sequence[Mapping], ece: float) -> bytes:
    """Accuracy against confidence per bin, the diagonal of perfect calibration, bin counts below.

    `reliability` is metrics.json's list of {lower, upper, confidence, accuracy, count}, one entry
    per non-empty bin (v8_model.evaluation.gates.expected_calibration_error); `ece` goes in the
    title.
    """
    if not reliability:
        raise ValueError("reliability table is empty: no test rows were binned")
    if not math.isfinite(ece):
        raise ValueError(f"ece must be a finite number, got {ece!r}")
    what = "reliability table"
    lower = _column(reliability, "lower", what)
    upper = _column(reliability, "upper", what)
    confidence = _column(reliability, "confidence", what)
    accuracy = _column(reliability, "accuracy", what)
    count = _column(reliability, "count", what)
    centers, widths = (lower + upper) / 2, upper - lower

    figure = _new_figure()
    top, bottom = figure.subplots(2, 1, sharex=True, height_ratios=(3, 1))
    top.bar(centers, accuracy, width=widths, edgecolor="white", alpha=0.7, label="accuracy")
    top.plot(confidence, accuracy, marker="o", markersize=3, color="tab:orange", label="bin mean")
    top.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfect")
    top.set_ylim(0, 1)
    top.set_ylabel("accuracy")
    top.set_title(f"Reliability (ECE = {ece:.4f})")
    top.legend(fontsize="x-small", loc="upper left")
    bottom.bar(centers, count, width=widths, color="grey", edgecolor="white")
    bottom.set_xlim(0, 1)
    bottom.set_xlabel("confidence (max softmax probability)")
    bottom.set_ylabel("rows")
    return _png(figure)


def class_mix_png(class_mix: Mapping[str, float]) -> bytes:
    """Predicted share per class against gate 4's band; shares outside the band are highlighted."""
    if not class_mix:
        raise ValueError("class mix is empty: there is no class to plot")
    names = list(class_mix)
    try:
        shares = np.array([float(class_mix[name]) for name in names])
    except (TypeError, ValueError) as error:
        raise ValueError(f"class mix: every share must be a number ({error!r})") from error
    low, high = CLASS_SHARE_BAND
    # The gate's band is open: a share exactly on an edge fails, so it is highlighted too.
    inside = (shares > low) & (shares < high)

    figure = _new_figure()
    axes = figure.add_subplot()
    axes.axhspan(low, high, color="tab:green", alpha=0.12, label=f"gate band {low:.0%}-{high:.0%}")
    bars = axes.bar(
        names, shares, color=[_IN_BAND_COLOR if ok else _OUT_OF_BAND_COLOR for ok in inside]
    )
    axes.bar_label(bars, labels=[f"{share:.1%}" for share in shares], fontsize="small")
    axes.set_ylim(0, max(1.0, float(shares.max()) * 1.1))
    axes.yaxis.set_major_formatter("{x:.0%}")
    axes.set_ylabel("share of test predictions")
    axes.set_title("Predicted class mix (red: outside the band)")
    axes.legend(fontsize="small", loc="upper right")
    return _png(figure)


def equity_curve_png(curve: EquityCurve, cost_bps_per_side: float) -> bytes:
    """Strategy equity net and gross of costs against buy-and-hold over the same test minutes."""
    if not curve.bars:
        raise ValueError("the equity curve is empty: there were no test rows")
    figure = _new_figure()
    axes = figure.add_subplot()
    days = np.asarray(curve.bars, dtype=np.float64) / MINUTES_PER_DAY
    axes.plot(days, curve.gross, label="strategy, gross", color="tab:gray", linewidth=1)
    axes.plot(days, curve.net, label=f"strategy, net ({cost_bps_per_side:g} bps/side)")
    axes.plot(days, curve.buy_and_hold, label="buy and hold", color="tab:orange")
    axes.axhline(1.0, color="black", linewidth=0.5)
    axes.set_xlabel("days of out-of-sample test rows (walk-forward folds)")
    axes.set_ylabel("equity")
    axes.legend(fontsize="small")
    return _png(figure)


def rolling_skill_png(
    timestamps: Sequence[str],
    rolling_rank_ic: Sequence[float],
    *,
    promised: float,
    promised_low: float,
    promised_high: float,
    window_rows: int,
) -> bytes:
    """The serving model's rolling realized rank IC on fresh rows, against its promised interval."""
    if not rolling_rank_ic:
        raise ValueError("no rolling realized skill: fewer fresh rows than one rolling window")
    figure = _new_figure()
    axes = figure.add_subplot()
    ends = [np.datetime64(str(stamp).replace("+00:00", "")) for stamp in timestamps]
    axes.axhspan(promised_low, promised_high, color="tab:green", alpha=0.2, label="promised 95%")
    axes.axhline(promised, color="tab:green", linewidth=1, label=f"promised {promised:+.3f}")
    axes.plot(ends, rolling_rank_ic, label=f"realized, last {window_rows} rows")
    axes.axhline(0.0, color="black", linewidth=0.5)
    axes.set_xlabel("end of the rolling window (UTC)")
    axes.set_ylabel("rank IC")
    axes.tick_params(axis="x", labelrotation=30, labelsize="small")
    axes.legend(fontsize="small")
    return _png(figure)


def metrics_figures(evaluation: Evaluation) -> dict[str, bytes]:
    """Every figure of one symbol's evaluation record, by name, in display order."""
    if evaluation.history is None:
        raise ValueError("the record has no 'history' (written before the figures existed)")
    worth = evaluation.worth
    equity = (
        {}
        if worth is None
        else {
            "equity_curve": equity_curve_png(worth.equity_curve, worth.backtest.cost_bps_per_side)
        }
    )
    return {
        "loss_curves": loss_curves_png([asdict(stats) for stats in evaluation.history]),
        "confusion_matrix": confusion_matrix_png(evaluation.confusion_matrix, CLASS_NAMES),
        "reliability": reliability_diagram_png(
            [asdict(row) for row in evaluation.reliability], evaluation.ece
        ),
        "class_mix": class_mix_png(evaluation.class_mix),
        **equity,
    }


def markdown_image(png: bytes, alt: str) -> str:
    """A Markdown image tag holding the PNG itself as a base64 data URI (no file to serve)."""
    if not png.startswith(PNG_MAGIC):
        raise ValueError("markdown_image expects PNG bytes")
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode('ascii')})"
