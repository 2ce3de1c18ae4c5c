"""Predictions from a production model: parity with the batch evaluation, and clear load errors."""

from __future__ import annotations

import hashlib
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from v8_model.config import TrainConfig
from v8_model.data.candles import CandleValidationError
from v8_model.data.features import WARMUP_ROWS, build_features_dataset, compute_features
from v8_model.data.processor import V8FeatureProcessor, processor_filename
from v8_model.data.segments import prepare_segments
from v8_model.data.synthetic import generate_candles
from v8_model.evaluation.gates import softmax
from v8_model.model.loop import train_model
from v8_model.model.net import CONFIG_FILE, WEIGHTS_FILE, V8TradingNet, predict_logits, save_model
from v8_model.registry.predict import (
    MIN_PREDICT_CANDLES,
    PREDICT_HISTORY_CANDLES,
    PREDICTION_COLUMNS,
    PROMOTION_FILE,
    ProductionModelError,
    format_predictions,
    load_production_model,
    predict,
    predict_latest,
)
from v8_model.registry.promotion import current_folder, folder_digests, promote
from v8_model.storage import Store, open_store

SYMBOL = "BTC"
PROCESSOR_FILE = processor_filename(SYMBOL)


@dataclass
class Trained:
    candles: pd.DataFrame
    model: V8TradingNet
    processor: V8FeatureProcessor
    test_timestamps: pd.Series
    test_features: np.ndarray
    test_probabilities: np.ndarray
    first_test_candle: int  # candle row of the first test-segment row


@pytest.fixture(scope="module")
def trained() -> Trained:
    """A one-epoch model and its batch evaluation on the test segment, the way the pipeline runs."""
    candles = generate_candles(SYMBOL, minutes=12 * 1440, seed=1)
    dataset = build_features_dataset(candles)
    data = prepare_segments(dataset, symbol=SYMBOL)
    result = train_model(
        data.train.features,
        data.train.labels,
        data.validation.features,
        data.validation.labels,
        TrainConfig(epochs=1, device="cpu"),
    )
    return Trained(
        candles=candles,
        model=result.model,
        processor=data.processor,
        test_timestamps=data.test.timestamps.reset_index(drop=True),
        test_features=data.test.features,
        test_probabilities=softmax(predict_logits(result.model, data.test.features)),
        first_test_candle=data.split.test.start + WARMUP_ROWS,  # dataset row i = candle i + 200
    )


def _write_model(directory: Path, trained: Trained, processor: V8FeatureProcessor | None = None):
    """What the entry point writes to SM_MODEL_DIR/{SYMBOL}/ (metrics.json aside)."""
    save_model(trained.model, directory)
    (processor or trained.processor).save(directory / PROCESSOR_FILE)


def _promote(store: Store, trained: Trained) -> None:
    """Stage the model under models/BTC/ as a trainer does, then promote it."""
    with tempfile.TemporaryDirectory() as staged:
        _write_model(Path(staged), trained)
        for path in Path(staged).iterdir():
            store.upload_file(path, f"models/{SYMBOL}/{path.name}")
    digests = folder_digests(store, f"models/{SYMBOL}")
    promote(store, SYMBOL, f"models/{SYMBOL}", digests, {"job_name": "test"})


@pytest.fixture
def root(tmp_path, trained) -> Path:
    """A storage root holding production/BTC/ as promotion leaves it, minus promotion.json."""
    root = tmp_path / "root"
    _promote(open_store(root), trained)
    (_model_dir(root) / PROMOTION_FILE).unlink()
    return root


def _model_dir(root: Path) -> Path:
    """The serving version's folder."""
    return root / current_folder(open_store(root), SYMBOL)


def _write_promotion(root: Path) -> None:
    folder = _model_dir(root)
    files = {
        path.name: {
            "bytes": path.stat().st_size,
            "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        }
        for path in folder.iterdir()
    }
    (folder / PROMOTION_FILE).write_text(json.dumps({"symbol": SYMBOL, "files": files}))


def test_predictions_equal_the_batch_evaluation_on_the_test_rows(root, trained):
    model, processor = load_production_model(root, SYMBOL)
    # The test rows plus a day of history before them, as a live caller would pass them.
    candles = trained.candles.iloc[trained.first_test_candle - PREDICT_HISTORY_CANDLES :]
    predictions = predict(candles.reset_index(drop=True), model, processor)

    assert list(predictions.columns) == list(PREDICTION_COLUMNS)
    assert len(predictions) == len(candles) - PREDICT_HISTORY_CANDLES
    assert predictions["timestamp"].iloc[0] == trained.test_timestamps.iloc[0]
    # The test segment drops its last rows (no forward return yet); predictions keep them.
    batch = pd.DataFrame(
        trained.test_probabilities, columns=["batch_sell", "batch_hold", "batch_buy"]
    ).assign(timestamp=trained.test_timestamps)
    joined = batch.merge(predictions, on="timestamp", how="left", validate="one_to_one")
    assert joined["p_sell"].notna().all()
    np.testing.assert_allclose(
        joined[["p_sell", "p_hold", "p_buy"]].to_numpy(),
        joined[["batch_sell", "batch_hold", "batch_buy"]].to_numpy(),
        rtol=0,
        atol=1e-6,
    )
    batch_classes = np.array(["SELL", "HOLD", "BUY"])[trained.test_probabilities.argmax(axis=1)]
    assert (joined["prediction"].to_numpy() == batch_classes).all()

    # The scaled features agree too, so the parity does not rest on a one-epoch model that
    # ignores the slow EMA features whose history the warm-up must cover.
    live = compute_features(candles).iloc[PREDICT_HISTORY_CANDLES - WARMUP_ROWS :]
    live = live[live["timestamp"].isin(trained.test_timestamps)]
    np.testing.assert_allclose(processor.transform(live), trained.test_features, rtol=0, atol=1e-5)


def test_predict_latest_from_a_local_root_and_its_table(root, trained):
    candles = trained.candles.iloc[-MIN_PREDICT_CANDLES:]
    predictions = predict_latest(str(root), SYMBOL, candles)
    assert len(predictions) == 1
    assert predictions["timestamp"].iloc[0] == candles["timestamp"].iloc[-1]
    row = predictions.iloc[0]
    assert row[["p_sell", "p_hold", "p_buy"]].sum() == pytest.approx(1.0, abs=1e-6)
    table = format_predictions(predictions)
    assert table.splitlines()[0].split() == list(PREDICTION_COLUMNS)
    assert row["prediction"] in table.splitlines()[1]


def test_loads_a_model_directory_itself_and_a_consistent_promotion(root):
    _write_promotion(root)
    model, processor = load_production_model(_model_dir(root), SYMBOL)
    assert not model.training
    assert processor.symbol == SYMBOL


def test_loads_from_s3(s3_bucket, root, trained):
    store = open_store(f"s3://{s3_bucket}/crpbot")
    _promote(store, trained)
    model, _ = load_production_model(store.root, SYMBOL)
    assert model.state_dict().keys() == trained.model.state_dict().keys()

    with pytest.raises(ProductionModelError, match=f"{store.root}/production/ETH/current.json"):
        load_production_model(store.root, "ETH")


def test_missing_production_model(tmp_path):
    with pytest.raises(ProductionModelError) as error:
        load_production_model(tmp_path / "empty", SYMBOL)
    message = str(error.value)
    assert "production/BTC/current.json" in message
    assert "production_model" in message  # what to do about it


@pytest.mark.parametrize("file_name", [PROCESSOR_FILE, CONFIG_FILE, WEIGHTS_FILE])
def test_missing_file(root, file_name):
    (_model_dir(root) / file_name).unlink()
    with pytest.raises(ProductionModelError, match=f"/{file_name}: not found"):
        load_production_model(root, SYMBOL)


def test_processor_of_another_symbol(root, trained):
    other = V8FeatureProcessor.from_dict({**trained.processor.to_dict(), "symbol": "ETH"})
    other.save(_model_dir(root) / PROCESSOR_FILE)
    with pytest.raises(ProductionModelError, match="fitted for ETH, not BTC"):
        load_production_model(root, SYMBOL)


def _swap_first_two_feature_names(path: Path) -> None:
    payload = json.loads(path.read_text())
    names = payload["feature_names"]
    names[0], names[1] = names[1], names[0]
    path.write_text(json.dumps(payload))


@pytest.mark.parametrize(
    ("file_name", "damage", "message"),
    [
        (PROCESSOR_FILE, _swap_first_two_feature_names, "feature names do not match"),
        (CONFIG_FILE, _swap_first_two_feature_names, "other feature names"),
        (PROCESSOR_FILE, lambda path: path.write_text("{not json"), "corrupt processor file"),
        (CONFIG_FILE, lambda path: path.write_text("{not json"), "corrupt model config"),
        (WEIGHTS_FILE, lambda path: path.write_bytes(b"not an archive"), "corrupt or mismatched"),
        (WEIGHTS_FILE, lambda path: path.write_bytes(path.read_bytes()[:4096]), "corrupt"),
        (WEIGHTS_FILE, lambda path: path.write_bytes(b""), "corrupt or mismatched"),
    ],
    ids=[
        "processor-names",
        "model-names",
        "processor-json",
        "config-json",
        "weights-garbage",
        "weights-torn",
        "weights-empty",
    ],
)
def test_corrupt_or_mismatched_files(root, file_name, damage, message):
    damage(_model_dir(root) / file_name)
    with pytest.raises(ProductionModelError) as error:
        load_production_model(root, SYMBOL)
    text = str(error.value)
    assert message in text
    assert str(_model_dir(root).resolve()) in text  # the real folder, not a temporary copy
    assert "fix:" in text


def test_files_changed_after_promotion(root, trained):
    _write_promotion(root)
    # A half-finished promotion: new weights beside the old promotion record.
    save_model(V8TradingNet(), _model_dir(root))
    with pytest.raises(ProductionModelError, match=f"{WEIGHTS_FILE} differ from the sha256"):
        load_production_model(root, SYMBOL)


def test_too_few_candles(trained):
    candles = trained.candles.iloc[-(MIN_PREDICT_CANDLES - 1) :]
    with pytest.raises(CandleValidationError, match=f"at least {MIN_PREDICT_CANDLES} needed") as e:
        predict(candles, trained.model, trained.processor)
    assert e.value.rule == "too_few_rows"


def test_candles_are_validated_first(trained):
    candles = trained.candles.iloc[-MIN_PREDICT_CANDLES:].copy()
    candles.iloc[-1, candles.columns.get_loc("high")] = 0.5 * candles["low"].iloc[-1]
    with pytest.raises(CandleValidationError) as error:
        predict(candles, trained.model, trained.processor)
    assert error.value.rule == "high_below_open_close"


def test_crpbot_predict_command(root, trained, capsys):
    from crpbot_assets.cli import main
    from v8_model.layout import candles_key

    candles_path = root / candles_key(SYMBOL)
    candles_path.parent.mkdir(parents=True)
    trained.candles.to_parquet(candles_path)

    assert main(["predict", SYMBOL, "--root", str(root), "--last", "3"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split() == list(PREDICTION_COLUMNS)
    assert len(lines) == 4
    last_timestamp = str(trained.candles["timestamp"].iloc[-1].date())
    assert last_timestamp in lines[-1]
    assert lines[-1].split()[-1] in {"SELL", "HOLD", "BUY"}


def test_crpbot_predict_reports_a_missing_model(tmp_path, trained, capsys):
    from crpbot_assets.cli import main

    candles_file = tmp_path / "candles.parquet"
    trained.candles.to_parquet(candles_file)
    code = main(["predict", SYMBOL, "--root", str(tmp_path), "--candles", str(candles_file)])
    assert code == 1
    assert "production" in capsys.readouterr().err
