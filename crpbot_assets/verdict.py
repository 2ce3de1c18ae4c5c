"""Why a symbol's run did or did not promote its model, in one line for the main command."""

from __future__ import annotations

import dagster as dg

from crpbot_assets.checks import PROFIT_CHECK_NAME
from v8_model.gates import GATE_NAMES

PRODUCTION_ASSET = dg.AssetKey("production_model")


def _number(evaluation: dg.AssetCheckEvaluation, key: str) -> float | None:
    entry = evaluation.metadata.get(key)
    value = getattr(entry, "value", None)
    return float(value) if isinstance(value, int | float) else None


def _skill(evaluation: dg.AssetCheckEvaluation) -> str:
    ic, low, high = (_number(evaluation, key) for key in ("rank_ic", "ci_low", "ci_high"))
    p_value = _number(evaluation, "value")
    if None in (ic, low, high, p_value):
        return "directional skill: n/a"
    return f"rank IC {ic:+.4f} [{low:+.4f}, {high:+.4f}], p = {p_value:.4f}"


def _profit(evaluation: dg.AssetCheckEvaluation) -> str:
    net, hold, even = (
        _number(evaluation, key)
        for key in ("net_return", "buy_and_hold_return", "break_even_fee_bps")
    )
    if None in (net, hold, even):
        return "backtest: n/a"
    return f"net {net:+.2%} vs buy-and-hold {hold:+.2%}, break-even {even:.1f} bps/side"


def promotion_verdict(symbol: str, result: dg.ExecuteInProcessResult) -> str:
    """`SYMBOL: promoted|NOT promoted: <why>` from the run's check results and materializations."""
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    promoted = any(
        event.materialization.asset_key == PRODUCTION_ASSET
        for event in result.get_asset_materialization_events()
    )
    figures = []
    if "directional_skill" in checks:
        figures.append(_skill(checks["directional_skill"]))
    if PROFIT_CHECK_NAME in checks:
        profit = checks[PROFIT_CHECK_NAME]
        warning = "" if profit.passed else f" ({profit.severity.value}: not profitable)"
        figures.append(_profit(profit) + warning)
    failed = [name for name in GATE_NAMES if name in checks and not checks[name].passed]
    if promoted:
        why = f"all {len(GATE_NAMES)} gates passed"
    elif failed:
        why = f"gate(s) {', '.join(failed)} failed"
    elif not all(name in checks for name in GATE_NAMES):
        why = "training did not finish (see the failure below)"
    else:
        why = "a later step failed (see the failure below)"
    shown = f"; {'; '.join(figures)}" if figures else ""
    return f"{symbol}: {'promoted' if promoted else 'NOT promoted'}: {why}{shown}"
