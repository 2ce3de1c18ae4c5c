"""Every JSON the project writes is standard JSON; a non-finite figure is never shown as a number.

Python's json writes NaN and Infinity unless told not to; no strict reader (browsers, jq, Go,
JavaScript's JSON.parse) accepts them. The red team found `Infinity` in gate_report.json and
`+inf%` / `nan%` in the report.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import math
import re
from pathlib import Path

from test_config_record import HISTORY, _evaluation

from crpbot_assets.console import SymbolResult, promotion_line
from crpbot_assets.report import write_report
from v8_model.evaluation.metrics import Evaluation
from v8_model.layout import METRICS_FILE, REPORT_JSON_KEY, model_folder
from v8_model.record import NON_FINITE, strict_json
from v8_model.storage import open_store

PROJECT = Path(__file__).resolve().parents[1]
WRITING_PACKAGES = ("v8_model", "crpbot_assets", "bench")


def _refuse_constant(name: str) -> float:
    raise ValueError(f"non-standard JSON constant {name}")


def strict_loads(text: str) -> object:
    """json.loads as a strict reader: NaN, Infinity and -Infinity are errors."""
    return json.loads(text, parse_constant=_refuse_constant)


def test_every_json_dumps_call_in_the_project_refuses_nan():
    lax = []
    for package in WRITING_PACKAGES:
        for path in sorted((PROJECT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Attribute)
                    and node.func.attr in ("dump", "dumps")
                    and isinstance(node.func.value, ast.Name)
                    and node.func.value.id == "json"
                    and not any(
                        keyword.arg == "allow_nan"
                        and isinstance(keyword.value, ast.Constant)
                        and keyword.value.value is False
                        for keyword in node.keywords
                    )
                ):
                    lax.append(f"{path.relative_to(PROJECT)}:{node.lineno}")
    assert not lax, f"json.dump(s) without allow_nan=False (use strict_json): {lax}"


def test_non_finite_figures_are_written_as_null_and_read_back_as_nan():
    evaluation = dataclasses.replace(_evaluation(HISTORY), best_val_loss=math.inf)
    text = evaluation.to_json()
    assert strict_loads(text)["best_val_loss"] is None
    assert math.isnan(Evaluation.from_json(text).best_val_loss)
    assert strict_json({"a": [1.0, float("nan"), -math.inf]}) == '{"a": [1.0, null, null]}'


def test_a_model_with_non_finite_logits_reports_strict_json_and_n_a_never_a_number(tmp_path):
    # A model whose logits overflowed: an infinite logit range.
    evaluation = _evaluation(HISTORY)
    gates = dict(evaluation.gates)
    gates["logit_range"] = dataclasses.replace(gates["logit_range"], value=math.inf, passed=False)
    evaluation = dataclasses.replace(evaluation, gates=gates, all_gates_passed=False)
    store = open_store(tmp_path)
    store.write_text(f"{model_folder('BTC')}/{METRICS_FILE}", evaluation.to_json())

    written = write_report(store, ["BTC"], generated_at="2026-01-01T00:00:00+00:00")

    report = strict_loads(store.read_text(REPORT_JSON_KEY))
    assert report["symbols"]["BTC"]["status"] == "failed"
    assert NON_FINITE in written.markdown
    # How Python formats non-finite floats: 'inf', '+inf%', 'nan', 'nan%'.
    assert not re.findall(r"[+-]?\b(?:inf|nan)\b%?", written.markdown)
    assert "| logit_range | **FAIL** | n/a (non-finite) |" in written.markdown


def test_the_promotion_line_shows_a_non_finite_return_as_n_a_and_not_profitable():
    # A report entry read back from strict JSON: the infinite net return is null.
    skill = {"rank_ic": 0.05, "ci_low": 0.01, "ci_high": 0.09, "p_value": 0.01}
    backtest = {
        "net_return": None,
        "buy_and_hold_return": 0.02,
        "break_even_fee_bps": None,
        "trades": 12,
    }
    worth = {"skill": skill, "backtest": backtest, "fee_bps": 10.0, "slippage_bps": 2.0}
    entry = {"promoted": False, "gates": {}, "worth": worth}
    line = promotion_line(SymbolResult("BTC", failure="refused", entry=entry))
    assert f"net {NON_FINITE} vs buy-and-hold +2.00%" in line
    assert f"break-even {NON_FINITE} bps/side" in line
    assert line.endswith("(not profitable after costs)")
