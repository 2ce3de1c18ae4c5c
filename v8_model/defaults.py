"""Facts and defaults shared by every module; change a default here and only here."""

# The symbols are a setting (crpbot.toml or CRPBOT_SYMBOLS), loaded by `v8_model.symbols`.
from v8_model.symbols import SYMBOLS  # noqa: E402, F401  (re-exported for existing importers)

CLASS_NAMES: tuple[str, ...] = ("SELL", "HOLD", "BUY")  # class index 0, 1, 2

# Candles are 1-minute bars and crypto trades around the clock: one day is this many rows.
MINUTES_PER_DAY = 24 * 60

# The longest look-back of any feature, in bars (SMA 200, EMA 200, channel 200).
LONGEST_FEATURE_WINDOW = 200
# Forward-return horizon of the labels, in 1-minute bars.
DEFAULT_HORIZON = 15
# Trailing window (bars) of the volatility that scales the forward return into a label score.
LABEL_VOLATILITY_WINDOW = MINUTES_PER_DAY

# The training settings (epochs, batch size, ...) are `v8_model.config.TrainConfig`'s fields.
