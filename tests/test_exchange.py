"""Exchange candles: pagination, incremental updates, retries, resumption and every bad page.

All against `tests/fake_exchange.py` (no network, no ccxt needed) with `sleep` recorded, not
slept. Markets are 3,000 minutes in pages of 100, so a full download is 30 pages.
"""

from __future__ import annotations

import io
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import fake_exchange as fx
import pandas as pd
import pytest

from crpbot_assets.exchange import (
    DEFAULT_MAX_GAP,
    TIMESTAMP_DTYPE,
    ExchangeFetchError,
    fetch_candle_pages,
    is_retryable,
    make_exchange,
    market_for,
    update_candles,
)
from v8_model.data.candles import CandleValidationError
from v8_model.storage import open_store

MINUTES = 3_000
PAGE = 100
MARKET = "BTC/USD"
KEY = "candles/BTC_candles.parquet"
START = pd.Timestamp("2024-01-01", tz="UTC")
END = START + pd.Timedelta(minutes=MINUTES)


@pytest.fixture(scope="module")
def candles() -> pd.DataFrame:
    return fx.market(MINUTES)


@pytest.fixture
def store(tmp_path):
    return open_store(tmp_path / "root")


class Sleeps(list):
    """An injected `sleep` that records the delays instead of waiting."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def update(store, exchange, *, until=END, **options):
    options.setdefault("sleep", Sleeps())
    return update_candles(
        store, KEY, exchange, MARKET, start=START, until=until, page_limit=PAGE, **options
    )


def stored(store) -> pd.DataFrame:
    return pd.read_parquet(io.BytesIO(store.read_bytes(KEY)))


def expected(candles: pd.DataFrame, minutes: int | None = None) -> pd.DataFrame:
    """The first `minutes` of the market as the store holds them."""
    frame = candles if minutes is None else candles.iloc[:minutes]
    return frame.astype({"timestamp": TIMESTAMP_DTYPE}).reset_index(drop=True)


def minute(n: int) -> pd.Timestamp:
    return START + pd.Timedelta(minutes=n)


# Pagination.
def test_pages_together_are_the_source_market(candles):
    exchange = fx.FakeExchange(candles)
    pages = list(
        fetch_candle_pages(
            exchange, MARKET, since=START, until=END, page_limit=PAGE, sleep=Sleeps()
        )
    )
    assert len(pages) == MINUTES // PAGE
    assert all(len(page) == PAGE for page in pages)
    pd.testing.assert_frame_equal(pd.concat(pages, ignore_index=True), expected(candles))
    # Each call starts one minute after the previous page's last candle, with the page limit.
    assert exchange.sinces == [minute(n) for n in range(0, MINUTES, PAGE)]
    assert {(c.symbol, c.timeframe, c.limit) for c in exchange.calls} == {(MARKET, "1m", PAGE)}


def test_until_cuts_the_last_page_and_ends_the_download(candles):
    exchange = fx.FakeExchange(candles)
    pages = list(
        fetch_candle_pages(
            exchange, MARKET, since=START, until=minute(250), page_limit=PAGE, sleep=Sleeps()
        )
    )
    assert [len(page) for page in pages] == [100, 100, 50]
    assert pages[-1]["timestamp"].iloc[-1] == minute(249)
    assert len(exchange.calls) == 3


def test_empty_windows_are_skipped_and_an_empty_last_window_ends(candles, store):
    # 250 minutes without trades: the windows starting inside them come back empty.
    holey = candles.drop(index=range(1_020, 1_270)).reset_index(drop=True)
    exchange = fx.FakeExchange(holey)
    summary = update(store, exchange, max_gap="6h")
    assert summary.rows_added == MINUTES - 250
    sinces = exchange.sinces
    skipped = sinces.index(minute(1_020))
    # Two empty windows are skipped; the third holds minutes 1,270..1,319.
    assert sinces[skipped : skipped + 4] == [minute(n) for n in (1_020, 1_120, 1_220, 1_320)]
    assert len(sinces) == len(set(sinces)) == 31
    pd.testing.assert_frame_equal(stored(store), expected(holey))


def test_full_download_equals_the_market(candles, store):
    exchange = fx.FakeExchange(candles)
    summary = update(store, exchange)
    pd.testing.assert_frame_equal(stored(store), expected(candles))
    assert (summary.pages, summary.rows_added, summary.rows, summary.retries) == (
        30,
        MINUTES,
        MINUTES,
        0,
    )
    assert (summary.first_timestamp, summary.last_timestamp) == (START, minute(MINUTES - 1))
    assert summary.requested_from == START and summary.until == END and summary.changed
    assert summary.uri == store.uri(KEY) and summary.exchange == "fakecoinbase"
    metadata = summary.as_metadata()
    assert metadata["rows_added"] == MINUTES and metadata["last_timestamp"] == str(minute(2_999))
    assert summary.data_version == f"{START}/{minute(MINUTES - 1)}/{MINUTES}"


def test_works_with_an_s3_store(candles, request):
    bucket = request.getfixturevalue("s3_bucket")  # moto on 127.0.0.1 (conftest)
    s3 = open_store(f"s3://{bucket}/prefix")
    update(s3, fx.FakeExchange(candles), until=minute(1_000))
    update(f"s3://{bucket}/prefix", fx.FakeExchange(candles))  # a root string works too
    pd.testing.assert_frame_equal(stored(s3), expected(candles))


# Incremental.
def test_second_call_fetches_only_the_missing_minutes(candles, store):
    update(store, fx.FakeExchange(candles), until=minute(1_234))
    pd.testing.assert_frame_equal(stored(store), expected(candles, 1_234))

    exchange = fx.FakeExchange(candles)
    summary = update(store, exchange)
    assert exchange.sinces[0] == minute(1_234)
    assert exchange.sinces == [minute(n) for n in range(1_234, MINUTES, PAGE)]
    assert summary.requested_from == minute(1_234) and summary.rows_added == MINUTES - 1_234
    pd.testing.assert_frame_equal(stored(store), expected(candles))


def test_an_up_to_date_store_makes_no_calls(candles, store):
    update(store, fx.FakeExchange(candles))
    exchange = fx.FakeExchange(candles)
    summary = update(store, exchange)
    assert exchange.calls == [] and summary.rows_added == 0 and not summary.changed
    assert summary.rows == MINUTES


def test_until_defaults_to_the_current_minute_and_never_passes_it(candles, store):
    # The current minute's candle is still forming: it must not be stored.
    recent = pd.Timestamp.now(tz="UTC") - pd.Timedelta("10min")
    before = pd.Timestamp.now(tz="UTC").floor("min")
    summary = update_candles(store, KEY, fx.FakeExchange(candles), MARKET, start=recent)
    assert before <= summary.until <= pd.Timestamp.now(tz="UTC").floor("min")
    tomorrow = pd.Timestamp.now(tz="UTC") + pd.Timedelta("1D")
    late = update_candles(
        store, KEY, fx.FakeExchange(candles), MARKET, start=recent, until=tomorrow
    )
    assert late.until <= pd.Timestamp.now(tz="UTC")
    assert late.rows == 0 and not store.exists(KEY)  # the fake market is in 2024


# Retries.
@pytest.mark.parametrize(
    "error",
    [
        fx.RateLimitExceeded("429 too many requests"),
        fx.DDoSProtection("slow down"),
        fx.RequestTimeout("timed out"),
        fx.ExchangeNotAvailable("503"),
        fx.NetworkError("connection reset"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_transient_errors_are_retried_with_growing_backoff(candles, store, error):
    faults = {n: fx.raises(error) for n in (3, 4, 5)}
    exchange = fx.FakeExchange(candles, rate_limit=100, faults=faults)
    sleeps = Sleeps()
    summary = update(store, exchange, sleep=sleeps, backoff=0.5)
    assert sleeps == [0.5, 1.0, 2.0]
    assert summary.retries == 3 and summary.pages == 30
    assert exchange.sinces[2:6] == [minute(200)] * 4  # the same page asked again
    pd.testing.assert_frame_equal(stored(store), expected(candles))


def test_backoff_honours_the_rate_limit_and_its_cap(candles, store):
    faults = {n: fx.raises(fx.RateLimitExceeded("429")) for n in range(2, 7)}
    exchange = fx.FakeExchange(candles, rate_limit=1_500, faults=faults)
    sleeps = Sleeps()
    update(store, exchange, sleep=sleeps, backoff=0.1, max_backoff=10.0)
    # The first wait is the exchange's rateLimit (1.5 s), not the smaller backoff; then doubled.
    assert sleeps == [1.5, 3.0, 6.0, 10.0, 10.0]


def test_retries_run_out_with_a_clear_error_and_earlier_pages_kept(candles, store):
    faults = {n: fx.raises(fx.RateLimitExceeded("429 too many requests")) for n in range(3, 20)}
    exchange = fx.FakeExchange(candles, faults=faults)
    sleeps = Sleeps()
    with pytest.raises(ExchangeFetchError, match="still failed after 3 retries") as caught:
        update(store, exchange, sleep=sleeps, max_retries=3, backoff=1.0)
    error = caught.value
    assert isinstance(error.__cause__, fx.RateLimitExceeded)
    assert (error.market, error.since, error.attempts) == (MARKET, minute(200), 4)
    assert MARKET in str(error) and "run again later" in str(error)
    assert sleeps == [1.0, 2.0, 4.0] and len(exchange.calls) == 2 + 4
    pd.testing.assert_frame_equal(stored(store), expected(candles, 200))


def test_a_hard_error_is_not_retried_and_names_market_and_since(candles, store):
    faults = {4: fx.raises(fx.BadSymbol("market BTC/USD is delisted"))}
    exchange = fx.FakeExchange(candles, faults=faults)
    sleeps = Sleeps()
    with pytest.raises(ExchangeFetchError, match="not transient") as caught:
        update(store, exchange, sleep=sleeps)
    message = str(caught.value)
    assert "'BTC/USD'" in message and str(minute(300)) in message and "delisted" in message
    assert isinstance(caught.value.__cause__, fx.BadSymbol)
    assert sleeps == [] and len(exchange.calls) == 4
    pd.testing.assert_frame_equal(stored(store), expected(candles, 300))


def test_real_ccxt_errors_are_classified_by_name():
    ccxt = pytest.importorskip("ccxt")
    assert is_retryable(ccxt.RateLimitExceeded("x")) and is_retryable(ccxt.RequestTimeout("x"))
    assert is_retryable(ccxt.DDoSProtection("x")) and is_retryable(ccxt.OnMaintenance("x"))
    assert not is_retryable(ccxt.BadSymbol("x")) and not is_retryable(ccxt.AuthenticationError("x"))
    assert not is_retryable(ValueError("x"))


# Interruption and resumption.
def test_interrupted_run_resumes_to_the_same_file(candles, tmp_path):
    whole = open_store(tmp_path / "whole")
    update(whole, fx.FakeExchange(candles))

    interrupted = open_store(tmp_path / "interrupted")
    with pytest.raises(KeyboardInterrupt):
        update(interrupted, fx.FakeExchange(candles, faults={12: fx.raises(KeyboardInterrupt())}))
    pd.testing.assert_frame_equal(stored(interrupted), expected(candles, 1_100))

    exchange = fx.FakeExchange(candles)
    update(interrupted, exchange)
    assert exchange.sinces[0] == minute(1_100)
    assert interrupted.read_bytes(KEY) == whole.read_bytes(KEY)


def test_a_killed_run_leaves_whole_pages_and_resumes(candles, tmp_path):
    # SIGKILL in the middle of the 8th call: no handler runs, only what was written survives.
    root = tmp_path / "root"
    child = (
        "import os, signal, fake_exchange as fx\n"
        "from crpbot_assets.exchange import update_candles\n"
        "kill = lambda rows: os.kill(os.getpid(), signal.SIGKILL)\n"
        f"exchange = fx.FakeExchange(fx.market({MINUTES}), faults={{8: kill}})\n"
        f"update_candles({str(root)!r}, {KEY!r}, exchange, {MARKET!r}, start={str(START)!r},\n"
        f"               until={str(END)!r}, page_limit={PAGE})\n"
    )
    tests = Path(__file__).resolve().parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tests), str(tests.parent)])}
    result = subprocess.run([sys.executable, "-c", child], env=env, timeout=60, check=False)
    assert result.returncode == -signal.SIGKILL
    store = open_store(root)
    pd.testing.assert_frame_equal(stored(store), expected(candles, 700))
    assert store.list_keys() == [KEY]  # no temporary file is left visible

    exchange = fx.FakeExchange(candles)
    update(store, exchange)
    assert exchange.sinces[0] == minute(700)
    pd.testing.assert_frame_equal(stored(store), expected(candles))


def test_pages_per_write_keeps_validated_pages_on_failure(candles, store):
    writes = []
    original = store.write_bytes
    store.write_bytes = lambda key, data: (writes.append(key), original(key, data))[1]
    faults = {7: fx.raises(fx.ExchangeError("boom"))}
    with pytest.raises(ExchangeFetchError):
        update(store, fx.FakeExchange(candles, faults=faults), pages_per_write=4)
    # Pages 1-4 in one write, then pages 5-6 written when page 7 failed.
    assert len(writes) == 2
    pd.testing.assert_frame_equal(stored(store), expected(candles, 600))


def test_each_page_is_written_by_default(candles, store):
    writes = []
    original = store.write_bytes
    store.write_bytes = lambda key, data: (writes.append(key), original(key, data))[1]
    update(store, fx.FakeExchange(candles), until=minute(500))
    assert writes == [KEY] * 5


# Bad pages: nothing of the page is written, earlier pages are kept.
def test_a_gap_beyond_max_gap_names_where_and_keeps_earlier_pages(candles, store):
    # 90 minutes without candles (230..319), beyond the default 60: page 3 ends at minute 229,
    # page 4 (since 230) brings minutes 320..329 and fails.
    holey = candles.drop(index=range(230, 320)).reset_index(drop=True)
    with pytest.raises(CandleValidationError) as caught:
        update(store, fx.FakeExchange(holey))
    error = caught.value
    assert error.rule == "gap" and pd.Timedelta("60min") == DEFAULT_MAX_GAP
    assert str(minute(229)) in str(error) and str(minute(320)) in str(error)
    assert "larger max_gap" in str(error) and store.uri(KEY) in str(error)
    pd.testing.assert_frame_equal(stored(store), expected(candles, 230))

    # A real outage: the user allows it and the download goes on from where it stopped.
    exchange = fx.FakeExchange(holey)
    update(store, exchange, max_gap="2h")
    assert exchange.sinces[0] == minute(230)
    pd.testing.assert_frame_equal(stored(store), expected(holey))


def test_a_transient_gap_is_fetched_again_on_the_next_call(candles, store):
    with pytest.raises(CandleValidationError, match="gap"):
        update(store, fx.FakeExchange(candles, faults={5: fx.drops(10, 70)}))
    pd.testing.assert_frame_equal(stored(store), expected(candles, 400))
    update(store, fx.FakeExchange(candles))
    pd.testing.assert_frame_equal(stored(store), expected(candles))


def test_identical_duplicates_are_dropped(candles, store):
    exchange = fx.FakeExchange(candles)
    # Page 4 repeats one of its own candles, and page 6 repeats page 5's last one.
    exchange.faults = {4: fx.repeats(17), 6: fx.overlaps(exchange.row(499))}
    summary = update(store, exchange)
    assert summary.duplicates_dropped == 2 and summary.rows_added == MINUTES
    pd.testing.assert_frame_equal(stored(store), expected(candles))


def test_a_conflicting_duplicate_in_a_page_is_an_error(candles, store):
    with pytest.raises(CandleValidationError, match="two different candles") as caught:
        update(store, fx.FakeExchange(candles, faults={3: fx.conflicts(42)}))
    assert caught.value.rule == "conflicting_duplicate"
    assert str(minute(242)) in str(caught.value)
    pd.testing.assert_frame_equal(stored(store), expected(candles, 200))


def test_a_candle_that_differs_from_the_stored_one_is_an_error(candles, store):
    update(store, fx.FakeExchange(candles), until=minute(300))
    exchange = fx.FakeExchange(candles)
    revised = exchange.row(299)
    revised[4] = (revised[4] + revised[3]) / 2  # another close, still within high/low
    exchange.faults = {1: fx.overlaps(revised)}
    with pytest.raises(CandleValidationError, match="two different candles") as caught:
        update(store, exchange)
    assert caught.value.rule == "conflicting_duplicate"
    assert str(minute(299)) in str(caught.value) and "stored" in str(caught.value)
    pd.testing.assert_frame_equal(stored(store), expected(candles, 300))


@pytest.mark.parametrize(
    ("fields", "rule"),
    [
        ({"high": 1.0, "low": 2.0}, "high_below_open_close"),
        ({"close": math.nan}, "not_finite"),
        ({"volume": -1.0}, "negative_volume"),
    ],
)
def test_a_corrupt_candle_fails_validation_and_its_page_is_not_written(
    candles, store, fields, rule
):
    with pytest.raises(CandleValidationError) as caught:
        update(store, fx.FakeExchange(candles, faults={4: fx.corrupts(5, **fields)}))
    assert caught.value.rule == rule and store.uri(KEY) in str(caught.value)
    assert caught.value.rows == (305,)  # the row the file would have had
    pd.testing.assert_frame_equal(stored(store), expected(candles, 300))


def test_a_broken_stored_file_stops_before_any_call(candles, store):
    broken = expected(candles, 500)
    broken.loc[10, "high"] = 0.5 * broken.loc[10, "low"]
    buffer = io.BytesIO()
    broken.to_parquet(buffer, index=False)
    store.write_bytes(KEY, buffer.getvalue())
    exchange = fx.FakeExchange(candles)
    with pytest.raises(CandleValidationError, match="high"):
        update(store, exchange)
    assert exchange.calls == []


def test_an_exchange_that_ignores_since_is_an_error_not_a_loop(candles, store):
    stale = fx.FakeExchange(candles)
    stale.faults = {n: (lambda rows: [stale.row(0)]) for n in range(2, 5)}
    with pytest.raises(ExchangeFetchError, match="ignores `since`"):
        update(store, stale)
    assert len(stale.calls) == 2


def test_malformed_rows_are_an_error_naming_the_call(candles, store):
    faults = {2: lambda rows: [row[:4] for row in rows]}
    with pytest.raises(ExchangeFetchError, match="malformed candles") as caught:
        update(store, fx.FakeExchange(candles, faults=faults))
    assert caught.value.since == minute(100)
    pd.testing.assert_frame_equal(stored(store), expected(candles, 100))


# Construction.
def test_market_for():
    assert [market_for(s) for s in ("BTC", "ETH", "SOL")] == ["BTC/USD", "ETH/USD", "SOL/USD"]
    assert market_for("BTC", {"BTC": "BTC/USDC"}) == "BTC/USDC"
    assert market_for("ETH", quote="EUR") == "ETH/EUR"


def test_make_exchange_builds_a_rate_limited_ccxt_exchange():
    pytest.importorskip("ccxt")
    exchange = make_exchange()  # constructing one makes no request
    assert exchange.id == "coinbase" and exchange.enableRateLimit and exchange.rateLimit > 0
    assert make_exchange("coinbase", timeout=5_000).timeout == 5_000
    with pytest.raises(ValueError, match="no exchange 'nope'"):
        make_exchange("nope")


def test_the_module_imports_without_ccxt_and_says_how_to_install_it():
    code = (
        "import sys; sys.modules['ccxt'] = None\n"  # `import ccxt` now fails, as if absent
        "import crpbot_assets.exchange as ex\n"
        "try:\n    ex.make_exchange()\n"
        "except ImportError as error:\n    print(error)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert "pip install 'crpbot-v8[exchange]'" in result.stdout
