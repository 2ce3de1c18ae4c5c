"""Candles in, training-ready rows out: the candle schema, the synthetic market, the 72 features,
labels, the chronological split and the fitted processor.
"""
