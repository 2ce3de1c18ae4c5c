"""The network and how it trains: `V8TradingNet`, the losses, the optimizer step, the loop, its
checkpoints, and one symbol's pipeline from features to an evaluated model.
"""
