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
