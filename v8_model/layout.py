"""Where each artifact lives under a storage root (a local folder or `s3://bucket/prefix`).

One place for the layout, shared by the Dagster assets, the trainers and
`v8_model.registry.predict`:

    candles/{SYMBOL}_candles.parquet      validated 1-minute candles, published once audited
    staging/candles/{SYMBOL}_candles.parquet  a refresh waiting for its features' audit
    data/{SYMBOL}_features.parquet        the training channel's file
    processors/processor_{SYMBOL}_v8.json the fitted processor (the processor channel's file)
    models/{SYMBOL}/...                   the entry point's SM_MODEL_DIR/{SYMBOL}/ + run_info.json
    production/{SYMBOL}/current.json      which version serves (v8_model.registry.promotion)
    production/{SYMBOL}/versions/{V}/...  one promoted model + promotion.json, kept for rollback
    backtests/{SYMBOL}_backtest.json      the walk-forward skill and backtest of the latest model
    monitor/{SYMBOL}_monitor.json         the serving version checked on fresh candles
    monitor/{SYMBOL}_challenger.json      the latest champion/challenger comparison
    reports/gate_report.md, .json         the summary over all symbols (figures embedded)
    reports/gate_report_linked.md         the same, linking reports/figures/{SYMBOL}_*.png
"""

from __future__ import annotations

# A leaf module: it imports nothing from the project, so any module may import it.

# Files of a model folder (the entry point's SM_MODEL_DIR/{SYMBOL}/).
WEIGHTS_FILE = "weights.npz"
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.json"  # the v8_model.evaluation.metrics.Evaluation record
SUMMARY_FILE = "training_summary.json"  # SM_MODEL_DIR/, over every symbol of the job

RUN_INFO_FILE = "run_info.json"
PROMOTION_FILE = "promotion.json"
PRODUCTION_POINTER_FILE = "current.json"
REPORT_MARKDOWN_KEY = "reports/gate_report.md"
REPORT_JSON_KEY = "reports/gate_report.json"
REPORT_LINKED_MARKDOWN_KEY = "reports/gate_report_linked.md"


def features_filename(symbol: str) -> str:
    return f"{symbol}_features.parquet"


def processor_filename(symbol: str) -> str:
    return f"processor_{symbol}_v8.json"


def candles_key(symbol: str) -> str:
    return f"candles/{symbol}_candles.parquet"


def staged_candles_key(symbol: str) -> str:
    """Where `candles` writes a refresh; `features` publishes it to `candles_key` once audited."""
    return f"staging/{candles_key(symbol)}"


def features_key(symbol: str) -> str:
    """The seed's dataset: `data/{SYMBOL}_features.parquet`."""
    return f"data/{features_filename(symbol)}"


def processor_key(symbol: str) -> str:
    return f"processors/{processor_filename(symbol)}"


def model_folder(symbol: str) -> str:
    """What the entry point writes under SM_MODEL_DIR/{SYMBOL}/, plus the trainer's run_info."""
    return f"models/{symbol}"


def backtest_key(symbol: str) -> str:
    """The `backtest` asset's JSON: the latest model's worth record (skill, backtest, folds)."""
    return f"backtests/{symbol}_backtest.json"


def monitor_key(symbol: str) -> str:
    """The `model_monitor` asset's record (v8_model.evaluation.monitor.MonitorRecord)."""
    return f"monitor/{symbol}_monitor.json"


def challenger_key(symbol: str) -> str:
    """The latest champion/challenger comparison (v8_model.evaluation.champion), promoted or not."""
    return f"monitor/{symbol}_challenger.json"


def production_folder(symbol: str) -> str:
    """The symbol's production versions and the pointer to the one that serves."""
    return f"production/{symbol}"


def production_version_folder(symbol: str, version: str) -> str:
    """One promoted copy of `model_folder`, with promotion.json."""
    return f"{production_folder(symbol)}/versions/{version}"
