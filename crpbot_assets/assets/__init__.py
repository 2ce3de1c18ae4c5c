"""The asset graph, one partition per symbol, every artifact under the storage root.

    candles → features → processor → model → backtest → production_model
                                          └─(all partitions)→ gate_report

One module per stage: `data` (candles, features), `model` (processor, model, backtest),
`promotion` (production_model) and `report` (gate_report); their run config is
`crpbot_assets.configs`, the candle sources `crpbot_assets.resources`.

Assets hand data to each other through the storage root (the layout in v8_model.layout),
not through an IO manager: the trainer — local or SageMaker — reads the very files the seed names.
Every asset after `candles` carries an automation condition (crpbot_assets.automation): when
candles change, the rest follows; when a refresh finds nothing new, nothing runs.
"""

from crpbot_assets.assets.data import candles, features
from crpbot_assets.assets.model import backtest, model, processor
from crpbot_assets.assets.promotion import production_model
from crpbot_assets.assets.report import gate_report

# One symbol's run, in graph order: candles through production_model.
SYMBOL_ASSETS = (candles, features, processor, model, backtest, production_model)
SYMBOL_ASSET_NAMES = tuple(asset.key.to_user_string() for asset in SYMBOL_ASSETS)

__all__ = [
    "SYMBOL_ASSETS",
    "SYMBOL_ASSET_NAMES",
    "backtest",
    "candles",
    "features",
    "gate_report",
    "model",
    "processor",
    "production_model",
]
