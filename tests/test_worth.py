"""Worth before promotion: directional skill, the backtest after costs, walk-forward folds.

The statistics are checked on constructed predictions (a known answer), then on trained models:
a random walk and markets with `signal: 0.0` must show no skill, and nothing is promoted.
"""

from __future__ import annotations

import dataclasses
import json
import math

import dagster as dg
import numpy as np
import pytest
from conftest import serve_webhook

from crpbot_assets.alerts import WEBHOOK_ENV_VAR, gate_failure_alerts
from crpbot_assets.definitions import defs
from crpbot_assets.profiles import Profile, get_profile
from v8_model.config import HyperparameterError, TrainConfig, from_hyperparameters
from v8_model.data.features import build_features_dataset
from v8_model.data.synthetic import MINUTES_PER_DAY, generate_candles
from v8_model.evaluation.backtest import NO_TRADES_NOTE, run_backtest
from v8_model.evaluation.gates import evaluation_metrics
from v8_model.evaluation.metrics import Evaluation
from v8_model.evaluation.walkforward import fold_splits
from v8_model.evaluation.worth import directional_skill
from v8_model.model.pipeline import train_and_evaluate

SELL_, HOLD_, BUY_ = (0.7, 0.2, 0.1), (0.2, 0.6, 0.2), (0.1, 0.2, 0.7)


# --- the backtest, by hand -------------------------------------------------------------------


def _hand_case() -> tuple[np.ndarray, np.ndarray]:
    """Six minutes, horizon 2: BUY at 0 (+1%), SELL at 2 (price -2%), BUY at 4 (+3%)."""
    probabilities = np.array([BUY_, BUY_, SELL_, HOLD_, BUY_, HOLD_])
    returns = np.log([1.01, 1.05, 0.98, 1.0, 1.03, 1.0])
    return probabilities, returns


def test_backtest_pays_fees_on_both_sides_and_shorts_sell_calls():
    probabilities, returns = _hand_case()
    figures, curve = run_backtest(
        probabilities, returns, horizon=2, threshold=0.5, fee_bps=10, slippage_bps=0
    )
    # Trades at minutes 0 (long), 2 (short), 4 (long); minute 1's BUY is inside the first trade.
    assert figures.trades == 3
    gross = [0.01, 0.02, 0.03]  # the short earns the 2% fall
    net = [g - 2 * 0.001 for g in gross]  # 10 bps on entry and 10 bps on exit
    assert figures.gross_return == pytest.approx(np.prod([1 + g for g in gross]) - 1)
    assert figures.net_return == pytest.approx(1.008 * 1.018 * 1.028 - 1)
    assert figures.net_return == pytest.approx(np.prod([1 + n for n in net]) - 1)
    # Buy and hold over the same minutes chains the returns at 0, 2 and 4.
    assert figures.buy_and_hold_return == pytest.approx(1.01 * 0.98 * 1.03 - 1)
    assert figures.hit_rate == 1.0
    assert figures.exposure == 1.0  # three 2-minute trades cover all six minutes
    assert figures.turnover == pytest.approx(2 * 3 / (6 / MINUTES_PER_DAY))
    assert figures.max_drawdown == 0.0
    assert figures.sharpe > 0
    assert figures.note == ""
    # At the break-even cost per side the net return is zero.
    at_break_even, _ = run_backtest(
        probabilities,
        returns,
        horizon=2,
        threshold=0.5,
        fee_bps=figures.break_even_fee_bps,
        slippage_bps=0,
    )
    assert at_break_even.net_return == pytest.approx(0.0, abs=1e-9)
    assert 99 < figures.break_even_fee_bps < 101  # ~ the mean gross 2% over two sides
    assert curve.net[-1] == pytest.approx(1 + figures.net_return)
    assert curve.buy_and_hold[-1] == pytest.approx(1 + figures.buy_and_hold_return)


def test_backtest_long_only_stays_flat_on_sell_and_slippage_adds_to_the_fee():
    probabilities, returns = _hand_case()
    figures, _ = run_backtest(
        probabilities,
        returns,
        horizon=2,
        threshold=0.5,
        fee_bps=10,
        slippage_bps=5,
        long_only=True,
    )
    assert figures.trades == 2  # the SELL at minute 2 is skipped
    assert figures.net_return == pytest.approx((1.01 - 0.003) * (1.03 - 0.003) - 1)
    assert figures.exposure == pytest.approx(4 / 6)
    assert figures.cost_bps_per_side == 15


def test_backtest_losing_short_has_a_drawdown():
    probabilities = np.array([BUY_, HOLD_, SELL_, HOLD_])
    returns = np.log([1.02, 1.0, 1.05, 1.0])  # the short loses 5%
    figures, _ = run_backtest(
        probabilities, returns, horizon=2, threshold=0.5, fee_bps=0, slippage_bps=0
    )
    assert figures.hit_rate == 0.5
    assert figures.net_return == pytest.approx(1.02 * 0.95 - 1)
    assert figures.max_drawdown == pytest.approx(0.05)


def test_threshold_without_trades_gives_zeros_and_a_note():
    probabilities, returns = _hand_case()
    figures, curve = run_backtest(
        probabilities, returns, horizon=2, threshold=0.95, fee_bps=10, slippage_bps=2
    )
    assert figures.trades == 0 and figures.note == NO_TRADES_NOTE
    numbers = [v for v in dataclasses.asdict(figures).values() if isinstance(v, float)]
    assert all(math.isfinite(v) for v in numbers)
    assert figures.net_return == figures.gross_return == figures.sharpe == 0.0
    assert figures.hit_rate == figures.exposure == figures.break_even_fee_bps == 0.0
    assert figures.buy_and_hold_return == pytest.approx(1.01 * 0.98 * 1.03 - 1)
    assert curve.net == [1.0] * len(curve.bars)


# --- bad settings ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "setting"),
    [
        ({"fee_bps": -1.0}, "fee_bps"),
        ({"slippage_bps": -0.5}, "slippage_bps"),
        ({"min_confidence": 0.2}, "min_confidence"),
        ({"min_confidence": 1.0}, "min_confidence"),
        ({"folds": 0}, "folds"),
        ({"skill_alpha": 0.0}, "skill_alpha"),
    ],
)
def test_bad_setting_is_refused_by_name(change, setting):
    with pytest.raises(ValueError, match=f"training setting {setting}"):
        TrainConfig(**change)


def test_too_many_folds_for_the_data_names_the_setting_and_the_most_allowed():
    assert len(fold_splits(86_000, 5, horizon=15)) == 5
    with pytest.raises(ValueError, match=r"folds=9 is too many .* use at most 5 fold"):
        fold_splits(86_000, 9, horizon=15)


def test_long_only_hyperparameter_is_a_spelled_out_boolean():
    assert from_hyperparameters({"long-only": "true"}).long_only is True
    assert from_hyperparameters({"long-only": "False"}).long_only is False
    with pytest.raises(HyperparameterError, match="'long-only': expected true or false"):
        from_hyperparameters({"long-only": "maybe"})


def test_profit_check_severity_is_a_checked_profile_setting():
    assert get_profile("demo").profit_check_severity == "WARN"
    with pytest.raises(ValueError, match="profit_check_severity must be one of"):
        Profile("demo", days=1, min_coverage_days=1, train=TrainConfig(), profit_check_severity="X")


# --- directional skill on constructed predictions --------------------------------------------


def _volatility_only_market(n: int = 30_000, horizon: int = 15, seed: int = 3):
    """|move| follows a known volatility; its sign is a coin flip. The model knows the volatility
    (it predicts HOLD in calm minutes) but leans BUY or SELL at random."""
    rng = np.random.default_rng(seed)
    log_vol = np.convolve(rng.standard_normal(n + 999), np.ones(1000) / 30, "valid")
    sigma = np.exp(log_vol)
    shocks = rng.standard_normal(n + horizon) * np.concatenate([sigma, sigma[-horizon:]])
    returns = np.convolve(shocks, np.ones(horizon), "valid")[:n]  # overlapping horizons
    wild = sigma > np.median(sigma)
    lean = rng.random(n) < 0.5
    probabilities = np.tile(HOLD_, (n, 1))
    probabilities[wild & lean] = BUY_
    probabilities[wild & ~lean] = SELL_
    cut = np.quantile(np.abs(returns), 1 / 3)  # a third of the minutes are HOLD
    labels = np.where(returns > cut, 2, np.where(returns < -cut, 0, 1))
    return probabilities, returns, labels


def test_volatility_only_skill_fails_directional_skill():
    probabilities, returns, labels = _volatility_only_market()
    # Three-class fit beats the majority baseline: HOLD-vs-move is guessable from volatility.
    metrics = evaluation_metrics(np.log(probabilities), labels, labels)
    assert metrics.test_accuracy > metrics.baseline_accuracy + 0.05
    skill = directional_skill(probabilities, returns, horizon=15, alpha=0.01)
    assert not skill.passed
    assert skill.ci_low <= 0 <= skill.ci_high
    assert skill.block_size >= 15 and skill.calls > 10_000


def test_real_direction_passes_directional_skill():
    """The control: the same market with the lean following the sign of the move passes."""
    probabilities, returns, _ = _volatility_only_market()
    rng = np.random.default_rng(9)
    right = rng.random(len(returns)) < 0.55  # right 55% of the time
    leans_up = np.where(right, returns > 0, returns <= 0)
    probabilities = np.where(leans_up[:, None], np.array(BUY_), np.array(SELL_))
    skill = directional_skill(probabilities, returns, horizon=15, alpha=0.01)
    assert skill.passed and skill.p_value < 0.01 and skill.ci_low > 0


# --- trained models --------------------------------------------------------------------------


def _trained(signal: float, clustering: bool, seed: int, symbol: str = "BTC") -> Evaluation:
    candles = generate_candles(
        symbol,
        minutes=21 * MINUTES_PER_DAY,
        seed=seed,
        signal=signal,
        volatility_clustering=clustering,
    )
    config = TrainConfig(epochs=1, batch_size=1024, folds=2, seed=seed)
    return train_and_evaluate(
        build_features_dataset(candles), symbol=symbol, config=config
    ).evaluation


def test_random_walk_out_of_sample_skill_interval_covers_zero():
    """No leakage: on a random walk nothing chosen from data can find direction out of sample."""
    evaluation = _trained(signal=0.0, clustering=False, seed=2)
    worth = evaluation.worth
    assert worth is not None and len(worth.folds) == 2
    assert worth.skill.ci_low <= 0 <= worth.skill.ci_high
    assert not evaluation.gates["directional_skill"].passed
    assert not evaluation.all_gates_passed
    # The folds test back to back on rows none of their training or validation reached.
    first, second = worth.folds
    assert first.test_end < second.test_start
    assert worth.skill.rows == first.test_rows + second.test_rows
    # The record, worth included, survives its JSON round trip.
    assert Evaluation.from_json(evaluation.to_json()) == evaluation


def test_fold_segments_never_touch_their_test_rows():
    for split in fold_splits(30_000, 3, horizon=15):
        assert split.train.stop + split.embargo <= split.validation.start
        assert split.validation.stop + split.embargo <= split.test.start


def test_null_markets_with_volatility_clustering_promote_nothing(dagster_instance, tmp_path):
    """Three `signal: 0.0` markets (fixed seeds) through the graph: none is promoted, each for
    lack of directional skill, and the alert carries the skill figures."""
    pipeline = defs.resolve_job_def("symbol_pipeline")
    run_config = {
        "resources": {
            "storage": {"config": {"root": str(tmp_path / "root")}},
            "profile": {
                "config": {
                    "name": "demo",
                    "days": 21,
                    "min_coverage_days": 7,
                    "epochs": 1,
                    "batch_size": 1024,
                    "folds": 2,
                }
            },
        },
        "ops": {"candles": {"config": {"signal": 0.0, "volatility_clustering": True}}},
    }
    for symbol in ("BTC", "ETH", "SOL"):
        result = pipeline.execute_in_process(
            partition_key=symbol,
            instance=dagster_instance,
            run_config=run_config,
            raise_on_error=False,
        )
        assert not result.success
        checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
        skill = checks["directional_skill"]
        assert not skill.passed, symbol
        assert {"rank_ic", "ci_low", "ci_high", "calls"} <= set(skill.metadata)
        materialized = {
            e.materialization.asset_key.to_user_string()
            for e in result.get_asset_materialization_events()
        }
        assert "production_model" not in materialized
    assert not (tmp_path / "root" / "production").exists()
    with serve_webhook() as webhook, pytest.MonkeyPatch.context() as env:
        env.setenv(WEBHOOK_ENV_VAR, webhook.url)
        gate_failure_alerts(dg.build_sensor_context(instance=dagster_instance))
        skill_alerts = [m for m in webhook.messages if "directional_skill =" in m["text"]]
    assert len(skill_alerts) == 3
    assert all({"rank_ic", "ci_low", "ci_high"} <= set(m["figures"]) for m in skill_alerts)
    # Plain, finite JSON all the way down: no numpy scalars, no NaN or Infinity.
    assert json.loads(json.dumps(skill_alerts, allow_nan=False)) == skill_alerts
