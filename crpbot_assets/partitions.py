"""One partition per symbol; adding a symbol is one edit in `v8_model.defaults.SYMBOLS`."""

import dagster as dg

from v8_model.defaults import SYMBOLS

symbol_partitions = dg.StaticPartitionsDefinition(list(SYMBOLS))
