"""A fake ccxt exchange over a synthetic 1-minute market, with scripted faults; no network.

It behaves like ccxt's Coinbase for what `crpbot_assets.exchange` uses: `id`, `rateLimit` (ms) and
`fetch_ohlcv(symbol, timeframe, since, limit)` answering the candles of the window
[since, since + limit minutes) as `[ms, open, high, low, close, volume]` lists, oldest first.
Minutes missing from the market frame are missing from the answers, as Coinbase omits minutes
without trades. Every call is recorded in `calls`.

Faults are scripted per call number (1-based, counting every call, failed ones too): a fault
takes the page's rows and returns the rows to answer, or raises. The exception classes mimic
ccxt's hierarchy by name, so the tests need no ccxt.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from v8_model.data.synthetic import generate_candles

Row = list[float]
Fault = Callable[[list[Row]], list[Row]]


# ccxt's exception hierarchy (ccxt 4), the part that matters here.
class BaseError(Exception):
    pass


class ExchangeError(BaseError):
    pass


class BadRequest(ExchangeError):
    pass


class BadSymbol(BadRequest):
    pass


class OperationFailed(BaseError):
    pass


class NetworkError(OperationFailed):
    pass


class DDoSProtection(NetworkError):
    pass


class RateLimitExceeded(NetworkError):
    pass


class RequestTimeout(NetworkError):
    pass


class ExchangeNotAvailable(NetworkError):
    pass


@dataclass(frozen=True)
class Call:
    symbol: str
    timeframe: str
    since: int
    limit: int


class FakeExchange:
    """Answers `fetch_ohlcv` for one market from `candles` (a candle frame, any missing minutes)."""

    def __init__(
        self,
        candles: pd.DataFrame,
        *,
        market: str = "BTC/USD",
        id: str = "fakecoinbase",
        rate_limit: int = 100,
        max_limit: int = 300,
        faults: Mapping[int, Fault] | None = None,
    ) -> None:
        self.id = id
        self.rateLimit = rate_limit
        self.market = market
        self.max_limit = max_limit
        self.faults = dict(faults or {})
        self.calls: list[Call] = []
        stamps = candles["timestamp"].dt.tz_convert(None).to_numpy().astype("datetime64[ms]")
        self._ms = stamps.astype(np.int64)
        self._values = candles[["open", "high", "low", "close", "volume"]].to_numpy(np.float64)

    def fetch_ohlcv(
        self,
        symbol: str,
        timeframe: str = "1m",
        since: int | None = None,
        limit: int | None = None,
        params: dict | None = None,
    ) -> list[Row]:
        limit = min(limit or self.max_limit, self.max_limit)
        self.calls.append(Call(symbol, timeframe, since, limit))
        if symbol != self.market:
            raise BadSymbol(f"{self.id} does not have market symbol {symbol}")
        if timeframe != "1m" or since is None:
            raise ExchangeError(f"{self.id}: this fake serves 1m candles with a since only")
        lo, hi = np.searchsorted(self._ms, [since, since + limit * 60_000])
        rows = [self.row(i) for i in range(lo, hi)]
        fault = self.faults.get(len(self.calls))
        return fault(rows) if fault else rows

    def row(self, index: int) -> Row:
        """The market's candle number `index` as the exchange sends it."""
        return [int(self._ms[index]), *map(float, self._values[index])]

    @property
    def sinces(self) -> list[pd.Timestamp]:
        """The `since` of every call, as UTC timestamps."""
        return [pd.Timestamp(c.since, unit="ms", tz="UTC") for c in self.calls]


def market(minutes: int, *, symbol: str = "BTC", start: str = "2024-01-01") -> pd.DataFrame:
    """A synthetic 1-minute market, timestamps at ms precision as an exchange reports them."""
    frame = generate_candles(symbol, start=start, minutes=minutes, seed=11)
    return frame.astype({"timestamp": "datetime64[ms, UTC]"})


# Faults.
def raises(error: BaseException) -> Fault:
    """The call raises `error` (a rate limit, a timeout, a hard error, an interruption)."""

    def fault(rows: list[Row]) -> list[Row]:
        raise error

    return fault


def drops(first: int, count: int) -> Fault:
    """The page lacks rows first..first+count-1: a gap in this answer only."""
    return lambda rows: rows[:first] + rows[first + count :]


def repeats(index: int) -> Fault:
    """Row `index` comes twice, identical."""
    return lambda rows: rows[: index + 1] + [list(rows[index])] + rows[index + 1 :]


def conflicts(index: int) -> Fault:
    """Row `index` comes twice, the second time with another close (within high/low)."""

    def fault(rows: list[Row]) -> list[Row]:
        ms, open_, high, low, close, volume = rows[index]
        other = [ms, open_, high, low, (close + low) / 2, volume]
        return rows[: index + 1] + [other] + rows[index + 1 :]

    return fault


def corrupts(index: int, **fields: float) -> Fault:
    """Row `index` gets `fields` (open/high/low/close/volume), e.g. high below low, or NaN."""
    position = {"open": 1, "high": 2, "low": 3, "close": 4, "volume": 5}

    def fault(rows: list[Row]) -> list[Row]:
        row = list(rows[index])
        for name, value in fields.items():
            row[position[name]] = value
        return rows[:index] + [row] + rows[index + 1 :]

    return fault


def overlaps(previous: Row) -> Fault:
    """The page starts with `previous` (the last candle already sent), as some exchanges do."""
    return lambda rows: [list(previous), *rows]
