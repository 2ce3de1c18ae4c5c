"""The gate report: what every symbol's latest model measured, as JSON and Markdown, with pictures.

Read from what the trainers stored (`models/{SYMBOL}/metrics.json` and `run_info.json`) and what
promotion stored (the serving version's `promotion.json`); a symbol with no model files is reported
as not trained, never filled in.

Each trained symbol gets a worth section (directional skill with its interval, the backtest after
costs beside buy-and-hold, the per-fold table), the champion/challenger comparison its model went
through, a monitoring section (the serving version on fresh candles: monitor/{SYMBOL}_monitor.json,
with the rolling realized skill against the promised interval) and the figures of
`v8_model.evaluation.plots` (loss curves, confusion matrix, reliability diagram, class mix, equity
curve, rolling realized skill), written as PNG files under `reports/figures/` and shown in two
Markdown files that differ only in how they reach the images:

    reports/gate_report.md          images embedded as data URIs: one self-contained file (about
                                    110 KB per symbol) that renders the same in the Dagster UI,
                                    downloaded from S3, or opened anywhere; the UI shows this one
    reports/gate_report_linked.md   images linked as `figures/{SYMBOL}_{name}.png`: a few KB of
                                    text to read and diff, rendered by any viewer of the folder
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

from crpbot_assets.storage import (
    PROMOTION_FILE,
    REPORT_JSON_KEY,
    REPORT_LINKED_MARKDOWN_KEY,
    REPORT_MARKDOWN_KEY,
    RUN_INFO_FILE,
    model_folder,
)
from v8_model.evaluation.gates import CLASS_SHARE_BAND, GATE_NAMES
from v8_model.evaluation.metrics import Evaluation, Worth
from v8_model.evaluation.monitor import MonitorInputError, MonitorRecord
from v8_model.evaluation.plots import markdown_image, metrics_figures, rolling_skill_png
from v8_model.layout import METRICS_FILE, challenger_key, monitor_key
from v8_model.record import format_figure, strict_json
from v8_model.registry.promotion import current_folder
from v8_model.storage import Store

NOT_TRAINED = "not trained"
FIGURES_FOLDER = "figures"  # beside the reports, so the linked report's paths are relative
# Alt text of each figure of v8_model.evaluation.plots.metrics_figures, in its display order.
FIGURE_TITLES = {
    "loss_curves": "training and validation loss per epoch",
    "confusion_matrix": "test confusion matrix",
    "reliability": "reliability diagram with the expected calibration error",
    "class_mix": "predicted class mix against the "
    f"{CLASS_SHARE_BAND[0] * 100:.0f}-{CLASS_SHARE_BAND[1]:.0%} band",
    "equity_curve": "walk-forward equity net and gross of costs against buy and hold",
    "monitor_skill": "rolling realized rank IC of the serving model on fresh rows against its "
    "promised interval",
}
# The backtest's figures, by their exact field names, in the order the report shows them.
BACKTEST_FIELDS = (
    "gross_return",
    "net_return",
    "buy_and_hold_return",
    "trades",
    "hit_rate",
    "exposure",
    "sharpe",
    "max_drawdown",
    "turnover",
    "break_even_fee_bps",
)

_METRIC_KEYS = (
    "test_accuracy",
    "baseline_accuracy",
    "baseline_class",
    "macro_f1",
    "baseline_macro_f1",
    "ece",
    "class_mix",
    "true_class_mix",
    "test_rows",
    "train_seconds",
    "epochs_run",
    "best_epoch",
    "device",
    "first_timestamp",
    "last_timestamp",
)
_RUN_INFO_KEYS = (
    "trainer",
    "job_name",
    "instance_type",
    "finished_at",
    "cost_usd",
    # Where the job's wall time went (crpbot_assets.sagemaker.time_split) and what was billed.
    "wall_seconds",
    "startup_seconds",
    "training_seconds",
    "upload_seconds",
    "billable_seconds",
    "warm_pool_status",
    "reused_warm_pool_of",
)


def figure_key(symbol: str, name: str) -> str:
    return f"reports/{FIGURES_FOLDER}/{symbol}_{name}.png"


def symbol_figures(store: Store, symbol: str) -> dict[str, bytes]:
    """The figures of `symbol`'s stored metrics.json as PNG bytes, by name; {} when not trained.

    Raises ValueError naming the file when the metrics lack what a figure needs.
    """
    evaluation = read_evaluation(store, symbol)
    if evaluation is None:
        return {}
    try:
        return metrics_figures(evaluation)
    except ValueError as error:
        key = f"{model_folder(symbol)}/{METRICS_FILE}"
        raise ValueError(
            f"cannot draw the figures of {store.uri(key)}: {error!r}; it needs the history, "
            "confusion matrix, reliability table, ECE and class mix that the entry point writes "
            "(retrain the model to get them)"
        ) from error


def embedded_images(symbol: str, figures: Mapping[str, bytes]) -> dict[str, str]:
    """Markdown image tags holding the PNGs themselves, by figure name."""
    return {
        name: markdown_image(png, f"{symbol} {FIGURE_TITLES[name]}")
        for name, png in figures.items()
    }


def linked_images(symbol: str, figures: Mapping[str, bytes]) -> dict[str, str]:
    """Markdown image tags pointing at the figure files, relative to the reports folder."""
    return {
        name: f"![{symbol} {FIGURE_TITLES[name]}]({FIGURES_FOLDER}/{symbol}_{name}.png)"
        for name in figures
    }


def _read_json(store: Store, key: str) -> dict | None:
    if not store.exists(key):
        return None
    return json.loads(store.read_text(key))


def read_evaluation(store: Store, symbol: str) -> Evaluation | None:
    """`symbol`'s stored evaluation record; None when it has no model."""
    key = f"{model_folder(symbol)}/{METRICS_FILE}"
    if not store.exists(key):
        return None
    return Evaluation.from_json(store.read_text(key), source=store.uri(key))


def symbol_entry(store: Store, symbol: str) -> dict:
    """One symbol's report entry, from its stored metrics, run info and promotion record."""
    evaluation = read_evaluation(store, symbol)
    if evaluation is None:
        return {"status": NOT_TRAINED}
    run_info = _read_json(store, f"{model_folder(symbol)}/{RUN_INFO_FILE}") or {}
    serving = current_folder(store, symbol)
    promotion = {} if serving is None else _read_json(store, f"{serving}/{PROMOTION_FILE}") or {}
    job_name = run_info.get("job_name")
    entry = {
        "status": "passed" if evaluation.all_gates_passed else "failed",
        "gates": {
            name: {
                "passed": evaluation.gates[name].passed,
                "value": evaluation.gates[name].value,
                "threshold": evaluation.gates[name].threshold,
            }
            for name in GATE_NAMES
            if name in evaluation.gates  # a record older than a gate lacks it
        },
        "worth": None if evaluation.worth is None else worth_entry(evaluation.worth),
        **{key: getattr(evaluation, key) for key in _METRIC_KEYS},
        **{key: run_info.get(key) for key in _RUN_INFO_KEYS},
        # Promoted means production holds this very model, not an older one.
        "promoted": bool(job_name) and promotion.get("job_name") == job_name,
        "monitor": monitor_entry(store, symbol),
    }
    comparison = _read_json(store, challenger_key(symbol))
    if comparison is not None and comparison.get("job_name") == job_name:
        entry["challenger"] = comparison  # the comparison this very model went through
    return entry


def monitor_entry(store: Store, symbol: str) -> dict | None:
    """The symbol's monitor record as a dict; {"error": why} when it cannot be read."""
    key = monitor_key(symbol)
    if not store.exists(key):
        return None
    try:
        return asdict(MonitorRecord.from_json(store.read_text(key), source=store.uri(key)))
    except MonitorInputError as error:
        return {"error": str(error)}


def monitor_figures(monitor: dict | None) -> dict[str, bytes]:
    """The rolling realized-skill picture of a readable monitor record with enough fresh rows."""
    if not monitor or "error" in monitor or not monitor["rolling_rank_ic"]:
        return {}
    png = rolling_skill_png(
        monitor["rolling_timestamps"],
        monitor["rolling_rank_ic"],
        promised=monitor["promised_rank_ic"],
        promised_low=monitor["promised_rank_ic_low"],
        promised_high=monitor["promised_rank_ic_high"],
        window_rows=int(monitor["settings"]["rolling_rows"]),
    )
    return {"monitor_skill": png}


def _verdict(passed: bool) -> str:
    return "pass" if passed else "**FAIL**"


def monitor_markdown(monitor: dict) -> str:
    """The monitoring section: the serving version on fresh rows, each check with its why."""
    if "error" in monitor:
        return f"Monitoring record unreadable: {monitor['error']}"
    realized = ("n/a" if monitor["rank_ic"] is None else f"{monitor['rank_ic']:+.4f}") + (
        ""
        if monitor["rank_ic_low"] is None
        else f" (95% {monitor['rank_ic_low']:+.4f} to {monitor['rank_ic_high']:+.4f})"
    )
    return "\n".join(
        [
            f"Production version `{monitor['production_version']}` checked "
            f"{monitor['evaluated_at']} on {monitor['rows']:,} fresh rows "
            f"({monitor['fresh_first_timestamp']} to "
            f"{monitor['fresh_last_timestamp']}), after its training data ended "
            f"{monitor['trained_last_timestamp']}.",
            "",
            "| check | result | figures |",
            "| --- | --- | --- |",
            f"| realized_skill | {_verdict(monitor['realized_skill_passed'])} "
            f"| {_cell(monitor['realized_skill_reason'])} |",
            f"| feature_drift | {_verdict(monitor['feature_drift_passed'])} "
            f"| {_cell(monitor['feature_drift_reason'])} |",
            f"| model_age | {_verdict(monitor['model_age_passed'])} "
            f"| {monitor['model_age_days']:.1f} days since promotion |",
            "",
            f"Realized rank IC {realized} against the promised {monitor['promised_rank_ic']:+.4f}. "
            f"Trading the fresh rows at the production threshold "
            f"{monitor['confidence_threshold']:.2f} and {monitor['cost_bps_per_side']:g} bps per "
            f"side: {monitor['trades']} trades, hit rate {monitor['hit_rate']:.1%}, net "
            f"{monitor['net_return']:+.2%}, gross {monitor['gross_return']:+.2%}, buy and hold "
            f"{monitor['buy_and_hold_return']:+.2%}.",
        ]
    )


def challenger_markdown(comparison: dict) -> str:
    forced = " Promoted by force (`--force`)." if comparison.get("forced") else ""
    return f"Champion / challenger: {comparison['decision']}: {comparison['reason']}.{forced}"


def worth_entry(worth: Worth) -> dict:
    """The worth section of a report entry: skill, backtest (exact field names), folds."""
    return {
        "skill": asdict(worth.skill),
        "backtest": asdict(worth.backtest),
        "folds": [
            {key: value for key, value in asdict(fold).items() if key != "backtest"}
            | {name: getattr(fold.backtest, name) for name in BACKTEST_FIELDS}
            for fold in worth.folds
        ],
        "fee_bps": worth.fee_bps,
        "slippage_bps": worth.slippage_bps,
        "long_only": worth.long_only,
        "horizon": worth.horizon,
    }


def _backtest_cells(figures: dict) -> str:
    cells = []
    for name in BACKTEST_FIELDS:
        value = figures[name]
        if name == "trades":
            cells.append(str(value))
        elif name.endswith("_return"):
            cells.append(format_figure(value, "+.2%"))
        elif name in ("hit_rate", "exposure", "max_drawdown"):
            cells.append(format_figure(value, ".1%"))
        else:
            cells.append(format_figure(value, ".2f"))
    return " | ".join(cells)


def worth_markdown(worth: dict) -> str:
    """A `worth_entry` as Markdown: skill, the backtest beside buy-and-hold, the folds."""
    skill, figures = worth["skill"], worth["backtest"]
    verdict = "passes" if skill["passed"] else "**fails**"
    side = "long only" if worth["long_only"] else "long and short"
    lines = [
        f"Directional skill {verdict}: rank IC {format_figure(skill['rank_ic'], '+.4f')} (95% "
        f"interval {format_figure(skill['ci_low'], '+.4f')} to "
        f"{format_figure(skill['ci_high'], '+.4f')}), one-sided p = "
        f"{format_figure(skill['p_value'], '.4f')} against alpha {skill['alpha']:g}, on "
        f"{skill['rows']:,} "
        f"out-of-sample rows of {len(worth['folds'])} walk-forward fold(s), "
        f"{skill['calls']:,} BUY/SELL calls, bootstrap block {skill['block_size']} rows.",
        "",
        f"Backtest ({side}, each position held {worth['horizon']} minutes, "
        f"{worth['fee_bps']:g} bps fee + {worth['slippage_bps']:g} bps slippage per side"
        + (f"; {figures['note']}" if figures["note"] else "")
        + "):",
        "",
        "| " + " | ".join(BACKTEST_FIELDS) + " |",
        "|" + " --- |" * len(BACKTEST_FIELDS),
        f"| {_backtest_cells(figures)} |",
        "",
        "| fold | train rows | test rows | test from | test to | threshold | rank IC | "
        + " | ".join(BACKTEST_FIELDS)
        + " |",
        "|" + " --- |" * (7 + len(BACKTEST_FIELDS)),
    ]
    for fold in worth["folds"]:
        lines.append(
            f"| {fold['fold']} | {fold['train_rows']:,} | {fold['test_rows']:,} "
            f"| {fold['test_start']} | {fold['test_end']} "
            f"| {format_figure(fold['confidence_threshold'], '.2f')} "
            f"| {format_figure(fold['rank_ic'], '+.4f')} | {_backtest_cells(fold)} |"
        )
    return "\n".join(lines)


def build_report(store: Store, symbols: Sequence[str], generated_at: str) -> dict:
    entries = {symbol: symbol_entry(store, symbol) for symbol in symbols}
    trained = [e for e in entries.values() if e["status"] != NOT_TRAINED]
    return {
        "generated_at": generated_at,
        "root": store.root,
        "symbols": entries,
        "trained": len(trained),
        "passed": sum(e["status"] == "passed" for e in trained),
        "total_cost_usd": round(sum(e.get("cost_usd") or 0.0 for e in trained), 4),
    }


def _number(value: float | None, digits: int = 4) -> str:
    return "n/a" if value is None else format_figure(value, f".{digits}f")


def _cell(text: object) -> str:
    """Text safe inside a Markdown table cell (thresholds such as '|logit| < 15' hold pipes)."""
    return str(text).replace("|", "\\|")


def _mix(mix: dict | None) -> str:
    if not mix:
        return "n/a"
    return " / ".join(f"{name} {share:.0%}" for name, share in mix.items())


def _warm_pool(entry: dict) -> str:
    if entry.get("trainer") != "sagemaker":
        return "n/a"
    status = entry.get("warm_pool_status") or "none"
    reused = entry.get("reused_warm_pool_of")
    if reused is None:
        return f"{status}, reuse unknown"
    return f"{status}, reused {reused}" if reused else f"{status}, cold start"


def time_table(report: dict) -> list[str]:
    """Per trained symbol: start-up (provisioning, image, data), training, upload, billed."""
    lines = [
        "## Where the time went",
        "",
        "| symbol | where | start-up s | training s | upload s | wall s | billable s | cost $ "
        "| warm pool |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for symbol, entry in report["symbols"].items():
        if entry["status"] == NOT_TRAINED:
            continue
        lines.append(
            f"| {symbol} | {entry['trainer']} / {entry['instance_type']} "
            f"| {_number(entry.get('startup_seconds'), 1)} "
            f"| {_number(entry.get('training_seconds'), 1)} "
            f"| {_number(entry.get('upload_seconds'), 1)} "
            f"| {_number(entry.get('wall_seconds'), 1)} "
            f"| {_number(entry.get('billable_seconds'), 0)} "
            f"| {_number(entry.get('cost_usd'), 2)} | {_warm_pool(entry)} |"
        )
    return lines


def render_markdown(report: dict, images: Mapping[str, Mapping[str, str]] | None = None) -> str:
    """The report as Markdown; `images[symbol]` holds that symbol's image tags, by figure name."""
    images = images or {}
    lines = [
        "# crpbot V8 gate report",
        "",
        f"Generated {report['generated_at']} from `{report['root']}`. "
        f"{report['trained']} of {len(report['symbols'])} symbols trained, "
        f"{report['passed']} passed every gate; total cost ${report['total_cost_usd']:.2f}.",
        "",
        "| symbol | gates | promoted | test acc | baseline acc | macro-F1 | baseline F1 | ECE "
        "| train s | where | cost $ |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for symbol, entry in report["symbols"].items():
        if entry["status"] == NOT_TRAINED:
            lines.append(f"| {symbol} | {NOT_TRAINED} |" + " |" * 9)
            continue
        passed = sum(gate["passed"] for gate in entry["gates"].values())
        where = f"{entry['trainer']} / {entry['instance_type']} / {entry['device']}"
        lines.append(
            f"| {symbol} | {entry['status']} ({passed}/{len(entry['gates'])}) "
            f"| {'yes' if entry['promoted'] else 'no'} "
            f"| {_number(entry['test_accuracy'])} | {_number(entry['baseline_accuracy'])} "
            f"| {_number(entry['macro_f1'])} | {_number(entry['baseline_macro_f1'])} "
            f"| {_number(entry['ece'])} | {_number(entry['train_seconds'], 1)} | {where} "
            f"| {_number(entry['cost_usd'], 2)} |"
        )
    if report["trained"]:
        lines += ["", *time_table(report)]
    for symbol, entry in report["symbols"].items():
        lines += ["", f"## {symbol}", ""]
        if entry["status"] == NOT_TRAINED:
            lines.append(f"No model under `models/{symbol}/`: {NOT_TRAINED}.")
            continue
        lines += [
            f"Job `{entry['job_name']}` finished {entry['finished_at']}; data "
            f"{entry['first_timestamp']} to {entry['last_timestamp']}; "
            f"{entry['test_rows']} test rows; {entry['epochs_run']} epochs "
            f"(best {entry['best_epoch']}).",
            "",
            f"Predicted class mix: {_mix(entry['class_mix'])}; "
            f"true class mix: {_mix(entry['true_class_mix'])}; "
            f"baseline always predicts {entry['baseline_class']}.",
            "",
            "| gate | result | value | threshold |",
            "| --- | --- | --- | --- |",
        ]
        for name, gate in entry["gates"].items():
            result = "pass" if gate["passed"] else "**FAIL**"
            lines.append(
                f"| {name} | {result} | {format_figure(gate['value'], '.4g')} | "
                f"{_cell(gate['threshold'])} |"
            )
        if entry.get("worth"):
            lines += ["", "### Worth", "", worth_markdown(entry["worth"])]
        if entry.get("challenger"):
            lines += ["", challenger_markdown(entry["challenger"])]
        if entry.get("monitor"):
            lines += ["", "### Monitoring", "", monitor_markdown(entry["monitor"])]
        if entry.get("figures_error"):
            lines += ["", f"Figures unavailable: {entry['figures_error']}"]
        elif images.get(symbol):
            # One paragraph: the images sit side by side where the page is wide enough.
            lines += ["", "\n".join(images[symbol].values())]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class WrittenReport:
    report: dict  # what reports/gate_report.json holds
    markdown: str  # reports/gate_report.md, images embedded
    figure_keys: list[str]


def write_report(store: Store, symbols: Sequence[str], generated_at: str) -> WrittenReport:
    """Build the report and write its JSON, both Markdown files and the figure files."""
    report = build_report(store, symbols, generated_at)
    embedded: dict[str, dict[str, str]] = {}
    linked: dict[str, dict[str, str]] = {}
    figure_keys = []
    for symbol, entry in report["symbols"].items():
        if entry["status"] == NOT_TRAINED:
            continue
        try:
            figures = {**symbol_figures(store, symbol), **monitor_figures(entry["monitor"])}
        except ValueError as error:
            # The numbers are still worth reporting; the report says why the pictures are missing.
            entry["figures_error"] = str(error)
            continue
        for name, png in figures.items():
            store.write_bytes(figure_key(symbol, name), png)
        entry["figures"] = {name: figure_key(symbol, name) for name in figures}
        figure_keys += entry["figures"].values()
        embedded[symbol] = embedded_images(symbol, figures)
        linked[symbol] = linked_images(symbol, figures)
    markdown = render_markdown(report, embedded)
    store.write_text(REPORT_JSON_KEY, strict_json(report, indent=1))
    store.write_text(REPORT_LINKED_MARKDOWN_KEY, render_markdown(report, linked))
    store.write_text(REPORT_MARKDOWN_KEY, markdown)
    return WrittenReport(report=report, markdown=markdown, figure_keys=figure_keys)
