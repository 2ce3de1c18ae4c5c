"""Tests for the candle schema and `validate_candles` (v8_model.data.candles)."""

import pickle

import numpy as np
import pandas as pd
import pytest

from v8_model.data.candles import (
    CANDLE_COLUMNS,
    DEFAULT_MIN_ROWS,
    CandleValidationError,
    validate_candles,
)
from v8_model.defaults import DEFAULT_HORIZON, LONGEST_FEATURE_WINDOW

SOURCE = "s3://bucket/data/BTC_candles.parquet"


def make_candles(n: int, seed: int = 0) -> pd.DataFrame:
    """A valid 1-minute candle frame: a random walk with consistent high/low."""
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 1e-3, n)))
    open_ = np.concatenate(([100.0], close[:-1]))
    high = np.maximum(open_, close) * (1.0 + np.abs(rng.normal(0.0, 5e-4, n)))
    low = np.minimum(open_, close) * (1.0 - np.abs(rng.normal(0.0, 5e-4, n)))
    return pd.DataFrame(
        {
            "timestamp": pd.date_range("2024-01-01", periods=n, freq="min", tz="UTC"),
            "open": open_,
            "high": high,
            "low": low,
            "close": close,
            "volume": rng.gamma(2.0, 5.0, n),
        }
    )


@pytest.fixture
def candles() -> pd.DataFrame:
    return make_candles(400)


def check_fails(df: pd.DataFrame, rule: str, *fragments: str, **kwargs) -> CandleValidationError:
    with pytest.raises(CandleValidationError) as info:
        validate_candles(df, source=SOURCE, **kwargs)
    err = info.value
    message = str(err)
    assert err.rule == rule
    assert SOURCE in message
    assert "Fix:" in message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in:\n{message}"
    return err


def test_valid_frame_passes(candles: pd.DataFrame) -> None:
    validate_candles(candles, source=SOURCE)


def test_extra_columns_and_index_are_ignored(candles: pd.DataFrame) -> None:
    candles["trades"] = 3
    validate_candles(candles.set_index(candles.index + 1000))


@pytest.mark.parametrize("unit", ["s", "ms", "us", "ns"])
def test_any_timestamp_unit_passes(candles: pd.DataFrame, unit: str) -> None:
    candles["timestamp"] = candles["timestamp"].astype(f"datetime64[{unit}, UTC]")
    validate_candles(candles)


def test_integer_and_float32_values_pass(candles: pd.DataFrame) -> None:
    candles["volume"] = np.arange(len(candles))
    candles["close"] = candles["close"].astype(np.float32)
    # float32 rounding may push close past high/low; widen them so the frame stays valid
    candles["high"] *= 1.01
    candles["low"] *= 0.99
    validate_candles(candles)


@pytest.mark.parametrize("drop", [["volume"], ["open", "close"], list(CANDLE_COLUMNS)])
def test_missing_columns_are_all_listed(candles: pd.DataFrame, drop: list[str]) -> None:
    err = check_fails(
        candles.drop(columns=drop), "missing_columns", "missing columns", *(repr(c) for c in drop)
    )
    assert err.columns == tuple(drop)


def test_missing_column_hints_at_case(candles: pd.DataFrame) -> None:
    check_fails(candles.rename(columns={"close": "Close"}), "missing_columns", "'Close' -> 'close'")


def test_repeated_column_is_rejected(candles: pd.DataFrame) -> None:
    doubled = pd.concat([candles, candles[["open"]]], axis=1)
    check_fails(doubled, "duplicate_columns", "'open'", "more than once")


@pytest.mark.parametrize(
    ("column", "convert", "found"),
    [
        ("open", lambda s: s.astype(object), "object"),
        ("high", lambda s: s.astype(str).astype("string"), "str"),
        ("volume", lambda s: s > 5, "bool"),
        ("timestamp", lambda s: s.astype("int64"), "int64"),
        ("timestamp", lambda s: s.dt.tz_convert("America/New_York"), "America/New_York"),
    ],
)
def test_mistyped_column(candles: pd.DataFrame, column: str, convert, found: str) -> None:
    candles[column] = convert(candles[column])
    expected = "tz-aware UTC datetime64" if column == "timestamp" else "numeric (float or int)"
    err = check_fails(
        candles, "mistyped_columns", "mistyped columns", repr(column), expected, found
    )
    assert err.columns == (column,)


def test_all_mistyped_columns_are_listed(candles: pd.DataFrame) -> None:
    candles["open"] = candles["open"].astype(object)
    candles["volume"] = candles["volume"].astype(str)
    err = check_fails(candles, "mistyped_columns", "'open'", "'volume'")
    assert err.columns == ("open", "volume")


def test_naive_timestamp_is_rejected_with_utc_hint(candles: pd.DataFrame) -> None:
    candles["timestamp"] = candles["timestamp"].dt.tz_localize(None)
    check_fails(candles, "mistyped_columns", "'timestamp'", "naive", "tz_localize('UTC')")


@pytest.mark.parametrize(
    ("column", "value", "shown"),
    [
        ("close", np.nan, "close=nan"),
        ("volume", np.inf, "volume=inf"),
        ("open", -np.inf, "open=-inf"),
        ("timestamp", pd.NaT, "timestamp=NaT"),
    ],
)
def test_not_finite(candles: pd.DataFrame, column: str, value, shown: str) -> None:
    candles.loc[[123, 300], column] = value
    err = check_fails(
        candles, "not_finite", repr(column), "2 of 400 rows", "row 123", shown, "row 300"
    )
    assert err.rows == (123, 300)
    assert err.n_offending == 2


def test_nullable_missing_value_is_not_finite(candles: pd.DataFrame) -> None:
    candles["volume"] = candles["volume"].astype("Float64")
    candles.loc[7, "volume"] = pd.NA
    check_fails(candles, "not_finite", "'volume'", "row 7 (2024-01-01 00:07:00+00:00)")


@pytest.mark.parametrize(("column", "value"), [("open", 0.0), ("low", -1.5)])
def test_non_positive_price(candles: pd.DataFrame, column: str, value: float) -> None:
    candles.loc[42, column] = value
    if column == "open":  # keep the candle's own high/low consistent with the bad open
        candles.loc[42, "low"] = value
    check_fails(
        candles,
        "non_positive_price",
        f"{column} > 0",
        repr(column),
        "1 of 400 rows",
        f"row 42 (2024-01-01 00:42:00+00:00): {column}={value:g}",
    )


def test_high_below_open_or_close(candles: pd.DataFrame) -> None:
    candles.loc[10, "high"] = candles.loc[10, ["open", "close"]].min()
    check_fails(
        candles,
        "high_below_open_close",
        "high >= max(open, close)",
        "'high'",
        "row 10 (",
        "high=",
        "open=",
        "close=",
    )


def test_low_above_open_or_close(candles: pd.DataFrame) -> None:
    candles.loc[11, "low"] = candles.loc[11, ["open", "close"]].max()
    check_fails(
        candles, "low_above_open_close", "low <= min(open, close)", "'low'", "row 11 (", "low="
    )


def test_negative_volume(candles: pd.DataFrame) -> None:
    candles.loc[5, "volume"] = -2.0
    check_fails(candles, "negative_volume", "volume >= 0", "'volume'", "row 5 (", "volume=-2")


def test_zero_volume_passes(candles: pd.DataFrame) -> None:
    candles.loc[5, "volume"] = 0.0
    validate_candles(candles)


def test_duplicate_timestamps(candles: pd.DataFrame) -> None:
    candles.loc[200, "timestamp"] = candles.loc[199, "timestamp"]
    check_fails(
        candles,
        "duplicate_timestamp",
        "timestamps are unique",
        "'timestamp'",
        "row 200: timestamp=2024-01-01 03:19:00+00:00, same as row 199",
        "drop_duplicates",
    )


def test_decreasing_timestamps(candles: pd.DataFrame) -> None:
    stamps = candles["timestamp"].to_numpy().copy()
    stamps[[100, 101]] = stamps[[101, 100]]
    candles["timestamp"] = stamps
    check_fails(
        candles,
        "decreasing_timestamp",
        "never decrease",
        "'timestamp'",
        "row 101: timestamp=2024-01-01 01:40:00+00:00 is before row 100",
        "sort_values",
    )


def test_gap_of_exactly_max_gap_passes(candles: pd.DataFrame) -> None:
    # shift the second half so rows 199 -> 200 are exactly 60 minutes apart
    candles.loc[200:, "timestamp"] += pd.Timedelta(minutes=59)
    validate_candles(candles)
    validate_candles(candles, max_gap=pd.Timedelta(minutes=60))


def test_gap_beyond_max_gap_fails(candles: pd.DataFrame) -> None:
    candles.loc[200:, "timestamp"] += pd.Timedelta(minutes=59, seconds=1)
    err = check_fails(
        candles,
        "gap",
        "max_gap=0 days 01:00:00",
        "'timestamp'",
        "1 of 400 rows",
        "row 200: timestamp=2024-01-01 04:19:01+00:00 is 0 days 01:00:01 after row 199",
    )
    assert err.rows == (200,)


def test_custom_max_gap(candles: pd.DataFrame) -> None:
    candles.loc[200:, "timestamp"] += pd.Timedelta(minutes=2)
    validate_candles(candles, max_gap=pd.Timedelta(minutes=3))
    check_fails(candles, "gap", "max_gap=0 days 00:02:00", max_gap=pd.Timedelta(minutes=2))


def test_too_few_rows_default_explains_why() -> None:
    assert DEFAULT_MIN_ROWS == LONGEST_FEATURE_WINDOW + DEFAULT_HORIZON + 1
    validate_candles(make_candles(DEFAULT_MIN_ROWS))
    check_fails(
        make_candles(DEFAULT_MIN_ROWS - 1),
        "too_few_rows",
        f"{DEFAULT_MIN_ROWS - 1} rows, at least {DEFAULT_MIN_ROWS} needed",
        "longest feature window",
        "label horizon",
    )


def test_too_few_rows_custom(candles: pd.DataFrame) -> None:
    validate_candles(candles, min_rows=400)
    check_fails(candles, "too_few_rows", "400 rows, at least 401 needed", min_rows=401)


@pytest.mark.parametrize(
    "empty",
    [make_candles(400).iloc[:0], pd.DataFrame(columns=list(CANDLE_COLUMNS))],
    ids=["typed", "untyped"],
)
def test_empty_frame_hits_row_rule(empty: pd.DataFrame) -> None:
    check_fails(empty, "too_few_rows", "0 rows")


def test_empty_frame_without_columns_hits_missing_columns() -> None:
    check_fails(pd.DataFrame(), "missing_columns")


def test_only_first_five_offending_rows_are_shown(candles: pd.DataFrame) -> None:
    candles.loc[50:61, "volume"] = -1.0
    err = check_fails(candles, "negative_volume", "12 of 400 rows", "row 54 (", "and 7 more")
    assert "row 55 (" not in str(err)
    assert err.rows == (50, 51, 52, 53, 54)


def test_rows_are_positions_not_index_labels(candles: pd.DataFrame) -> None:
    candles.index = candles.index[::-1]
    candles.iloc[3, candles.columns.get_loc("volume")] = -1.0
    check_fails(candles, "negative_volume", "row 3 (2024-01-01 00:03:00+00:00)")


def test_rules_are_checked_in_order(candles: pd.DataFrame) -> None:
    candles.loc[300, "volume"] = -1.0  # rule 7
    candles.loc[350, "high"] = 1e-3  # rule 5: reported first
    check_fails(candles, "high_below_open_close")


def test_error_is_a_value_error_and_pickles(candles: pd.DataFrame) -> None:
    candles.loc[5, "volume"] = -2.0
    with pytest.raises(ValueError) as info:
        validate_candles(candles, source=SOURCE)
    copy = pickle.loads(pickle.dumps(info.value))
    assert str(copy) == str(info.value)
    assert (copy.rule, copy.source, copy.rows) == ("negative_volume", SOURCE, (5,))


@pytest.mark.parametrize("kwargs", [{"max_gap": pd.Timedelta(0)}, {"min_rows": -1}])
def test_bad_arguments_are_rejected(candles: pd.DataFrame, kwargs) -> None:
    with pytest.raises(ValueError) as info:
        validate_candles(candles, **kwargs)
    assert not isinstance(info.value, CandleValidationError)


def test_million_rows_validate() -> None:
    validate_candles(make_candles(1_000_000), source="big")


def test_corrupt_tiny_prices_every_seventh_candle_are_refused_naming_the_row_and_rule() -> None:
    # The red-team case: every 7th candle's prices set to 1e-300 passed validation and trained.
    candles = make_candles(DEFAULT_MIN_ROWS * 4)
    candles.loc[6::7, ["open", "high", "low", "close"]] = 1e-300
    err = check_fails(
        candles,
        "implausible_price",
        "1e-12 <= open <= 1e+12",
        "row 6 (2024-01-01 00:06:00+00:00): open=1e-300",
    )
    assert err.rows[:2] == (6, 13)


@pytest.mark.parametrize("factor", [12.0, 1 / 12.0])
def test_a_tenfold_one_minute_move_is_refused(candles: pd.DataFrame, factor: float) -> None:
    candles.loc[100:, ["open", "high", "low", "close"]] *= factor  # a mixed-scale splice
    candles.loc[100, "open"] = candles.loc[99, "close"]
    candles.loc[100, "high"] = candles.loc[100, ["open", "close"]].max()
    candles.loc[100, "low"] = candles.loc[100, ["open", "close"]].min()
    err = check_fails(candles, "implausible_move", "more than 10x", "row 100 (", "previous close=")
    assert err.rows == (100,)


def test_an_eightfold_flash_crash_within_one_minute_passes(candles: pd.DataFrame) -> None:
    candles.loc[100, "low"] = candles.loc[100, "low"] / 8  # Binance.US BTC, October 2021
    validate_candles(candles)


def test_a_constant_price_with_one_tick_is_a_stale_market_not_a_training_failure() -> None:
    candles = make_candles(86_400)
    candles[["open", "high", "low", "close"]] = 100.0
    candles.loc[50_000, ["high", "close"]] = 100.01
    candles.loc[50_001, ["high", "open"]] = 100.01
    err = check_fails(candles, "stale_series", "'close'", "steps where the close changes")
    assert "lower the learning rate" not in str(err)


def test_one_traded_minute_a_day_is_a_stale_market() -> None:
    candles = make_candles(86_400)
    candles["volume"] = 0.0
    candles.loc[43_200, "volume"] = 3.0
    check_fails(candles, "stale_series", "'volume'", "rows with non-zero volume: 0.0012%")
