import numpy as np
import pytest

from v8_model.evaluation.gates import (
    FORM_GATE_NAMES,
    evaluate_gates,
    evaluation_metrics,
    expected_calibration_error,
)

rng = np.random.default_rng(0)
SCALED = rng.standard_normal((3_000, 72))


def _balanced_logits(n: int = 3_000) -> np.ndarray:
    return rng.normal(0, 0.5, (n, 3))


def test_healthy_outputs_pass_all_gates():
    gates = evaluate_gates(SCALED, _balanced_logits())
    assert list(gates) == list(FORM_GATE_NAMES)
    assert all(g.passed for g in gates.values()), gates


@pytest.mark.parametrize(
    ("gate", "scaled", "logits"),
    [
        ("feature_normalization", SCALED + 0.5, _balanced_logits()),
        ("feature_normalization", SCALED * 1.5, _balanced_logits()),
        ("logit_range", SCALED, _balanced_logits() * 40),
        ("confidence_calibration", SCALED, _balanced_logits() * 40),
        ("class_balance", SCALED, _balanced_logits() + np.array([3.0, 0.0, 0.0])),
        ("no_nan_inf", SCALED, np.where(rng.random((3_000, 3)) < 0.01, np.nan, 1.0)),
    ],
)
def test_each_gate_fails_on_its_defect(gate, scaled, logits):
    result = evaluate_gates(scaled, logits)[gate]
    assert not result.passed
    assert result.threshold


def test_gate_values_are_the_measured_quantities():
    logits = np.zeros((1_000, 3))
    logits[:50] = [20.0, 0.0, 0.0]  # 5% overconfident, max |logit| 20
    gates = evaluate_gates(SCALED[:1_000], logits)
    assert gates["logit_range"].value == pytest.approx(20.0)
    assert gates["confidence_calibration"].value == pytest.approx(0.05)
    assert gates["confidence_calibration"].passed
    assert gates["no_nan_inf"].value == 0


def test_class_balance_boundaries():
    predictions_logits = np.zeros((100, 3))
    predictions_logits[:61, 0] = 1.0  # SELL 61%
    predictions_logits[61:80, 1] = 1.0
    predictions_logits[80:, 2] = 1.0
    gate = evaluate_gates(SCALED[:100], predictions_logits)["class_balance"]
    assert not gate.passed and gate.value == pytest.approx(0.61)


def test_metrics_against_majority_baseline():
    labels = np.array([0, 1, 2, 2] * 250)
    train_labels = np.array([2] * 10 + [0] * 5)
    logits = np.eye(3)[labels] * 3.0  # perfect predictions
    metrics = evaluation_metrics(logits, labels, train_labels)
    assert metrics.test_accuracy == 1.0
    assert metrics.macro_f1 == pytest.approx(1.0)
    assert metrics.baseline_class == "BUY"
    assert metrics.baseline_accuracy == pytest.approx(0.5)
    assert metrics.confusion_matrix[2][2] == 500
    assert metrics.class_mix == pytest.approx({"SELL": 0.25, "HOLD": 0.25, "BUY": 0.5})


def test_ece_zero_for_calibrated_and_large_for_overconfident():
    labels = rng.integers(0, 3, 30_000)
    uniform = np.full((30_000, 3), 1 / 3)
    uniform[:, 0] += 1e-9  # argmax SELL, confidence 1/3, accuracy ~1/3
    ece, _ = expected_calibration_error(uniform, labels)
    assert ece < 0.01
    overconfident = np.eye(3)[rng.integers(0, 3, 30_000)] * 0.98 + 0.02 / 3
    ece, table = expected_calibration_error(overconfident, labels)
    assert ece > 0.5 and sum(row.count for row in table) == 30_000


def test_each_gate_is_defined_once_and_everything_else_derives_from_it() -> None:
    import ast
    from pathlib import Path

    from crpbot_assets.checks import GATE_CHECK_SPECS
    from v8_model.evaluation.gates import GATE_NAMES, GATES, evaluate_gates

    assert [gate.number for gate in GATES] == list(range(1, len(GATES) + 1))
    assert len(set(GATE_NAMES)) == len(GATES)
    assert [(spec.name, spec.description) for spec in GATE_CHECK_SPECS] == [
        (gate.name, gate.description) for gate in GATES
    ]
    recorded = evaluate_gates(SCALED, _balanced_logits())
    assert {name: result.threshold for name, result in recorded.items()} == {
        gate.name: gate.threshold for gate in GATES[:-1]
    }
    # No other module of the library or the Dagster side spells a gate's name as a string.
    repo = Path(__file__).resolve().parents[1]
    spelled = {
        (path.relative_to(repo).as_posix(), node.value)
        for package in ("v8_model", "crpbot_assets")
        for path in (repo / package).rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Constant) and node.value in GATE_NAMES
    }
    assert {where for where, _ in spelled} == {"v8_model/evaluation/gates.py"}, spelled
    assert {name for _, name in spelled} == set(GATE_NAMES)


def test_the_skill_gate_records_its_threshold_with_the_alpha_it_ran_with() -> None:
    from v8_model.evaluation.gates import DIRECTIONAL_SKILL
    from v8_model.evaluation.metrics import DirectionalSkill
    from v8_model.evaluation.worth import skill_gate

    skill = DirectionalSkill(
        rank_ic=0.1,
        ci_low=0.05,
        ci_high=0.15,
        p_value=0.001,
        alpha=0.01,
        passed=True,
        rows=1000,
        calls=900,
        block_size=15,
        bootstrap_reps=999,
    )
    result = skill_gate(skill)
    assert result.name == DIRECTIONAL_SKILL.name and result.passed
    assert result.threshold == "rank IC > 0 with one-sided block-bootstrap p < 0.01"
