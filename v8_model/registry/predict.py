"""SELL/HOLD/BUY probabilities from a symbol's production model on the latest candles.

Production layout (v8_model.registry.promotion): `<root>/production/{SYMBOL}/current.json` names the
serving version; its folder `versions/{VERSION}/` holds what the training entry point writes to
SM_MODEL_DIR/{SYMBOL}/ (`weights.npz`, `config.json`, `processor_{SYMBOL}_v8.json`,
`metrics.json`), plus the `promotion.json` with the sha256 of every file promoted. `<root>` is a
local folder or `s3://bucket/prefix` (v8_model.storage); a model directory itself (e.g.
SM_MODEL_DIR/{SYMBOL}) is accepted too.

The features are the training code's own (`compute_features`, the processor's scaler, the net's
forward pass through `predict_logits`), so a prediction equals the batch evaluation's for the
same candle row; tests/test_predict.py proves it on the test segment.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from v8_model.data.candles import CandleValidationError, validate_candles
from v8_model.data.features import WARMUP_ROWS, compute_features
from v8_model.data.processor import ProcessorLoadError, V8FeatureProcessor, processor_filename
from v8_model.defaults import CLASS_NAMES, MINUTES_PER_DAY
from v8_model.evaluation.gates import softmax
from v8_model.evaluation.walkforward import probabilities_of
from v8_model.layout import PRODUCTION_POINTER_FILE, PROMOTION_FILE, production_folder
from v8_model.model.net import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    ModelLoadError,
    V8TradingNet,
    load_model,
    predict_logits,
)
from v8_model.registry.promotion import PromotionError, current_folder
from v8_model.storage import Store, open_store

# Candles of history before the first predicted row. The EMA features have infinite memory: an
# EMA started k bars earlier still carries weight decay^k from its start, which the batch
# features, computed from the full series, do not. The slowest is EMA 200 (decay 1 - 2/201): after
# 1,000 bars its start still weighs 5e-5 (about 1e-4 in scaled price_vs_ema_200); after one day of
# 1-minute bars, decay^1440 ≈ 6e-7, and every scaled feature matches the batch one to about 1e-6,
# near float32 resolution. The first WARMUP_ROWS of these candles also fill the longest windows.
PREDICT_HISTORY_CANDLES = MINUTES_PER_DAY
MIN_PREDICT_CANDLES = PREDICT_HISTORY_CANDLES + 1  # the history, then at least one row to predict

PREDICTION_COLUMNS = ("timestamp", "p_sell", "p_hold", "p_buy", "prediction")
_PROBABILITY_COLUMNS = PREDICTION_COLUMNS[1:4]


class ProductionModelError(ValueError):
    """A production model or processor that is missing, corrupt, or does not belong together."""


def _key(folder: str, name: str) -> str:
    return f"{folder}/{name}" if folder else name


def _retrain_hint(symbol: str) -> str:
    return (
        f"fix: train and promote {symbol} again (materialize `model` and `production_model` "
        f"for partition {symbol})"
    )


def _model_files(symbol: str) -> tuple[str, ...]:
    return (CONFIG_FILE, WEIGHTS_FILE, processor_filename(symbol))


def _locate(store: Store, symbol: str) -> str:
    """The key folder holding the symbol's model: its serving production version, or the root.

    A root holding any of the model files is a model directory itself; the files it lacks are
    then reported one by one, rather than as "no model at all".
    """
    try:
        serving = current_folder(store, symbol)
    except PromotionError as error:
        raise ProductionModelError(str(error)) from error
    if serving is not None:
        return serving
    if any(store.exists(name) for name in _model_files(symbol)):
        return ""
    raise ProductionModelError(
        f"no model for {symbol} under {store.root}: expected "
        f"{store.uri(production_folder(symbol))}/{PRODUCTION_POINTER_FILE} (or a model directory "
        f"holding {CONFIG_FILE}); promote a model that passed its gates (materialize "
        f"`production_model` for partition {symbol}) or point at the folder that holds it"
    )


def _check_promotion(
    store: Store, folder: str, where: str, files: dict[str, bytes], symbol: str
) -> None:
    """Refuse files that differ from what promotion.json recorded (a promotion half-way done)."""
    key = _key(folder, PROMOTION_FILE)
    if not store.exists(key):  # a model directory straight from training has no promotion
        return
    try:
        recorded = json.loads(store.read_text(key))["files"]
        expected = {name: recorded[name]["sha256"] for name in files}
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as error:
        raise ProductionModelError(
            f"{store.uri(key)}: corrupt promotion record ({error!r}); {_retrain_hint(symbol)}"
        ) from error
    changed = [
        name for name, data in files.items() if hashlib.sha256(data).hexdigest() != expected[name]
    ]
    if changed:
        raise ProductionModelError(
            f"{where}: {', '.join(changed)} differ from the sha256 recorded in {PROMOTION_FILE}, "
            "so model and processor may come from different runs (a promotion in progress, or "
            f"files changed by hand); retry shortly, and if it persists, {_retrain_hint(symbol)}"
        )


def load_production_model(
    root_or_dir: str | Path, symbol: str
) -> tuple[V8TradingNet, V8FeatureProcessor]:
    """The symbol's model (eval mode) and processor, checked to belong together.

    `root_or_dir` is a storage root (local folder or `s3://bucket/prefix`) holding
    production/{SYMBOL}/, or a model directory itself. Raises ProductionModelError naming the
    file and the fix when a file is missing, corrupt, or from another symbol or feature set.
    """
    store = open_store(root_or_dir)
    folder = _locate(store, symbol)
    where = store.uri(folder) if folder else store.root
    files = {}
    for name in _model_files(symbol):
        try:
            files[name] = store.read_bytes(_key(folder, name))
        except FileNotFoundError as error:
            raise ProductionModelError(
                f"{where}/{name}: not found, the model folder is incomplete; "
                f"{_retrain_hint(symbol)}"
            ) from error
    _check_promotion(store, folder, where, files, symbol)

    # The loaders read directories; S3 objects and local files alike go through one temp copy.
    with tempfile.TemporaryDirectory(prefix="crpbot-predict-") as tmp:
        for name, data in files.items():
            (Path(tmp) / name).write_bytes(data)
        try:
            # Each loader holds its file to this code's FEATURE_NAMES, so a model and a processor
            # that both load agree with each other on the feature names and their order.
            model = load_model(tmp)
            processor = V8FeatureProcessor.load(Path(tmp) / processor_filename(symbol))
        except (ModelLoadError, ProcessorLoadError) as error:
            message = str(error).replace(tmp, where)
            raise ProductionModelError(f"{message}; {_retrain_hint(symbol)}") from error
    if processor.symbol is not None and processor.symbol != symbol:
        raise ProductionModelError(
            f"{where}/{processor_filename(symbol)}: the processor was fitted for "
            f"{processor.symbol}, not {symbol}; {_retrain_hint(symbol)}"
        )
    return model, processor


def predict(
    candles: pd.DataFrame, model: V8TradingNet, processor: V8FeatureProcessor
) -> pd.DataFrame:
    """One row per candle after the first PREDICT_HISTORY_CANDLES: timestamp, p_sell, p_hold,
    p_buy and prediction (SELL/HOLD/BUY).

    Raises CandleValidationError when the candles break the schema or are fewer than
    MIN_PREDICT_CANDLES (the warm-up history plus one row to predict).
    """
    validate_candles(candles, min_rows=0)  # the length rule below says why history is needed
    if len(candles) < MIN_PREDICT_CANDLES:
        raise CandleValidationError(
            f"candles: {len(candles)} rows, at least {MIN_PREDICT_CANDLES} needed: "
            f"{PREDICT_HISTORY_CANDLES} candles of history (one day: EMA features depend on "
            "the candles before the first predicted row) plus one row per prediction.\n"
            "Fix: supply a longer history of candles.",
            rule="too_few_rows",
        )
    if model.config["n_features"] != len(processor.feature_names):
        raise ValueError(
            f"the model takes {model.config['n_features']} features but the processor gives "
            f"{len(processor.feature_names)}: load both with load_production_model"
        )
    features = compute_features(candles).iloc[PREDICT_HISTORY_CANDLES - WARMUP_ROWS :]
    logits = predict_logits(model, processor.transform(features))
    if not np.isfinite(logits).all():  # argmax would silently call a NaN row SELL
        raise ValueError("the model produced NaN/Inf logits on these candles; check the model")
    probabilities = softmax(logits)
    result = pd.DataFrame(probabilities, columns=list(_PROBABILITY_COLUMNS))
    result.insert(0, "timestamp", features["timestamp"].reset_index(drop=True))
    result["prediction"] = np.asarray(CLASS_NAMES)[probabilities.argmax(axis=1)]
    return result


def predict_rows(
    dataset: pd.DataFrame, positions: np.ndarray, model: V8TradingNet, processor: V8FeatureProcessor
) -> np.ndarray:
    """SELL/HOLD/BUY probabilities for a features dataset's rows at `positions` (the batch path
    the evaluation used: the processor's scaler, then the net), rows × 3."""
    if len(positions) == 0:
        return np.zeros((0, len(CLASS_NAMES)))
    return probabilities_of(predict_logits(model, processor.transform(dataset, positions)))


def predict_latest(root: str, symbol: str, candles: pd.DataFrame) -> pd.DataFrame:
    """Load the symbol's production model from `root` and predict on `candles` (see `predict`)."""
    model, processor = load_production_model(root, symbol)
    return predict(candles, model, processor)


def format_predictions(predictions: pd.DataFrame) -> str:
    """A fixed-width table of `predict`'s output, for a terminal."""
    return predictions.loc[:, list(PREDICTION_COLUMNS)].to_string(
        index=False, float_format=lambda value: f"{value:.3f}"
    )
