import numpy as np
import pandas as pd
import pytest

from v8_model.data.candles import validate_candles
from v8_model.data.synthetic import generate_candles


def _log_returns(candles: pd.DataFrame) -> np.ndarray:
    return np.diff(np.log(candles["close"].to_numpy()))


def test_candles_are_valid_and_deterministic():
    first = generate_candles("BTC", minutes=5_000, seed=3)
    second = generate_candles("BTC", minutes=5_000, seed=3)
    validate_candles(first, source="synthetic BTC")
    pd.testing.assert_frame_equal(first, second)
    assert not first.equals(generate_candles("BTC", minutes=5_000, seed=4))
    assert str(first["timestamp"].dt.tz) == "UTC"
    assert (first["timestamp"].diff().dropna() == pd.Timedelta(minutes=1)).all()


def test_symbols_differ_in_price_level_and_volatility():
    minutes = 20_000
    btc, eth, sol = (generate_candles(s, minutes=minutes, seed=1) for s in ("BTC", "ETH", "SOL"))
    assert btc["close"].iloc[0] > 10 * eth["close"].iloc[0] > 100 * sol["close"].iloc[0]
    assert _log_returns(btc).std() < _log_returns(eth).std() < _log_returns(sol).std()


def test_fat_tails_and_volatility_clustering():
    returns = _log_returns(generate_candles("ETH", minutes=200_000, seed=2))
    kurtosis = np.mean((returns - returns.mean()) ** 4) / returns.var() ** 2
    assert kurtosis > 5, "returns should be fat-tailed"
    absolute = np.abs(returns)
    clustering = np.corrcoef(absolute[:-1], absolute[1:])[0, 1]
    assert clustering > 0.1, "large moves should follow large moves"

    iid = _log_returns(
        generate_candles("ETH", minutes=200_000, seed=2, volatility_clustering=False)
    )
    assert abs(np.corrcoef(np.abs(iid[:-1]), np.abs(iid[1:]))[0, 1]) < 0.02


def test_intraday_volume_cycle():
    candles = generate_candles("SOL", minutes=14 * 1440, seed=5)
    by_hour = candles.groupby(candles["timestamp"].dt.hour)["volume"].mean()
    assert by_hour.loc[15] > 2 * by_hour.loc[3]


def test_planted_signal_makes_returns_autocorrelated():
    def lag_correlation(signal: float) -> float:
        r = _log_returns(
            generate_candles(
                "BTC", minutes=200_000, seed=9, signal=signal, volatility_clustering=False
            )
        )
        past = pd.Series(r).rolling(30).sum().to_numpy()[:-1]
        future = r[1:]
        keep = np.isfinite(past)
        return np.corrcoef(past[keep], future[keep])[0, 1]

    assert abs(lag_correlation(0.0)) < 0.01
    assert lag_correlation(0.2) > 0.05


def test_rejects_bad_arguments():
    with pytest.raises(ValueError, match="minutes"):
        generate_candles("BTC", minutes=0)
    with pytest.raises(ValueError, match="signal"):
        generate_candles("BTC", minutes=10, signal=1.5)


def test_two_years_of_one_symbol_is_complete_and_valid():
    # The speed target lives in bench/synthetic.py; here only that the seed's size comes out
    # whole: every minute of two years, once, in order, and valid candles.
    minutes = 2 * 365 * 1440
    candles = generate_candles("BTC", minutes=minutes, seed=0)
    assert len(candles) == minutes
    spacing = candles["timestamp"].diff().dropna().unique()
    assert list(spacing) == [pd.Timedelta(minutes=1)]
    validate_candles(candles, source="BTC")
