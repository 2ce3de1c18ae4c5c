"""The main command's console: live stages and epochs, one summary table, no event records."""

from __future__ import annotations

import logging

import dagster as dg
from helpers import ALL_GATES, TABLE_HEADER
from rich.console import Console

from crpbot_assets import main
from crpbot_assets.console import (
    RunUpdate,
    SymbolResult,
    apply_entry,
    promotion_line,
    summary_table,
)
from v8_model.evaluation.gates import GATE_NAMES

PASSED_ENTRY = {
    "status": "passed",
    "gates": {name: {"passed": True} for name in GATE_NAMES},
    "promoted": True,
    "test_accuracy": 0.521,
    "baseline_accuracy": 0.318,
    "train_seconds": 50.2,
    "trainer": "local",
    "device": "cpu",
    "cost_usd": None,
}


def _entry(message: str, level: int = logging.INFO) -> dg.EventLogEntry:
    return dg.EventLogEntry(
        error_info=None,
        level=level,
        user_message=message,
        run_id="run",
        timestamp=0.0,
        step_key="model",
    )


def test_epoch_lines_and_warnings_become_progress_and_notes():
    update = RunUpdate()
    line = "symbol=ETH epoch=2 train_loss=0.1057 val_loss=0.1068 val_acc=0.5000 lr=0.001000"
    apply_entry(update, _entry(line))
    apply_entry(update, _entry("training ETH locally as job-1"))  # INFO: not shown
    apply_entry(update, _entry("removed /tmp/x, left behind", logging.WARNING))
    assert (update.epoch, update.train_loss, update.val_loss) == (2, "0.1057", "0.1068")
    assert update.notes == ["removed /tmp/x, left behind"]


def test_summary_table_rows_fit_80_columns():
    console = Console(width=80, record=True, color_system=None)
    console.print(
        summary_table(
            [
                SymbolResult("ETH", None, PASSED_ENTRY),
                SymbolResult("BTC", "check logit_range = 244.6", {**PASSED_ENTRY, "promoted": 0}),
                SymbolResult("SOL", "step features: too few rows", None),
            ]
        )
    )
    lines = console.export_text().splitlines()
    assert any(TABLE_HEADER.search(line) for line in lines)
    [eth] = [line for line in lines if line.startswith("ETH")]
    assert eth.split() == [
        "ETH",
        "ok",
        ALL_GATES,
        "yes",
        "52.1%",
        "31.8%",
        "50",
        "s",
        "local/cpu",
        "$0.00",
    ]
    [btc] = [line for line in lines if line.startswith("BTC")]
    assert btc.split()[:4] == ["BTC", "failed", ALL_GATES, "no"]
    [sol] = [line for line in lines if line.startswith("SOL")]
    assert sol.split() == ["SOL", "failed", "-", "no", "-", "-", "-", "-", "-"]
    assert max(len(line.rstrip()) for line in lines) <= 80


def test_promotion_line_says_why():
    worth = {
        "skill": {"rank_ic": 0.0012, "ci_low": -0.01, "ci_high": 0.012, "p_value": 0.41},
        "backtest": {
            "net_return": -0.031,
            "buy_and_hold_return": 0.02,
            "break_even_fee_bps": 1.5,
            "trades": 12,
        },
        "fee_bps": 7.5,
        "slippage_bps": 2.0,
    }
    no_skill = {
        **PASSED_ENTRY,
        "promoted": False,
        "gates": {**PASSED_ENTRY["gates"], "directional_skill": {"passed": False}},
        "worth": worth,
    }
    assert promotion_line(SymbolResult("ETH", "check directional_skill", no_skill)) == (
        "ETH: NOT promoted: gate(s) directional_skill failed; rank IC +0.0012 [-0.0100, +0.0120]"
        ", p = 0.4100; net -3.10% vs buy-and-hold +2.00% at fee 7.5 + slippage 2 bps/side"
        ", break-even 1.5 bps/side"
        " (not profitable after costs)"
    )
    no_trades = {**worth, "backtest": {**worth["backtest"], "net_return": 0.0, "trades": 0}}
    assert promotion_line(SymbolResult("ETH", None, {**PASSED_ENTRY, "worth": no_trades})) == (
        f"ETH: promoted: all {len(GATE_NAMES)} gates passed; rank IC +0.0012 [-0.0100, +0.0120]"
        ", p = 0.4100; net +0.00% vs buy-and-hold +2.00% at fee 7.5 + slippage 2 bps/side, no"
        " trades (no confidence threshold covered the costs on validation rows)"
    )
    assert promotion_line(SymbolResult("ETH", None, PASSED_ENTRY)) == (
        f"ETH: promoted: all {len(GATE_NAMES)} gates passed"
    )
    assert promotion_line(SymbolResult("SOL", "step features: too few rows", None)) == (
        "SOL: NOT promoted: no model trained (step features: too few rows)"
    )


def test_parallel_symbols_share_the_cores_as_threads(monkeypatch):
    """Each of `jobs` trainers gets cores // jobs threads, so they do not spin against each
    other; a user's own OMP_NUM_THREADS wins."""
    monkeypatch.setattr(main, "available_cores", lambda: 8)
    monkeypatch.delenv(main.THREADS_ENV_VAR, raising=False)
    assert main.symbol_run_env(1)[main.THREADS_ENV_VAR] == "8"
    assert main.symbol_run_env(3)[main.THREADS_ENV_VAR] == "2"
    assert main.symbol_run_env(16)[main.THREADS_ENV_VAR] == "1"
    monkeypatch.setenv(main.THREADS_ENV_VAR, "5")
    assert main.symbol_run_env(3)[main.THREADS_ENV_VAR] == "5"


def test_symbols_run_all_at_once_when_they_fit_in_one_wave(monkeypatch):
    """At most cores + 1 symbols: all at once (no symbol left to run alone at the end); more:
    one per core."""
    monkeypatch.setattr(main, "available_cores", lambda: 2)
    assert [main.default_jobs(n) for n in (1, 2, 3, 4, 8)] == [1, 2, 3, 2, 2]
    monkeypatch.setattr(main, "available_cores", lambda: 1)
    assert [main.default_jobs(n) for n in (1, 2, 3)] == [1, 2, 1]
