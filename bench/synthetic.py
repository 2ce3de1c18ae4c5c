"""Synthetic market speed: two years of 1-minute candles for BTC, ETH and SOL (about 3.1 M rows).

Target: at most 15 s on the 2-core development machine. Prints rows/s and peak RSS.
Usage: python bench/synthetic.py [days]
"""

from __future__ import annotations

import resource
import sys
import time

from v8_model.data.synthetic import generate_candles
from v8_model.defaults import MINUTES_PER_DAY

TARGET_SECONDS = 15.0


def main() -> None:
    days = int(sys.argv[1]) if len(sys.argv) > 1 else 2 * 365
    started = time.perf_counter()
    rows = sum(
        len(generate_candles(symbol, minutes=days * MINUTES_PER_DAY, seed=0))
        for symbol in ("BTC", "ETH", "SOL")
    )
    seconds = time.perf_counter() - started
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    verdict = "met" if seconds <= TARGET_SECONDS else "MISSED"
    print(f"rows={rows:,} seconds={seconds:.2f} rows_per_second={rows / seconds:,.0f}")
    print(f"peak_rss_mib={peak_mib:.0f} target<={TARGET_SECONDS:.0f}s: {verdict}")


if __name__ == "__main__":
    main()
