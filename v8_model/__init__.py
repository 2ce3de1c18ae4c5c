"""crpbot V8: per-symbol crypto direction models (SELL / HOLD / BUY) trained honestly.

A plain library: no Dagster import. `crpbot_assets` wires it into a Dagster asset graph.
"""
