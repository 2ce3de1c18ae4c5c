import numpy as np
import pytest

from v8_model.data.labels import BUY, HOLD, SELL, LabelThresholds, forward_return_scores
from v8_model.data.split import chronological_split, minimum_embargo
from v8_model.defaults import LONGEST_FEATURE_WINDOW


def test_scores_look_forward_and_are_volatility_scaled():
    rng = np.random.default_rng(0)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.001, 2_000)))
    scores = forward_return_scores(close, horizon=15, volatility_window=60)
    assert np.isnan(scores[-15:]).all(), "the last horizon bars have no future"
    assert np.isnan(scores[:60]).all(), "the first bars have no trailing volatility"
    t = 500
    sigma = np.std(np.diff(np.log(close))[t - 60 : t], ddof=1)
    expected = np.log(close[t + 15] / close[t]) / (sigma * np.sqrt(15))
    assert scores[t] == pytest.approx(expected, rel=1e-9)
    # Doubling the volatility of the whole path leaves the scores unchanged.
    wild = 100 * np.exp(2 * np.log(close / 100))
    np.testing.assert_allclose(
        forward_return_scores(wild, 15, 60), scores, rtol=1e-9, equal_nan=True
    )


def test_flat_prices_give_unknown_scores_not_infinite():
    scores = forward_return_scores(np.full(300, 50.0))
    assert np.isnan(scores).all()


def test_thresholds_balance_training_classes_and_map_extremes():
    scores = np.random.default_rng(1).standard_t(4, 30_000)
    thresholds = LabelThresholds.fit(scores)
    labels = thresholds.assign(scores)
    shares = np.bincount(labels, minlength=3) / len(labels)
    np.testing.assert_allclose(shares, [1 / 3] * 3, atol=0.01)
    assert thresholds.assign(np.array([-100.0, 0.0, 100.0])).tolist() == [SELL, HOLD, BUY]
    with pytest.raises(ValueError, match="NaN"):
        thresholds.assign(np.array([np.nan]))


def test_split_is_chronological_with_embargo():
    split = chronological_split(100_000)
    assert split.embargo == minimum_embargo() == 15 + LONGEST_FEATURE_WINDOW
    assert split.train.start == 0 and split.test.stop == 100_000
    assert split.validation.start - split.train.stop == split.embargo
    assert split.test.start - split.validation.stop == split.embargo
    sizes = split.sizes()
    usable = 100_000 - 2 * split.embargo
    assert sizes["train"] == pytest.approx(0.70 * usable, abs=1)
    assert sizes["validation"] == pytest.approx(0.15 * usable, abs=1)
    assert sizes["test"] == pytest.approx(0.15 * usable, abs=2)


def test_split_refuses_short_embargo_and_too_little_data():
    with pytest.raises(ValueError, match="embargo"):
        chronological_split(10_000, embargo=10)
    with pytest.raises(ValueError, match="too few"):
        chronological_split(300)
    with pytest.raises(ValueError, match="fractions"):
        chronological_split(10_000, fractions=(0.5, 0.5, 0.5))
