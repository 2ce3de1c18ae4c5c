"""The symbols the project trains: a setting, not code.

The list comes from `symbols = [...]` in `crpbot.toml` at the repository root, or from the
environment variable CRPBOT_SYMBOLS (comma-separated, e.g. `BTC,ETH,SOL,DOGE`), which wins when
set. Both are read once, when `SYMBOLS` is first used (not when this module is imported, so
that `crpbot --help` and the error's own class stay available when the setting is malformed):
the Dagster partitions, the CLI, the preflight, the exchange source and the gate report all
follow `SYMBOLS`. Without a settings file
(an installed package, the SageMaker container) the seed's three symbols apply.

A symbol is 2 to 15 capital letters or digits (the base asset: `BTC`, `1INCH`); the exchange
market is derived from it (`crpbot_assets.exchange.market_for`). Anything else is refused with an
error naming where the bad value came from.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path

SYMBOLS_ENV_VAR = "CRPBOT_SYMBOLS"
SETTINGS_FILE = Path(__file__).resolve().parents[1] / "crpbot.toml"
DEFAULT_SYMBOLS: tuple[str, ...] = ("BTC", "ETH", "SOL")
SYMBOL_PATTERN = re.compile(r"^[A-Z0-9]{2,15}$")


# What an "unknown symbol" error tells the user to do.
HOW_TO_ADD = f"to train another, add it to `symbols` in {SETTINGS_FILE.name} or {SYMBOLS_ENV_VAR}"


class SymbolSettingsError(ValueError):
    """The configured symbols are missing, malformed or repeated."""


def parse_symbols(values: Sequence[object], source: str) -> tuple[str, ...]:
    """Validated, upper-cased symbols from `values`; `source` names where they came from."""
    if not values:
        raise SymbolSettingsError(f"{source} lists no symbols; name at least one, e.g. BTC")
    symbols = []
    for position, value in enumerate(values, start=1):
        if not isinstance(value, str):
            raise SymbolSettingsError(
                f"{source}: symbol {position} is {value!r}, not a string; write it in quotes"
            )
        symbol = value.strip().upper()
        if not symbol:
            raise SymbolSettingsError(f"{source}: symbol {position} is empty; remove it")
        if not SYMBOL_PATTERN.match(symbol):
            raise SymbolSettingsError(
                f"{source}: symbol {position} {value!r} is not a symbol: expected 2 to 15 "
                "letters or digits naming the base asset (e.g. BTC, not BTC/USD)"
            )
        if symbol in symbols:
            raise SymbolSettingsError(
                f"{source}: {symbol} is listed more than once; name each symbol once"
            )
        symbols.append(symbol)
    return tuple(symbols)


def load_symbols(
    settings_file: Path = SETTINGS_FILE, environ: Mapping[str, str] = os.environ
) -> tuple[str, ...]:
    """CRPBOT_SYMBOLS if set, else the settings file's `symbols`, else DEFAULT_SYMBOLS."""
    from_env = environ.get(SYMBOLS_ENV_VAR)
    if from_env is not None:
        return parse_symbols(from_env.split(",") if from_env.strip() else [], SYMBOLS_ENV_VAR)
    if not settings_file.is_file():
        return DEFAULT_SYMBOLS
    try:
        settings = tomllib.loads(settings_file.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as error:
        raise SymbolSettingsError(f"{settings_file} is not valid TOML: {error}") from None
    if "symbols" not in settings:
        raise SymbolSettingsError(
            f'{settings_file} has no `symbols` setting; add e.g. symbols = ["BTC", "ETH"]'
        )
    values = settings["symbols"]
    if not isinstance(values, list):
        raise SymbolSettingsError(
            f'{settings_file}: `symbols` must be a list like ["BTC", "ETH"], got {values!r}'
        )
    return parse_symbols(values, f"{settings_file} `symbols`")


SYMBOLS: tuple[str, ...]  # set by `__getattr__` on first use


def __getattr__(name: str) -> tuple[str, ...]:
    """`SYMBOLS`, loaded on first use (PEP 562); a malformed setting raises SymbolSettingsError
    at every use, naming where the bad value came from."""
    if name != "SYMBOLS":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    symbols = load_symbols()
    globals()["SYMBOLS"] = symbols
    return symbols
