"""Fresh 1-minute candles from an exchange through ccxt: paginated, rate-limited, incremental.

`update_candles` keeps one parquet file of validated candles per market up to date:

- incremental: it reads the stored file and asks the exchange only for the minutes after its
  last candle (or from `start` when nothing is stored);
- paginated: `fetch_candle_pages` calls `fetch_ohlcv(market, "1m", since=ms, limit=page_limit)`
  and advances from the last candle returned;
- rate-limited: ccxt throttles calls itself (`enableRateLimit=True`); rate-limit and transient
  network errors are retried with bounded exponential backoff, anything else fails at once;
- resumable: after each page the new candles are merged with the stored ones, validated with
  `validate_candles` and written atomically, so an interruption after page k leaves pages 1..k
  stored and the next call resumes after them, and a failed page writes nothing of its own.

Coinbase (the default, as the seed's data) answers `fetch_ohlcv` with the candles of the window
[since, since + limit minutes) and omits minutes without trades: a page can be short, or empty
while later candles exist. So an empty page skips its window; only one that reaches `until`
ends the download. A missing stretch longer than `max_gap` (default `DEFAULT_MAX_GAP`, 60
minutes, the same default the candle schema uses) fails validation with an error naming where
it is; see `update_candles` for what to do about it.

No Dagster import, and ccxt is imported only by `make_exchange`: everything else works with any
object that has ccxt's `fetch_ohlcv`, `id` and `rateLimit` (the tests use a fake exchange).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from v8_model.data.candles import (
    CANDLE_COLUMNS,
    DEFAULT_MAX_GAP,
    VALUE_COLUMNS,
    CandleValidationError,
    validate_candles,
)
from v8_model.storage import Store, open_store

DEFAULT_EXCHANGE = "coinbase"
DEFAULT_QUOTE = "USD"
TIMEFRAME = "1m"
DEFAULT_PAGE_LIMIT = 300  # Coinbase's most candles per request
DEFAULT_MAX_RETRIES = 5
DEFAULT_BACKOFF_S = 1.0
DEFAULT_MAX_BACKOFF_S = 60.0
INSTALL_HINT = "pip install 'crpbot-v8[exchange]' (or: pip install ccxt)"
# Pandas' default unit for parsed datetimes; ms exchange stamps convert losslessly.
TIMESTAMP_DTYPE = "datetime64[us, UTC]"

# ccxt's transient errors, matched by class name anywhere in the error's MRO so that ccxt's own
# classes and look-alikes (a fake exchange, a wrapper) are recognized without importing ccxt.
# In ccxt 4 the last four subclass NetworkError; they are listed for look-alikes that do not.
RETRYABLE_ERROR_NAMES = frozenset(
    {
        "NetworkError",
        "RateLimitExceeded",
        "DDoSProtection",
        "RequestTimeout",
        "ExchangeNotAvailable",
    }
)

_MINUTE = pd.Timedelta(minutes=1)
_logger = logging.getLogger(__name__)

TimestampLike = pd.Timestamp | datetime | str


class ExchangeFetchError(RuntimeError):
    """A page could not be fetched: a hard error, or transient errors beyond `max_retries`.

    `market`, `since` (the page's first minute) and `attempts` (calls made for this page) say
    where it stopped; the exchange's own error is the `__cause__`.
    """

    def __init__(self, message: str, *, market: str, since: pd.Timestamp, attempts: int) -> None:
        super().__init__(message)
        self.market = market
        self.since = since
        self.attempts = attempts


@dataclass(frozen=True)
class CandleUpdate:
    """What one `update_candles` call did. Timestamps are UTC; None when nothing is stored."""

    uri: str
    exchange: str
    market: str
    requested_from: pd.Timestamp  # the first minute asked of the exchange
    until: pd.Timestamp  # exclusive end of the request
    pages: int  # non-empty pages fetched and stored
    rows_added: int
    duplicates_dropped: int  # candles the exchange sent twice, identical
    retries: int  # transient errors retried
    rows: int  # candles in the stored file now
    first_timestamp: pd.Timestamp | None
    last_timestamp: pd.Timestamp | None

    @property
    def changed(self) -> bool:
        return self.rows_added > 0

    @property
    def data_version(self) -> str:
        """Identifies the stored content: the file only grows, so its span and size suffice."""
        return f"{self.first_timestamp}/{self.last_timestamp}/{self.rows}"

    def as_metadata(self) -> dict[str, str | int]:
        """Plain values for e.g. Dagster materialization metadata (timestamps as ISO text)."""
        return {
            name: value if isinstance(value, int) else str(value)
            for name, value in dataclasses.asdict(self).items()
        }


def make_exchange(name: str = DEFAULT_EXCHANGE, **options: Any) -> Any:
    """A ccxt exchange (public data only, no keys needed) that throttles itself to its rate limit.

    `options` go to the ccxt constructor (e.g. `timeout=30000`) and may override
    `enableRateLimit`.
    """
    try:
        import ccxt
    except ImportError as error:
        raise ImportError(
            f"downloading candles from an exchange needs ccxt, which is not installed: "
            f"{INSTALL_HINT}"
        ) from error
    exchange_class = getattr(ccxt, name, None)
    if name not in ccxt.exchanges or exchange_class is None:
        raise ValueError(
            f"ccxt has no exchange {name!r}; use one of ccxt.exchanges, e.g. 'coinbase'"
        )
    return exchange_class({"enableRateLimit": True, **options})


def market_for(
    symbol: str, markets: Mapping[str, str] | None = None, *, quote: str = DEFAULT_QUOTE
) -> str:
    """The exchange market of `symbol`: `markets[symbol]` if given, else `{SYMBOL}/{quote}`.

    Coinbase quotes BTC, ETH and SOL in USD (`BTC/USD`, ...), as the seed's data.
    """
    if markets and symbol in markets:
        return markets[symbol]
    return f"{symbol.upper()}/{quote}"


def is_retryable(error: BaseException) -> bool:
    """Whether `error` is a rate-limit or transient network error worth retrying."""
    return any(cls.__name__ in RETRYABLE_ERROR_NAMES for cls in type(error).__mro__)


def fetch_candle_pages(
    exchange: Any,
    market: str,
    *,
    since: TimestampLike,
    until: TimestampLike,
    page_limit: int = DEFAULT_PAGE_LIMIT,
    max_retries: int = DEFAULT_MAX_RETRIES,
    sleep: Callable[[float], None] = time.sleep,
    backoff: float = DEFAULT_BACKOFF_S,
    max_backoff: float = DEFAULT_MAX_BACKOFF_S,
    on_retry: Callable[[BaseException, float], None] | None = None,
) -> Iterator[pd.DataFrame]:
    """Yield the 1-minute candles of [since, until) page by page, as candle frames.

    Each page comes from one successful `fetch_ohlcv(market, "1m", since=ms, limit=page_limit)`;
    the next starts one minute after the page's last candle. Candles at or after `until` are cut
    off. A page may repeat candles from before its `since` when the exchange does; it is not
    validated here. An empty page skips its window (minutes without trades) or, when the window
    reaches `until`, ends the download.

    Rate-limit and transient network errors (`is_retryable`) are retried up to `max_retries`
    times per page, waiting min(max_backoff, max(backoff, rateLimit / 1000) * 2**k) seconds
    before the k-th retry (k = 0, 1, ...), through `sleep`; `on_retry(error, delay)` hears of
    each. Any other error, or the retries running out, raises `ExchangeFetchError` naming the
    market and since.
    The generator fetches a page only when asked for it, so a consumer that stops (or fails)
    after page k causes no further calls.
    """
    if page_limit < 1:
        raise ValueError(f"page_limit must be >= 1, got {page_limit}")
    if max_retries < 0:
        raise ValueError(f"max_retries must be >= 0, got {max_retries}")
    start, end = _minute_ceil(since), _minute_ceil(until)
    # ccxt's rateLimit is the pause between calls in ms; a retry never comes sooner than that.
    base_delay = max(backoff, float(getattr(exchange, "rateLimit", 0) or 0) / 1000.0)
    window = page_limit * _MINUTE
    while start < end:
        rows = _fetch_with_retries(
            exchange,
            market,
            start,
            page_limit,
            max_retries,
            base_delay,
            max_backoff,
            sleep,
            on_retry,
        )
        if not rows:
            if start + window >= end:
                return
            start += window
            continue
        page = _page_frame(rows, exchange, market, start)
        page = page[~(page["timestamp"] >= end)].reset_index(drop=True)  # NaT rows stay for checks
        ahead = page["timestamp"][page["timestamp"] >= start]
        if ahead.empty:
            if len(page) < len(rows):  # everything left was at or after `until`
                return
            raise ExchangeFetchError(
                f"{_describe_call(exchange, market, start, page_limit)} returned {len(rows)} "
                f"candle(s), none at or after since (latest: {page['timestamp'].max()}): the "
                "exchange ignores `since` for this market, so pages cannot advance. Check the "
                "market name and the exchange's fetch_ohlcv support.",
                market=market,
                since=start,
                attempts=1,
            )
        yield page
        start = ahead.max() + _MINUTE


def update_candles(
    store: Store | str | Path,
    key: str,
    exchange: Any,
    market: str,
    *,
    start: TimestampLike,
    until: TimestampLike | None = None,
    max_gap: pd.Timedelta | str = DEFAULT_MAX_GAP,
    page_limit: int = DEFAULT_PAGE_LIMIT,
    max_retries: int = DEFAULT_MAX_RETRIES,
    pages_per_write: int = 1,
    sleep: Callable[[float], None] = time.sleep,
    backoff: float = DEFAULT_BACKOFF_S,
    max_backoff: float = DEFAULT_MAX_BACKOFF_S,
    log: Callable[[str], None] | None = None,
) -> CandleUpdate:
    """Bring the candle file `key` in `store` up to `until` with candles of `market`; a summary.

    `store` is a `Store` or a root for `open_store` (a local folder or `s3://bucket/prefix`);
    `key` is e.g. `candles/BTC_candles.parquet`. With a stored file the download resumes at the
    minute after its last candle and `start` is ignored (history is never extended backwards:
    for an earlier start, write to a new key). `until` (exclusive) defaults to the current
    minute, and is never later than that: the current minute's candle is still forming and would
    later conflict with its final version.

    After each page: identical repeats of candles (within the page or of stored ones) are
    dropped; a repeated timestamp with different values raises `CandleValidationError`
    (rule 'conflicting_duplicate') naming it; the stored and new candles are validated with
    `validate_candles(source=<uri>, max_gap=max_gap, min_rows=1)`, then written atomically.
    `pages_per_write` > 1 writes every that many pages instead (a long first download rewrites
    the growing file less often); a failure still writes the pages validated before it, and only
    a hard kill loses up to `pages_per_write - 1` fetched pages, fetched again on the next call.

    A gap error (rule 'gap') names the candles on both sides of the gap; nothing of that page is
    stored. Re-run first: a transient omission is fetched again. If it persists, the exchange has
    no candles there (an outage, or a market without trades): re-run with a larger `max_gap`
    covering it. The stored file is validated with the same `max_gap` on every call.
    """
    if pages_per_write < 1:
        raise ValueError(f"pages_per_write must be >= 1, got {pages_per_write}")
    say = log or _logger.info
    if isinstance(store, str | Path):
        store = open_store(store)
    max_gap = pd.Timedelta(max_gap)
    uri = store.uri(key)
    now = pd.Timestamp.now(tz="UTC").floor("min")
    end = now if until is None else min(_minute_ceil(until), now)

    stored = _read_stored(store, key, uri, max_gap)
    resume = _minute_ceil(start) if stored.empty else stored["timestamp"].iloc[-1] + _MINUTE
    exchange_id = str(getattr(exchange, "id", type(exchange).__name__))
    say(
        f"{exchange_id} {market}: {len(stored)} candles stored in {uri}; fetching [{resume}, {end})"
    )

    retries = 0

    def count_retry(error: BaseException, delay: float) -> None:
        nonlocal retries
        retries += 1
        say(f"{exchange_id} {market}: {type(error).__name__}: {error}; retry in {delay:.1f} s")

    pages = rows_added = duplicates = pending = 0
    try:
        for page in fetch_candle_pages(
            exchange,
            market,
            since=resume,
            until=end,
            page_limit=page_limit,
            max_retries=max_retries,
            sleep=sleep,
            backoff=backoff,
            max_backoff=max_backoff,
            on_retry=count_retry,
        ):
            merged, added, dropped = _merge_page(stored, page, resume, uri, exchange_id, market)
            validate_candles(merged, source=uri, max_gap=max_gap, min_rows=1)
            stored = merged  # only a validated page gets here
            pages, rows_added, duplicates = pages + 1, rows_added + added, duplicates + dropped
            pending += 1
            if pending >= pages_per_write:
                store.write_parquet(key, stored)
                pending = 0
    finally:
        # Pages validated before a failure (or the end) are kept; the failing page never is.
        if pending:
            store.write_parquet(key, stored)

    say(f"{exchange_id} {market}: {pages} page(s), {rows_added} candles added, {retries} retries")
    return CandleUpdate(
        uri=uri,
        exchange=exchange_id,
        market=market,
        requested_from=resume,
        until=end,
        pages=pages,
        rows_added=rows_added,
        duplicates_dropped=duplicates,
        retries=retries,
        rows=len(stored),
        first_timestamp=None if stored.empty else stored["timestamp"].iloc[0],
        last_timestamp=None if stored.empty else stored["timestamp"].iloc[-1],
    )


def _fetch_with_retries(
    exchange: Any,
    market: str,
    since: pd.Timestamp,
    limit: int,
    max_retries: int,
    base_delay: float,
    max_backoff: float,
    sleep: Callable[[float], None],
    on_retry: Callable[[BaseException, float], None] | None,
) -> list:
    ms = int(since.value // 1_000_000)
    attempt = 0
    while True:
        try:
            return list(exchange.fetch_ohlcv(market, TIMEFRAME, since=ms, limit=limit) or [])
        except Exception as error:
            call = _describe_call(exchange, market, since, limit)
            if not is_retryable(error):
                raise ExchangeFetchError(
                    f"{call} failed: {type(error).__name__}: {error}. This error is not "
                    "transient, so it was not retried; fix its cause (market name, exchange "
                    "options) and run again: candles stored so far are kept.",
                    market=market,
                    since=since,
                    attempts=attempt + 1,
                ) from error
            if attempt == max_retries:
                raise ExchangeFetchError(
                    f"{call} still failed after {max_retries} retries: "
                    f"{type(error).__name__}: {error}. The exchange is rate-limiting or "
                    "unreachable; run again later (it resumes after the last stored candle), "
                    "or allow more with max_retries / max_backoff.",
                    market=market,
                    since=since,
                    attempts=attempt + 1,
                ) from error
            delay = min(max_backoff, base_delay * 2**attempt)
            if on_retry is not None:
                on_retry(error, delay)
            sleep(delay)
            attempt += 1


def _page_frame(rows: list, exchange: Any, market: str, since: pd.Timestamp) -> pd.DataFrame:
    """ccxt's `[ms, open, high, low, close, volume]` rows as a candle frame (None → NaN)."""
    try:
        values = np.asarray(rows, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise _malformed(rows, exchange, market, since) from error
    if values.ndim != 2 or values.shape[1] != len(CANDLE_COLUMNS):
        raise _malformed(rows, exchange, market, since)
    frame = pd.DataFrame(values[:, 1:], columns=list(VALUE_COLUMNS))
    stamps = pd.to_datetime(values[:, 0], unit="ms", utc=True).astype(TIMESTAMP_DTYPE)
    frame.insert(0, "timestamp", stamps)
    # Exchanges usually answer oldest first; a stable sort makes it certain.
    return frame.sort_values("timestamp", kind="stable", ignore_index=True)


def _malformed(rows: list, exchange: Any, market: str, since: pd.Timestamp) -> ExchangeFetchError:
    return ExchangeFetchError(
        f"{_describe_call(exchange, market, since, len(rows))} returned malformed candles "
        f"(expected rows [ms, open, high, low, close, volume]), first: {rows[0]!r}",
        market=market,
        since=since,
        attempts=1,
    )


def _merge_page(
    stored: pd.DataFrame,
    page: pd.DataFrame,
    resume: pd.Timestamp,
    uri: str,
    exchange_id: str,
    market: str,
) -> tuple[pd.DataFrame, int, int]:
    """Stored candles plus the page's new ones; also (rows added, identical repeats dropped).

    Repeats must be identical: the same timestamp with other values means the exchange revised
    a candle, and which version is right is the user's call, not this function's.
    """
    unique = page.drop_duplicates(ignore_index=True)  # identical candles within the page
    dropped = len(page) - len(unique)
    repeated = unique["timestamp"].duplicated(keep=False) & unique["timestamp"].notna()
    if repeated.any():
        when = unique["timestamp"][repeated].iloc[0]
        raise _conflict(uri, exchange_id, market, when, unique[unique["timestamp"] == when])

    # Candles the store already holds (the exchange repeating the previous page's last one).
    stamps = stored["timestamp"].dt.tz_convert(None).to_numpy()
    incoming = unique["timestamp"].dt.tz_convert(None).to_numpy()
    positions = np.minimum(stamps.searchsorted(incoming), max(len(stamps) - 1, 0))
    known = (stamps[positions] == incoming) if len(stamps) else np.zeros(len(unique), bool)
    if known.any():
        old = stored.iloc[positions[known]].reset_index(drop=True)
        new = unique[known].reset_index(drop=True)
        same = (old[list(VALUE_COLUMNS)] == new[list(VALUE_COLUMNS)]).all(axis=1)
        if not same.all():
            i = int(np.flatnonzero(~same.to_numpy())[0])
            when = new["timestamp"].iloc[i]
            both = pd.concat([old.iloc[[i]], new.iloc[[i]]], ignore_index=True)
            raise _conflict(uri, exchange_id, market, when, both, stored_first=True)
        dropped += int(known.sum())
    # Candles before the requested range that the store lacks are outside what was asked for.
    fresh = unique[~known & ~(unique["timestamp"] < resume)]
    merged = pd.concat([stored, fresh], ignore_index=True) if len(stored) else fresh
    return merged.reset_index(drop=True), len(fresh), dropped


def _conflict(
    uri: str,
    exchange_id: str,
    market: str,
    when: pd.Timestamp,
    versions: pd.DataFrame,
    *,
    stored_first: bool = False,
) -> CandleValidationError:
    shown = "\n  ".join(
        ", ".join(f"{c}={row[c]:.10g}" for c in VALUE_COLUMNS) for _, row in versions.iterrows()
    )
    which = "stored, then the exchange's" if stored_first else "as the exchange sent them"
    return CandleValidationError(
        f"{uri}: {exchange_id} {market} sent two different candles for {when} ({which}):\n"
        f"  {shown}\nNothing from this page was stored. Fix: within one page it is an exchange "
        "error: run again later. Against a stored candle, the exchange revised its history (or "
        "the stored file came from another source): check which is right, then delete the "
        "stored candles from that minute on (or the file) and run again to re-download them.",
        source=uri,
        rule="conflicting_duplicate",
        columns=("timestamp",),
        n_offending=1,
    )


def _read_stored(store: Store, key: str, uri: str, max_gap: pd.Timedelta) -> pd.DataFrame:
    if not store.exists(key):
        return _empty_candles()
    frame = store.read_parquet(key)
    # The file should hold what an earlier call wrote; a broken one stops before any download.
    validate_candles(frame, source=uri, max_gap=max_gap, min_rows=0)
    frame = frame[list(CANDLE_COLUMNS)].astype({"timestamp": TIMESTAMP_DTYPE})
    return frame.astype(dict.fromkeys(VALUE_COLUMNS, np.float64))


def _empty_candles() -> pd.DataFrame:
    frame = pd.DataFrame({c: pd.Series(dtype=np.float64) for c in VALUE_COLUMNS})
    frame.insert(0, "timestamp", pd.Series(dtype=TIMESTAMP_DTYPE))
    return frame


def _minute_ceil(value: TimestampLike) -> pd.Timestamp:
    """A UTC timestamp rounded up to the minute; naive input is taken as UTC."""
    stamp = pd.Timestamp(value)
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    return stamp.ceil("min")


def _describe_call(exchange: Any, market: str, since: pd.Timestamp, limit: int) -> str:
    exchange_id = getattr(exchange, "id", type(exchange).__name__)
    ms = int(since.value // 1_000_000)
    return f"{exchange_id} fetch_ohlcv({market!r}, {TIMEFRAME!r}, since={ms} ({since}), {limit=})"
