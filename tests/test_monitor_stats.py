"""The monitor's and the champion/challenger's statistics, on markets and scores built here.

No model is trained: drift is measured on the features of built markets, and skill on direction
scores made from the realised future (a known rank IC), so each verdict has a known answer.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from markets import market, rescaled, with_long_wicks

from v8_model.data.features import FEATURE_NAMES, build_features_dataset
from v8_model.data.segments import forward_log_returns
from v8_model.defaults import MINUTES_PER_DAY
from v8_model.evaluation.champion import KEEP_CHAMPION, PROMOTE, compare_on_shared_rows, no_champion
from v8_model.evaluation.metrics import DirectionalSkill
from v8_model.evaluation.monitor import (
    CALENDAR_FEATURES,
    MonitorInputError,
    MonitorRecord,
    MonitorSettings,
    assess_feature_drift,
    assess_realized_skill,
    monitor_window,
)

HORIZON = 15
TRAIN_DAYS, FRESH_DAYS = 20, 4
AT = TRAIN_DAYS * MINUTES_PER_DAY


def drift_of(candles: pd.DataFrame) -> object:
    """Drift of the rows after day TRAIN_DAYS against the first 70% of the days before."""
    dataset = build_features_dataset(candles)
    names = list(FEATURE_NAMES)
    fresh = dataset[dataset["timestamp"] >= candles["timestamp"].iloc[AT]][names]
    reference = dataset.iloc[: int(0.7 * AT)][names]
    mean, std = reference.mean(), reference.std()
    settings = MonitorSettings()
    return assess_feature_drift(
        reference,
        fresh,
        scaled_reference=((reference - mean) / std).to_numpy(),
        scaled_fresh=((fresh - mean) / std).to_numpy(),
        psi_threshold=settings.psi_threshold,
        max_drifted_share=settings.max_drifted_share,
        min_rows=settings.min_drift_rows,
    )


@pytest.fixture(scope="module")
def candles() -> pd.DataFrame:
    return market(TRAIN_DAYS + FRESH_DAYS, signal=0.3, seed=21)


def test_a_continuing_market_does_not_drift(candles):
    drift = drift_of(candles)
    assert drift.passed, drift.reason
    assert drift.rows >= MonitorSettings().min_drift_rows
    assert not set(CALENDAR_FEATURES) & set(drift.psi)  # the clock is not the market
    assert drift.ood_share < 0.01


def test_a_price_and_volume_level_change_does_not_drift(candles):
    drift = drift_of(rescaled(candles, AT, price=10.0, volume=100.0))
    assert drift.passed, drift.reason


def test_longer_wicks_are_a_change_of_structure(candles):
    drift = drift_of(with_long_wicks(candles, AT))
    assert not drift.passed
    assert "structure changed" in drift.reason
    assert drift.drifted_share > MonitorSettings().max_drifted_share
    assert "parkinson_ratio_50" in drift.drifted_features  # a wick-driven feature moved


def test_drift_waits_for_enough_fresh_rows(candles):
    short = with_long_wicks(candles.iloc[: AT + MINUTES_PER_DAY], AT)
    drift = drift_of(short)
    assert drift.passed and drift.reason.startswith("not enough fresh rows yet")


def skill_scores(returns: np.ndarray, strength: float, seed: int) -> np.ndarray:
    """SELL/HOLD/BUY probabilities whose direction score leans on the realised return."""
    rng = np.random.default_rng(seed)
    lean = strength * returns / returns.std() + rng.standard_normal(len(returns))
    lean = np.tanh(lean / 3) / 2  # P(BUY) - P(SELL) in (-0.5, 0.5)
    return np.column_stack([0.25 - lean / 2, np.full(len(lean), 0.5), 0.25 + lean / 2])


@pytest.fixture(scope="module")
def returns(candles) -> np.ndarray:
    forward = forward_log_returns(candles["close"], HORIZON)
    return forward[np.isfinite(forward)]


def promised(returns: np.ndarray, strength: float) -> DirectionalSkill:
    """What the test rows (the first part) showed at promotion, by the realized-skill code."""
    first = returns[: 3 * MINUTES_PER_DAY]
    measured = assess_realized_skill(
        skill_scores(first, strength, seed=1),
        first,
        horizon=HORIZON,
        promised=DirectionalSkill(0, 0, 0, 1, 0.01, False, 0, 0, HORIZON, 0),
        alpha=0.01,
        min_rows=1,
    )
    return DirectionalSkill(
        measured.rank_ic,
        measured.rank_ic_low,
        measured.rank_ic_high,
        0.001,
        0.01,
        True,
        measured.rows,
        measured.rows,
        measured.block_size,
        999,
    )


def realized(returns: np.ndarray, strength: float, promise: DirectionalSkill, rows: int):
    fresh = returns[-rows:]
    return assess_realized_skill(
        skill_scores(fresh, strength, seed=2),
        fresh,
        horizon=HORIZON,
        promised=promise,
        alpha=0.01,
        min_rows=MINUTES_PER_DAY,
    )


def test_realized_skill_passes_while_the_signal_holds(returns):
    promise = promised(returns, strength=0.3)
    skill = realized(returns, 0.3, promise, 3 * MINUTES_PER_DAY)
    assert skill.passed, skill.reason
    assert skill.rank_ic_low < promise.rank_ic < skill.rank_ic_high


def test_realized_skill_fails_when_the_signal_vanishes(returns):
    promise = promised(returns, strength=0.3)
    skill = realized(returns, 0.0, promise, 3 * MINUTES_PER_DAY)
    assert not skill.passed
    assert skill.p_below_promised < 0.005 and "significantly below the promise" in skill.reason


def test_realized_skill_fails_when_the_signal_flips(returns):
    promise = promised(returns, strength=0.3)
    skill = realized(returns, -0.3, promise, 3 * MINUTES_PER_DAY)
    assert not skill.passed and "significantly negative" in skill.reason


def test_a_short_window_says_it_cannot_tell_yet(returns):
    promise = promised(returns, strength=0.3)
    skill = realized(returns, 0.0, promise, 600)
    assert skill.passed
    assert skill.reason.startswith(f"not enough fresh rows yet (600 < {MINUTES_PER_DAY})")
    assert skill.rank_ic_low is None and skill.p_below_promised is None


def test_a_worse_challenger_is_kept_out_and_an_equal_one_is_not(returns):
    shared = returns[-3 * MINUTES_PER_DAY :]
    champion = skill_scores(shared, 0.4, seed=3)
    window = ("2024-01-21", "2024-01-24")
    kwargs = {"window": window, "horizon": HORIZON, "alpha": 0.01, "min_shared_rows": 1440}
    worse = compare_on_shared_rows(
        champion, skill_scores(shared, 0.05, seed=4), shared, champion_version="v1", **kwargs
    )
    assert worse.decision == KEEP_CHAMPION and worse.p_value < 0.01
    assert worse.challenger_rank_ic < worse.champion_rank_ic
    equal = compare_on_shared_rows(
        champion, skill_scores(shared, 0.4, seed=5), shared, champion_version="v1", **kwargs
    )
    assert equal.decision == PROMOTE and equal.p_value >= 0.01
    short = compare_on_shared_rows(
        champion[:100], champion[:100], shared[:100], champion_version="v1", **kwargs
    )
    assert short.decision == PROMOTE and short.p_value is None
    assert "too short to compare (100 < 1440 rows)" in short.reason
    first = no_champion(0.01, 1440)
    assert first.champion_version is None and first.decision == PROMOTE


def window_of(dataset: pd.DataFrame, **overrides) -> object:
    # The version trained on rows 0..1000 (when the dataset reaches that far).
    last = overrides.pop("last_timestamp", None) or str(dataset["timestamp"].iloc[1000])
    settings = {
        "first_timestamp": str(dataset["timestamp"].iloc[0]),
        "last_timestamp": last,
        "training_rows": 700,
        "max_gap": pd.Timedelta(minutes=60),
        "source": "data/BTC_features.parquet",
        "version": "v1",
    }
    return monitor_window(dataset, **(settings | overrides))


def test_the_window_starts_after_the_training_data():
    dataset = pd.DataFrame(
        {"timestamp": pd.date_range("2024-01-01", periods=2000, freq="1min", tz="UTC")}
    )
    window = window_of(dataset)
    assert window.reference == slice(0, 700) and window.fresh == slice(1001, 2000)


def test_candles_older_than_the_training_window_are_refused():
    dataset = pd.DataFrame(
        {"timestamp": pd.date_range("2024-01-01", periods=900, freq="1min", tz="UTC")}
    )
    with pytest.raises(MonitorInputError) as error:
        window_of(dataset, last_timestamp="2024-01-01 16:40:00+00:00")
    message = str(error.value)
    assert "data/BTC_features.parquet holds rows up to 2024-01-01 14:59:00+00:00" in message
    assert "older than the data production version v1 was trained on" in message


def test_candles_without_the_training_segment_are_refused():
    dataset = pd.DataFrame(
        {"timestamp": pd.date_range("2024-01-02", periods=2000, freq="1min", tz="UTC")}
    )
    with pytest.raises(MonitorInputError, match="does not contain the first training row"):
        window_of(dataset, first_timestamp="2024-01-01 00:00:00+00:00")


def test_a_gap_in_the_fresh_rows_is_refused():
    stamps = pd.date_range("2024-01-01", periods=2000, freq="1min", tz="UTC")
    dataset = pd.DataFrame({"timestamp": stamps.delete(range(1500, 1600))})
    with pytest.raises(MonitorInputError) as error:
        window_of(dataset)
    assert "1 gap(s) longer than 0 days 01:00:00" in str(error.value)
    assert "from 2024-01-02 00:59:00+00:00 to 2024-01-02 02:40:00+00:00" in str(error.value)


def test_a_corrupt_monitor_record_is_named():
    with pytest.raises(MonitorInputError) as error:
        MonitorRecord.from_json('{"symbol": "BTC"', source="root/monitor/BTC_monitor.json")
    assert str(error.value).startswith("root/monitor/BTC_monitor.json: corrupt monitor record")
    with pytest.raises(MonitorInputError, match="production_version"):
        MonitorRecord.from_json('{"symbol": "BTC"}', source="root/monitor/BTC_monitor.json")


def test_monitor_settings_are_checked():
    with pytest.raises(ValueError, match="feature_drift_severity must be one of"):
        MonitorSettings(feature_drift_severity="INFO")
    with pytest.raises(ValueError, match="skill_alpha must be in"):
        MonitorSettings(skill_alpha=0.7)
