"""Candle schema and its validation: what every candle source must satisfy before features.

Schema: one row per 1-minute candle; extra columns and the index are ignored.

    column      dtype
    timestamp   tz-aware UTC datetime64, any unit (s, ms, us, ns)
    open        numeric: float or int (bool, object and string columns are mistyped)
    high        numeric
    low         numeric
    close       numeric
    volume      numeric

Rules, checked in this order; the first one broken raises `CandleValidationError`:

 1. missing columns: every schema column is present (all missing ones are listed), and once.
 2. mistyped columns: dtypes as above; a naive timestamp must be localized to UTC first.
 3. not finite: no NaN/Inf in open/high/low/close/volume, no NaT timestamp.
 4. non-positive price: open, high, low and close are > 0.
 4a. implausible price: every price lies in [MIN_PRICE, MAX_PRICE] (1e-12 .. 1e12, beyond any
    quoted market; 1e-300 is a corrupt value, not a price).
 5. high below open/close: high >= max(open, close).
 6. low above open/close: low <= min(open, close).
 7. negative volume: volume >= 0 (zero-volume candles happen in quiet markets).
 8. duplicate timestamps: every timestamp is unique.
 9. decreasing timestamps: timestamps never go back in time.
10. gaps: consecutive timestamps are at most `max_gap` apart (default 60 minutes;
    a gap of exactly `max_gap` passes).
11. too few rows: at least `min_rows` rows. The default, LONGEST_FEATURE_WINDOW +
    DEFAULT_HORIZON + 1, is the longest feature window plus the label horizon plus one, so at
    least one row has both a full feature window and a label. An empty frame breaks this
    rule (or rule 1): with no rows there is nothing to type-check.
10a. implausible move: no step moves the price more than MAX_STEP_FACTOR (10x) either way:
    a candle's high/low, and each candle against the previous close. The largest real
    one-minute crashes (e.g. BTC on Binance.US, October 2021: about 8x) stay inside it.
12. constant series: close, and volume, each take more than one value (an all-zero or
    constant volume, or a price that never moves, is a placeholder, not a market).
13. stale series: in a frame long enough to train on (at least DEFAULT_MIN_ROWS rows), the close
    changes in at least MIN_ACTIVE_SHARE (1%) of the steps and the volume is non-zero in at
    least 1% of the rows: a price with one tick a day, or one traded minute among 86,400, has
    nothing to learn from and would make features constant.

Each message names the source (e.g. the file path), the rule, the column, how many rows
offend, the first few offending rows (0-based positions with their timestamps and values) and
what to fix. All checks are vectorized numpy: a million rows validate in milliseconds.
"""

from collections.abc import Callable

import numpy as np
import pandas as pd
from pandas.api.types import is_float_dtype, is_integer_dtype

from v8_model.defaults import DEFAULT_HORIZON, LONGEST_FEATURE_WINDOW

CANDLE_COLUMNS: tuple[str, ...] = ("timestamp", "open", "high", "low", "close", "volume")
PRICE_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close")
VALUE_COLUMNS: tuple[str, ...] = (*PRICE_COLUMNS, "volume")

DEFAULT_MAX_GAP = pd.Timedelta(minutes=60)
DEFAULT_MIN_ROWS = LONGEST_FEATURE_WINDOW + DEFAULT_HORIZON + 1

# Beyond any quoted market: the cheapest tokens trade near 1e-9 USD, a whole bitcoin near 1e5.
MIN_PRICE = 1e-12
MAX_PRICE = 1e12
MAX_STEP_FACTOR = 10.0  # the most one step (a candle, or a candle against the last close) moves
MIN_ACTIVE_SHARE = 0.01  # of steps where the close changes, of rows with volume

_MAX_SHOWN = 5  # offending rows quoted in a message; the count covers the rest
# Time zones whose instants are UTC; other zones are real instants too, but the schema is UTC
# so downstream code never has to reason about offsets.
_UTC_NAMES = frozenset({"UTC", "Etc/UTC"})


class CandleValidationError(ValueError):
    """A candle frame breaks the schema; the message says where, which rows and what to fix.

    The attributes carry the same facts for programs (e.g. asset-check metadata): `rule` is a
    short identifier such as ``"high_below_open_close"``, `rows` the first offending 0-based
    row positions (at most five), `n_offending` how many rows offend in all.
    """

    # Keyword defaults keep the exception picklable: BaseException pickles (cls, args, __dict__).
    def __init__(
        self,
        message: str,
        *,
        source: str = "candles",
        rule: str = "",
        columns: tuple[str, ...] = (),
        n_offending: int = 0,
        rows: tuple[int, ...] = (),
    ) -> None:
        super().__init__(message)
        self.source = source
        self.rule = rule
        self.columns = columns
        self.n_offending = n_offending
        self.rows = rows


def validate_candles(
    df: pd.DataFrame,
    *,
    source: str = "candles",
    max_gap: pd.Timedelta = DEFAULT_MAX_GAP,
    min_rows: int | None = None,
) -> None:
    """Raise `CandleValidationError` on the first schema rule `df` breaks (see module doc).

    `source` names the data in messages (a file path or URI); `max_gap` is the largest allowed
    step between consecutive timestamps; `min_rows` defaults to `DEFAULT_MIN_ROWS`.
    """
    max_gap = pd.Timedelta(max_gap)
    if not max_gap > pd.Timedelta(0):
        raise ValueError(f"max_gap must be a positive duration, got {max_gap}")
    if min_rows is None:
        min_rows = DEFAULT_MIN_ROWS
        why = (
            f"the longest feature window ({LONGEST_FEATURE_WINDOW} bars) plus the label horizon "
            f"({DEFAULT_HORIZON} bars) plus one, so at least one row has a full feature window "
            "and a label"
        )
    elif min_rows < 0:
        raise ValueError(f"min_rows must be >= 0, got {min_rows}")
    else:
        why = "min_rows asked for by the caller"

    _check_columns(df, source)
    if len(df) == 0 and min_rows > 0:  # no rows: nothing to type-check, say what is missing
        raise _too_few_rows(source, 0, min_rows, why)
    _check_dtypes(df, source)

    ts = df["timestamp"]
    # Naive datetime64 in UTC (a view, no copy), so row checks are plain numpy comparisons.
    stamps = ts.dt.tz_convert(None).to_numpy()
    values = {c: df[c].to_numpy(dtype=np.float64, na_value=np.nan) for c in VALUE_COLUMNS}
    n = len(df)

    def fail(
        rule: str, text: str, column: str, bad: np.ndarray, row: Callable[[int], str], fix: str
    ) -> None:
        # `bad` is a boolean mask over rows; only the first few positions are described.
        if bad.any():
            raise _row_error(source, rule, text, column, np.flatnonzero(bad), n, row, fix)

    def at(i: int, *cols: str) -> str:
        fields = ", ".join(f"{c}={values[c][i]:.10g}" for c in cols)
        return f"row {i} ({ts.iloc[i]}): {fields}"

    fail(
        "not_finite",
        "timestamps are not NaT",
        "timestamp",
        np.isnat(stamps),
        lambda i: f"row {i}: timestamp=NaT",
        "drop these rows or repair their timestamps from the source",
    )
    for c in VALUE_COLUMNS:
        fail(
            "not_finite",
            f"{c} is finite (no NaN/Inf)",
            c,
            ~np.isfinite(values[c]),
            lambda i, c=c: at(i, c),
            "drop these candles or repair them from the source; do not fill prices forward, "
            "a made-up candle is a made-up label",
        )
    for c in PRICE_COLUMNS:
        fail(
            "non_positive_price",
            f"{c} > 0",
            c,
            values[c] <= 0,
            lambda i, c=c: at(i, c),
            "prices must be positive: these candles are corrupt; repair them from the source "
            "or drop them",
        )
    for c in PRICE_COLUMNS:
        fail(
            "implausible_price",
            f"{MIN_PRICE:g} <= {c} <= {MAX_PRICE:g}",
            c,
            (values[c] < MIN_PRICE) | (values[c] > MAX_PRICE),
            lambda i, c=c: at(i, c),
            "no market quotes such a price: these candles are corrupt (a wrong scale or a "
            "placeholder value); repair them from the source or drop them",
        )
    o, h, lo, cl = (values[c] for c in PRICE_COLUMNS)
    fail(
        "high_below_open_close",
        "high >= max(open, close)",
        "high",
        h < np.maximum(o, cl),
        lambda i: at(i, "high", "open", "close"),
        "high must be the candle's maximum: check for swapped columns or corrupt candles",
    )
    fail(
        "low_above_open_close",
        "low <= min(open, close)",
        "low",
        lo > np.minimum(o, cl),
        lambda i: at(i, "low", "open", "close"),
        "low must be the candle's minimum: check for swapped columns or corrupt candles",
    )
    fail(
        "negative_volume",
        "volume >= 0",
        "volume",
        values["volume"] < 0,
        lambda i: at(i, "volume"),
        "volume cannot be negative: repair these candles from the source or drop them",
    )

    steps = np.diff(stamps)
    # Fast path: strictly increasing timestamps can hold neither duplicates nor reversals.
    if not (steps > np.timedelta64(0)).all():
        fail(
            "duplicate_timestamp",
            "timestamps are unique",
            "timestamp",
            pd.Index(stamps).duplicated(keep="first"),
            lambda i: (
                f"row {i}: timestamp={ts.iloc[i]}, same as row "
                f"{np.flatnonzero(stamps == stamps[i])[0]}"
            ),
            "keep one candle per timestamp, e.g. df.drop_duplicates('timestamp', keep='last')",
        )
        fail(
            "decreasing_timestamp",
            "timestamps never decrease",
            "timestamp",
            np.concatenate(([False], steps < np.timedelta64(0))),
            lambda i: (
                f"row {i}: timestamp={ts.iloc[i]} is before row {i - 1}: timestamp={ts.iloc[i - 1]}"
            ),
            "sort the candles: df.sort_values('timestamp', ignore_index=True)",
        )
    fail(
        "gap",
        f"consecutive timestamps are at most max_gap={max_gap} apart",
        "timestamp",
        np.concatenate(([False], steps > max_gap.to_timedelta64())),
        lambda i: (
            f"row {i}: timestamp={ts.iloc[i]} is {ts.iloc[i] - ts.iloc[i - 1]} after "
            f"row {i - 1}: timestamp={ts.iloc[i - 1]}"
        ),
        "fill the missing candles from the source, or, if the gap is real (e.g. an exchange "
        f"outage), pass a larger max_gap (now {max_gap})",
    )
    # The range each step spans: the candle itself, widened to the previous close.
    previous_close = np.concatenate((cl[:1], cl[:-1]))
    step_factor = np.maximum(h, previous_close) / np.minimum(lo, previous_close)
    fail(
        "implausible_move",
        f"no step moves the price more than {MAX_STEP_FACTOR:g}x (high/low, and against the "
        "previous close)",
        "close",
        step_factor > MAX_STEP_FACTOR,
        lambda i: f"{at(i, 'high', 'low', 'close')}, previous close={previous_close[i]:.10g}",
        "no market moves that far between two candles: these candles are corrupt (mixed "
        "scales, a placeholder value); repair them from the source or drop them",
    )

    if n < min_rows:
        raise _too_few_rows(source, n, min_rows, why)
    for c in ("close", "volume"):
        if n > 1 and (values[c] == values[c][0]).all():
            raise CandleValidationError(
                f"{source}: rule '{c} varies' is broken: all {n} rows have "
                f"{c}={values[c][0]:.10g}. A market's {c} changes from minute to minute; a "
                f"constant {c} leaves the features and labels without information.\nFix: check "
                "that the source holds real candles of this market, not a placeholder or a "
                "filled-in copy.",
                source=source,
                rule="constant_series",
                columns=(c,),
            )
    if n >= DEFAULT_MIN_ROWS:
        _check_activity(source, cl, values["volume"])


def _check_activity(source: str, close: np.ndarray, volume: np.ndarray) -> None:
    """Rule 13: the close moves, and volume trades, in at least MIN_ACTIVE_SHARE of minutes."""
    shares = {
        "close": ("steps where the close changes", np.mean(close[1:] != close[:-1])),
        "volume": ("rows with non-zero volume", np.mean(volume > 0)),
    }
    for column, (what, share) in shares.items():
        if share < MIN_ACTIVE_SHARE:
            raise CandleValidationError(
                f"{source}: rule 'market is active' is broken in column {column!r}: "
                f"{what}: {share:.4%} of {len(close)} rows, at least {MIN_ACTIVE_SHARE:.0%} "
                f"needed. A series that almost never moves makes features constant and leaves "
                "nothing to learn.\nFix: check that the source holds real candles of this "
                "market (not a placeholder with a few edits), or choose a more liquid market.",
                source=source,
                rule="stale_series",
                columns=(column,),
            )


def _check_columns(df: pd.DataFrame, source: str) -> None:
    present = set(df.columns)
    missing = [c for c in CANDLE_COLUMNS if c not in present]
    if missing:
        # A near miss (e.g. 'Close') is the usual cause, so point at it.
        by_lower = {str(c).lower(): c for c in df.columns}
        hints = [f"{by_lower[m]!r} -> {m!r}" for m in missing if m in by_lower]
        hint = f"; rename {', '.join(hints)}" if hints else ""
        found = [str(c) for c in df.columns[:12]]
        more = f" and {len(df.columns) - 12} more" if len(df.columns) > 12 else ""
        raise CandleValidationError(
            f"{source}: rule 'missing columns' is broken: {len(missing)} column(s) missing: "
            f"{', '.join(map(repr, missing))}. Found columns: {found}{more}.\n"
            f"Fix: provide every schema column {list(CANDLE_COLUMNS)} (lower-case names{hint}).",
            source=source,
            rule="missing_columns",
            columns=tuple(missing),
        )
    repeated = [c for c in CANDLE_COLUMNS if (df.columns == c).sum() > 1]
    if repeated:
        raise CandleValidationError(
            f"{source}: rule 'missing columns' is broken: column(s) "
            f"{', '.join(map(repr, repeated))} appear more than once, so it is ambiguous "
            "which one holds the data.\nFix: keep exactly one column of each name.",
            source=source,
            rule="duplicate_columns",
            columns=tuple(repeated),
        )


def _check_dtypes(df: pd.DataFrame, source: str) -> None:
    problems: list[str] = []
    columns: list[str] = []
    dtype = df["timestamp"].dtype
    if isinstance(dtype, pd.DatetimeTZDtype):
        if str(dtype.tz) not in _UTC_NAMES:
            problems.append(
                f"'timestamp' must be tz-aware UTC datetime64, found {dtype} "
                f"(time zone {dtype.tz}); convert it: "
                "df['timestamp'] = df['timestamp'].dt.tz_convert('UTC')"
            )
    elif pd.api.types.is_datetime64_dtype(dtype):
        problems.append(
            f"'timestamp' must be tz-aware UTC datetime64, found naive {dtype}; localize it "
            "to UTC: df['timestamp'] = df['timestamp'].dt.tz_localize('UTC') (if the naive "
            "times are local, tz_localize(<their zone>).dt.tz_convert('UTC'))"
        )
    else:
        problems.append(
            f"'timestamp' must be tz-aware UTC datetime64, found {dtype}; parse it: "
            "df['timestamp'] = pd.to_datetime(df['timestamp'], utc=True) (for epoch numbers "
            "add unit='s' or unit='ms')"
        )
    if problems:
        columns.append("timestamp")
    for c in VALUE_COLUMNS:
        dtype = df[c].dtype
        # is_integer_dtype is False for bool, so True/False never pass as prices.
        if not (is_integer_dtype(dtype) or is_float_dtype(dtype)):
            columns.append(c)
            problems.append(
                f"{c!r} must be numeric (float or int), found {dtype}; convert it: "
                f"df[{c!r}] = pd.to_numeric(df[{c!r}])"
            )
    if problems:
        lines = "\n  ".join(problems)
        raise CandleValidationError(
            f"{source}: rule 'mistyped columns' is broken in {len(columns)} column(s):\n"
            f"  {lines}\nFix: convert the column(s) as shown.",
            source=source,
            rule="mistyped_columns",
            columns=tuple(columns),
        )


def _row_error(
    source: str,
    rule: str,
    text: str,
    column: str,
    positions: np.ndarray,
    n: int,
    row: Callable[[int], str],
    fix: str,
) -> CandleValidationError:
    shown = [int(i) for i in positions[:_MAX_SHOWN]]
    lines = "\n  ".join(row(i) for i in shown)
    more = len(positions) - len(shown)
    tail = f"\n  ... and {more} more" if more else ""
    return CandleValidationError(
        f"{source}: rule '{text}' is broken in column {column!r}: {len(positions)} of {n} rows "
        f"offend. First offending rows (0-based positions):\n  {lines}{tail}\nFix: {fix}.",
        source=source,
        rule=rule,
        columns=(column,),
        n_offending=len(positions),
        rows=tuple(shown),
    )


def _too_few_rows(source: str, n: int, min_rows: int, why: str) -> CandleValidationError:
    return CandleValidationError(
        f"{source}: rule 'too few rows' is broken: {n} rows, at least {min_rows} needed "
        f"({why}).\nFix: supply a longer history of candles.",
        source=source,
        rule="too_few_rows",
    )
