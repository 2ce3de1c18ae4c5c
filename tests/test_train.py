"""The training loop, and honesty: through the real code on synthetic markets."""

import numpy as np
import pytest
import torch

from v8_model.config import TrainConfig
from v8_model.data.features import build_features_dataset
from v8_model.data.synthetic import generate_candles
from v8_model.model.loop import TrainingDivergedError, train_model
from v8_model.model.loss import FocalLoss
from v8_model.model.net import predict_logits
from v8_model.model.pipeline import train_and_evaluate

# How much better than the majority-class baseline a model must score when a signal is planted.
PLANTED_SIGNAL_MARGIN = 0.05


def _random_problem(rows: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, 72)).astype(np.float32)
    y = rng.integers(0, 3, rows)
    return x, y


def test_training_is_deterministic_on_cpu():
    x, y = _random_problem(3_000)
    config = TrainConfig(epochs=2, batch_size=256, device="cpu", seed=3)
    first = train_model(x[:2_000], y[:2_000], x[2_000:], y[2_000:], config)
    second = train_model(x[:2_000], y[:2_000], x[2_000:], y[2_000:], config)
    for name, tensor in first.model.state_dict().items():
        torch.testing.assert_close(tensor, second.model.state_dict()[name], rtol=0, atol=0)
    assert [s.line() for s in first.history] == [s.line() for s in second.history]


def test_returns_a_real_copy_of_the_best_epoch():
    # Few rows of pure noise, no dropout: the net memorises them and validation loss worsens.
    x, y = _random_problem(1_000, seed=1)
    config = TrainConfig(epochs=15, learning_rate=3e-3, dropout=0.0, patience=20, device="cpu")
    lines = []
    result = train_model(x[:500], y[:500], x[500:], y[500:], config, lines.append)
    val_losses = [stats.val_loss for stats in result.history]
    assert len(lines) == len(result.history) == 15
    assert result.best_epoch == int(np.argmin(val_losses)) + 1
    assert result.best_epoch < 15, "the set-up should overfit; otherwise this test proves nothing"
    recomputed = FocalLoss()(
        torch.from_numpy(predict_logits(result.model, x[500:])), torch.from_numpy(y[500:])
    ).item()
    assert recomputed == pytest.approx(result.best_val_loss, rel=1e-5)
    assert recomputed != pytest.approx(val_losses[-1], rel=1e-5)


def test_early_stopping_and_epoch_lines():
    x, y = _random_problem(4_000, seed=2)
    config = TrainConfig(epochs=50, learning_rate=1e-2, patience=2, device="cpu")
    result = train_model(x[:3_000], y[:3_000], x[3_000:], y[3_000:], config)
    assert result.stopped_early and len(result.history) < 50
    assert len(result.history) == result.best_epoch + 2
    line = result.history[0].line()
    assert line.startswith("epoch=1 train_loss=") and " val_loss=" in line and " val_acc=" in line


def test_diverged_training_is_an_error_not_a_model():
    x, y = _random_problem(1_000)
    x[:] = np.nan
    with pytest.raises(TrainingDivergedError, match="finite validation loss"):
        train_model(x[:800], y[:800], x[800:], y[800:], TrainConfig(epochs=2, patience=1))


def test_config_validation_names_the_setting():
    with pytest.raises(ValueError, match="batch_size"):
        TrainConfig(batch_size=0)
    with pytest.raises(ValueError, match="dropout"):
        TrainConfig(dropout=1.0)


def _outcome(signal: float, seed: int):
    candles = generate_candles(
        "BTC", minutes=60 * 1440, seed=seed, signal=signal, volatility_clustering=False
    )
    dataset = build_features_dataset(candles)
    # One fold, the main split: these tests read its test rows; the earlier walk-forward folds
    # have their own tests (tests/test_worth.py) and would triple the training time here.
    config = TrainConfig(epochs=6, patience=3, device="cpu", folds=1)
    return train_and_evaluate(dataset, symbol="BTC", config=config)


def test_pure_random_walk_scores_like_the_majority_baseline():
    """Nothing is predictable; beating the baseline by more than 2 points would mean leakage."""
    metrics = _outcome(signal=0.0, seed=11).evaluation
    gap = metrics.test_accuracy - metrics.baseline_accuracy
    print(
        f"random walk: test {metrics.test_accuracy:.4f} vs baseline {metrics.baseline_accuracy:.4f}"
    )
    assert abs(gap) <= 0.02, metrics


def test_planted_signal_beats_the_majority_baseline():
    outcome = _outcome(signal=0.2, seed=12)
    metrics = outcome.evaluation
    print(
        f"planted signal: test {metrics.test_accuracy:.4f} vs baseline "
        f"{metrics.baseline_accuracy:.4f}, macro-F1 {metrics.macro_f1:.4f}"
    )
    assert metrics.test_accuracy >= metrics.baseline_accuracy + PLANTED_SIGNAL_MARGIN, metrics
    assert metrics.macro_f1 > metrics.baseline_macro_f1 + PLANTED_SIGNAL_MARGIN
    assert metrics.all_gates_passed, metrics.gates


class _Interrupted(Exception):
    """Stands in for a reclaimed spot instance."""


def test_resuming_from_a_checkpoint_equals_an_uninterrupted_run(tmp_path):
    x, y = _random_problem(3_000, seed=4)
    config = TrainConfig(epochs=4, patience=10, device="cpu", seed=5)
    args = (x[:2_000], y[:2_000], x[2_000:], y[2_000:], config)
    uninterrupted = train_model(*args)

    def stop_after_epoch_two(stats):
        if stats.epoch == 2:
            raise _Interrupted

    with pytest.raises(_Interrupted):
        train_model(*args, stop_after_epoch_two, checkpoint_dir=tmp_path)
    resumed = train_model(*args, checkpoint_dir=tmp_path)

    assert [s.line() for s in resumed.history] == [s.line() for s in uninterrupted.history]
    assert resumed.best_epoch == uninterrupted.best_epoch
    for name, tensor in uninterrupted.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[name], tensor, rtol=0, atol=0)


def test_an_unusable_checkpoint_is_discarded_with_a_warning(tmp_path, caplog):
    """Stale (other settings), truncated or incomplete: never fatal, training starts afresh."""
    import numpy as np

    from v8_model.model.checkpoint import ARRAYS_FILE

    x, y = _random_problem(1_000, seed=6)
    data = (x[:800], y[:800], x[800:], y[800:])
    fresh = train_model(*data, TrainConfig(epochs=2, device="cpu"))

    def damage_truncated(directory):
        path = directory / ARRAYS_FILE
        path.write_bytes(path.read_bytes()[:100])  # BadZipFile before this issue

    def damage_missing_key(directory):
        path = directory / ARRAYS_FILE
        with np.load(path) as stored:
            arrays = {name: stored[name] for name in stored.files if name != "rng/shuffle"}
        np.savez(path, **arrays)  # KeyError before this issue

    for name, damage, why in (
        ("stale", None, "other settings or data"),
        ("truncated", damage_truncated, "corrupt checkpoint"),
        ("incomplete", damage_missing_key, "'rng/shuffle' is missing"),
    ):
        directory = tmp_path / name
        # A checkpoint of one epoch with other settings; damaged, it is also one for these.
        config = TrainConfig(epochs=1 if damage is None else 2, device="cpu")
        with pytest.raises(_Interrupted):
            train_model(*data, config, on_epoch=_stop_after_first, checkpoint_dir=directory)
        if damage is not None:
            damage(directory)
        caplog.clear()
        with caplog.at_level("WARNING", logger="v8_model.model.checkpoint"):
            result = train_model(
                *data, TrainConfig(epochs=2, device="cpu"), checkpoint_dir=directory
            )
        assert "discarding the checkpoint and starting afresh" in caplog.text, name
        assert why in caplog.text, (name, caplog.text)
        assert [s.line() for s in result.history] == [s.line() for s in fresh.history], name


def _stop_after_first(stats):
    """Leaves the first epoch's checkpoint behind (an interrupted job) by raising after it."""
    if stats.epoch == 1:
        raise _Interrupted
