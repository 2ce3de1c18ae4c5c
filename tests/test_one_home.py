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

    # From candles to promotion in graph order (the whole graph: tests/test_assets_definitions.py).
    assert SYMBOL_ASSET_NAMES[0] == "candles" and SYMBOL_ASSET_NAMES[-1] == "production_model"
    # The console shows a stage for every asset of a symbol's run, and renames only assets.
    assert tuple(STAGE_OF_STEP) == SYMBOL_ASSET_NAMES
    assert set(STAGE_NAMES) < set(SYMBOL_ASSET_NAMES)
    assert set(STAGE_OF_STEP.values()) <= set(STAGES)
    graph = defs.resolve_asset_graph()
    selected = symbol_pipeline.selection.resolve(graph)
    assert {key.to_user_string() for key in selected} == set(SYMBOL_ASSET_NAMES)


def test_the_container_contract_is_spelled_only_in_its_module() -> None:
    """/opt/ml and the env names the entry point reads appear in v8_model.job.contract only."""
    from v8_model.job import contract

    read = {
        contract.BASE_DIR_ENV,
        contract.INPUT_CONFIG_DIR_ENV,
        contract.HYPERPARAMETERS_ENV,
        contract.CHANNELS_ENV,
        contract.MODEL_DIR_ENV,
        contract.OUTPUT_DIR_ENV,
        contract.FAILURE_FILE_ENV,
        contract.HYPERPARAMETERS_FILE,
    }
    spelled = set()
    for where, tree in _modules():
        for node in ast.walk(tree):
            text = node.value if isinstance(node, ast.Constant) else None
            if isinstance(text, str) and (text in read or text.startswith(contract.ML_ROOT)):
                spelled.add(where)
            if isinstance(text, str) and text.startswith("SM_CHANNEL_"):
                spelled.add(where)
    assert spelled == {"v8_model/job/contract.py"}, spelled
    assert str(contract.CONTAINER.channel_dir(contract.CODE_CHANNEL)) == "/opt/ml/input/data/code"
    assert contract.channel_env(contract.TRAINING_CHANNEL) == "SM_CHANNEL_TRAINING"
