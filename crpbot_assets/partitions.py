"""One partition per configured symbol (`crpbot.toml` or CRPBOT_SYMBOLS, see `v8_model.symbols`).

Static partitions read when the code loads, not dynamic ones: see docs/design.md, "Symbols".
"""

import dagster as dg

from v8_model.symbols import SYMBOLS

symbol_partitions = dg.StaticPartitionsDefinition(list(SYMBOLS))
