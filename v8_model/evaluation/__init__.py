"""What a trained model is worth: the `metrics.json` record, the quality gates, directional skill,
the backtest, walk-forward folds, pictures, monitoring after promotion and champion/challenger.
"""
