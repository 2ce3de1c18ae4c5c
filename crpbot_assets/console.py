"""What the main command shows: live progress per symbol, then one summary table.

Progress is read back from the Dagster instance, not from the worker processes' output: each
symbol's run writes its events to the instance as always (so the UI and the run logs hold
everything), and `RunFollower` turns the new ones into the stage, the epoch and its losses.
Warnings and errors that the steps log are shown as lines above the live display; Dagster's
DEBUG event records stay in the run logs (the main command's `--verbose` shows them as well).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import dagster as dg
import sqlalchemy.exc
from rich import box
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from crpbot_assets.assets import SYMBOL_ASSET_NAMES
from v8_model.evaluation.gates import GATE_NAMES
from v8_model.evaluation.metrics import EpochStats
from v8_model.record import format_figure, is_finite_number

# The pipeline's steps as the user thinks of them; the model's gate checks are their own stage.
STAGES = ("candles", "features", "processor", "model", "checks", "promotion")
# An asset's step shows as its own name unless it is renamed here.
STAGE_NAMES = {
    "backtest": "checks",  # the worth of the model's calls, beside its gate checks
    "production_model": "promotion",
}
STAGE_OF_STEP = {name: STAGE_NAMES.get(name, name) for name in SYMBOL_ASSET_NAMES}


@dataclass
class RunUpdate:
    """What a run's new events changed; fields left None did not change."""

    stage: str | None = None
    epoch: int | None = None
    train_loss: str | None = None
    val_loss: str | None = None
    notes: list[str] = field(default_factory=list)  # warnings and errors to show in full


class RunFollower:
    """Reads one run's new event records from the instance, from where it left off."""

    def __init__(self, instance: dg.DagsterInstance, run_id: str) -> None:
        self.instance = instance
        self.run_id = run_id
        self._cursor: str | None = None

    def poll(self) -> RunUpdate:
        update = RunUpdate()
        if not self.instance.has_run(self.run_id):
            return update  # its process has not created it yet
        try:
            connection = self.instance.get_records_for_run(self.run_id, cursor=self._cursor)
        except sqlalchemy.exc.OperationalError:
            return update  # SQLite busy with the run's own write: the next poll reads on
        self._cursor = connection.cursor or self._cursor
        for record in connection.records:
            apply_entry(update, record.event_log_entry)
        return update


def apply_entry(update: RunUpdate, entry: dg.EventLogEntry) -> None:
    """Fold one event log entry into `update`."""
    event = entry.dagster_event
    if event is not None:
        if event.event_type_value == "STEP_START" and event.step_key in STAGE_OF_STEP:
            update.stage = STAGE_OF_STEP[event.step_key]
        elif event.event_type_value == "ASSET_CHECK_EVALUATION" and event.step_key == "model":
            update.stage = "checks"
        return
    message = entry.user_message or ""
    # The entry point's per-epoch line, forwarded by Pipes.
    epoch = EpochStats.parse(message)
    if epoch is not None:
        update.epoch = epoch.epoch
        update.train_loss, update.val_loss = f"{epoch.train_loss:.4f}", f"{epoch.val_loss:.4f}"
    elif entry.level >= 30:  # logging.WARNING: what a user must see, in full
        update.notes.append(message)


class ProgressBoard:
    """One live line per symbol: its stage, the epoch bar and the latest losses."""

    def __init__(self, console: Console, symbols: Sequence[str], epochs: int) -> None:
        self.console = console
        self.progress = Progress(
            TextColumn("[bold]{task.description:<6}"),
            TextColumn("{task.fields[stage]:<22}"),
            BarColumn(bar_width=20),
            TextColumn("epoch {task.completed:>3.0f}/{task.total:<3.0f}"),
            TextColumn("{task.fields[losses]}"),
            TimeElapsedColumn(),
            console=console,
        )
        self.tasks: dict[str, TaskID] = {
            symbol: self.progress.add_task(
                symbol, total=epochs, start=False, stage="waiting", losses=""
            )
            for symbol in symbols
        }

    def __enter__(self) -> ProgressBoard:
        self.progress.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.progress.stop()

    def started(self, symbol: str, run_url: str) -> None:
        self.progress.start_task(self.tasks[symbol])
        self.progress.update(self.tasks[symbol], stage=_stage_text("candles"))
        self.console.print(f"{symbol} started: {run_url}", highlight=False, soft_wrap=True)

    def apply(self, symbol: str, update: RunUpdate) -> None:
        task = self.tasks[symbol]
        for note in update.notes:
            # soft_wrap: a path or a fix is shown whole, never broken across lines.
            self.console.print(f"[yellow]{symbol}:[/] {note}", highlight=False, soft_wrap=True)
        changes: dict = {}
        if update.stage is not None:
            changes["stage"] = _stage_text(update.stage)
        if update.epoch is not None:
            changes["completed"] = update.epoch
            changes["losses"] = f"train {update.train_loss}  val {update.val_loss}"
        if changes:
            self.progress.update(task, **changes)

    def finished(self, symbol: str, failure: str | None) -> None:
        task = self.tasks[symbol]
        if failure is None:
            total = self.progress.tasks[task].total
            self.progress.update(task, stage="[green]done", completed=total)
        else:
            stage = self.progress.tasks[task].fields["stage"]
            self.progress.update(task, stage=f"[red]failed[/] at {stage}")
        self.progress.stop_task(task)


def _stage_text(stage: str) -> str:
    return f"{STAGES.index(stage) + 1}/{len(STAGES)} {stage}"


@dataclass(frozen=True)
class SymbolResult:
    """One symbol's outcome for the summary: `failure` is None when its run succeeded;
    `entry` is its gate-report entry when this run trained a model, else None."""

    symbol: str
    failure: str | None
    entry: Mapping | None


def summary_table(results: Iterable[SymbolResult]) -> Table:
    """symbol, run outcome, gates passed, promoted, test accuracy and the majority-class baseline,
    training time, where it ran, cost: one row per result."""
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, collapse_padding=True)
    for name, justify in (
        ("symbol", "left"),
        ("run", "left"),
        ("gates", "right"),
        ("promoted", "left"),
        ("test acc", "right"),
        ("baseline", "right"),
        ("train", "right"),
        ("ran on", "left"),
        ("cost", "right"),
    ):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for result in results:
        table.add_row(result.symbol, *_row(result))
    return table


def _row(result: SymbolResult) -> list[str]:
    run = "[green]ok[/]" if result.failure is None else "[red]failed[/]"
    entry = result.entry
    if entry is None:
        return [run, "-", "no", "-", "-", "-", "-", "-"]
    gates = entry.get("gates") or {}
    passed = sum(bool(gates.get(name, {}).get("passed")) for name in GATE_NAMES)
    seconds = entry.get("train_seconds")
    cost = entry.get("cost_usd")
    return [
        run,
        f"{passed}/{len(GATE_NAMES)}",
        "[green]yes[/]" if entry.get("promoted") else "no",
        _percent(entry.get("test_accuracy")),
        _percent(entry.get("baseline_accuracy")),
        "-" if seconds is None else f"{seconds:.0f} s",
        "/".join(str(entry[key]) for key in ("trainer", "device") if entry.get(key)) or "-",
        f"${cost or 0.0:.2f}",
    ]


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def promotion_line(result: SymbolResult) -> str:
    """`SYMBOL: promoted|NOT promoted: <why>`, with the skill and backtest figures behind it."""
    entry = result.entry
    if entry is None:
        why = "no model trained" + ("" if result.failure is None else f" ({result.failure})")
        return f"{result.symbol}: NOT promoted: {why}"
    gates = entry.get("gates") or {}
    failed = [name for name in GATE_NAMES if not gates.get(name, {}).get("passed")]
    if entry.get("promoted"):
        why = f"all {len(GATE_NAMES)} gates passed"
    elif failed:
        why = f"gate(s) {', '.join(failed)} failed"
    else:
        why = "a later step failed" + ("" if result.failure is None else f" ({result.failure})")
    worth = entry.get("worth")
    if worth is not None:
        skill, backtest = worth["skill"], worth["backtest"]
        why += (
            f"; rank IC {format_figure(skill['rank_ic'], '+.4f')} "
            f"[{format_figure(skill['ci_low'], '+.4f')}, {format_figure(skill['ci_high'], '+.4f')}]"
            f", p = {format_figure(skill['p_value'], '.4f')}; net "
            f"{format_figure(backtest['net_return'], '+.2%')} vs buy-and-hold "
            f"{format_figure(backtest['buy_and_hold_return'], '+.2%')} at fee "
            f"{worth['fee_bps']:g} + slippage {worth['slippage_bps']:g} bps/side, "
        )
        if backtest["trades"] == 0:
            # The thresholds chosen on validation trade nothing: a break-even of 0 would read
            # as "no edge", while it means the edge did not cover these costs there.
            why += "no trades (no confidence threshold covered the costs on validation rows)"
        else:
            why += f"break-even {format_figure(backtest['break_even_fee_bps'], '.1f')} bps/side"
            if not (is_finite_number(net := backtest["net_return"]) and net > 0):
                why += " (not profitable after costs)"
    return f"{result.symbol}: {'promoted' if entry.get('promoted') else 'NOT promoted'}: {why}"
