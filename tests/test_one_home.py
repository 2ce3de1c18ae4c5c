"""Facts with one home: a second definition anywhere in the code fails here, naming where."""

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CODE = ("v8_model", "crpbot_assets", "bench")


def _modules():
    for package in CODE:
        for path in sorted((REPO / package).rglob("*.py")):
            yield path.relative_to(REPO).as_posix(), ast.parse(path.read_text())


def test_minutes_per_day_is_defined_once() -> None:
    from v8_model.defaults import MINUTES_PER_DAY

    assert MINUTES_PER_DAY == 1440
    spelled = set()
    for where, tree in _modules():
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and node.value == 1440:
                spelled.add((where, node.lineno))
            is_product = isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mult)
            if is_product and {
                getattr(node.left, "value", None),
                getattr(node.right, "value", None),
            } == {24, 60}:
                spelled.add((where, node.lineno))
    assert [where for where, _ in spelled] == ["v8_model/defaults.py"], spelled


def test_the_symbol_assets_are_listed_once() -> None:
    from crpbot_assets.assets import SYMBOL_ASSET_NAMES
    from crpbot_assets.console import STAGE_NAMES, STAGE_OF_STEP, STAGES
    from crpbot_assets.definitions import defs, symbol_pipeline

    assert SYMBOL_ASSET_NAMES == (
        "candles",
        "features",
        "processor",
        "model",
        "backtest",
        "production_model",
    )
    # The console shows a stage for every asset of a symbol's run, and renames only assets.
    assert tuple(STAGE_OF_STEP) == SYMBOL_ASSET_NAMES
    assert set(STAGE_NAMES) < set(SYMBOL_ASSET_NAMES)
    assert set(STAGE_OF_STEP.values()) <= set(STAGES)
    graph = defs.resolve_asset_graph()
    selected = symbol_pipeline.selection.resolve(graph)
    assert {key.to_user_string() for key in selected} == set(SYMBOL_ASSET_NAMES)
