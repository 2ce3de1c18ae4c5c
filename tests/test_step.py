"""The optimizer step: the body a CUDA graph captures matches the eager step on the CPU."""

import math

import numpy as np
import pytest
import torch

from v8_model.config import TrainConfig
from v8_model.model.loop import TrainingParts, train_model
from v8_model.model.step import CapturedStep, CosineDecay, EagerStep, build_step

# The captured path's learning rate is a float32 device tensor, the eager one's a Python float:
# AdamW rounds its update differently in the last bit. The trajectories agree to ~1e-7 for the
# first hundred steps; afterwards the rounding difference is amplified (as between any two GPUs)
# but stays within a percent per step and a fraction of that on average. A wrong step (missing
# zeroing, stale batch, schedule off by one) breaks the first bound by orders of magnitude.
EARLY_STEPS, EARLY_TOLERANCE = 100, 1e-5
LOSS_TOLERANCE, MEAN_TOLERANCE = 2e-2, 5e-3


def _problem(rows: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, 72)).astype(np.float32)
    y = (x[:, 0] > 0.3).astype(np.int64) + (x[:, 1] > 0.0).astype(np.int64)  # learnable
    return torch.from_numpy(x), torch.from_numpy(y)


def _loss_trajectory(kind: str, steps: int, batch_size: int = 64) -> list[float]:
    """Per-step losses of `steps` optimizer steps, partial batches included."""
    x, y = _problem(1_000)
    config = TrainConfig(batch_size=batch_size, device="cpu", seed=5)
    per_epoch = math.ceil(len(x) / batch_size)
    parts = TrainingParts.build(config, x.shape[1], steps, torch.device("cpu"))
    parts.use_step(kind, x, y, batch_size)
    parts.model.train()
    losses: list[float] = []
    while len(losses) < steps:
        order = torch.randperm(len(x), generator=parts.shuffle)
        for start in range(0, len(x), batch_size):
            batch = order[start : start + batch_size]
            parts.step.loss_sum.zero_()
            parts.step(batch)
            parts.schedule.step()
            losses.append(parts.step.loss_sum.item() / len(batch))
    assert per_epoch * batch_size != len(x), "the set-up must include partial batches"
    return losses[:steps]


def test_captured_step_body_matches_the_eager_step_for_hundreds_of_steps():
    eager = _loss_trajectory("eager", 320)
    captured = _loss_trajectory("captured", 320)
    np.testing.assert_allclose(
        captured[:EARLY_STEPS], eager[:EARLY_STEPS], rtol=EARLY_TOLERANCE, atol=0
    )
    np.testing.assert_allclose(captured, eager, rtol=LOSS_TOLERANCE, atol=0)
    relative = np.abs(np.subtract(captured, eager)) / np.asarray(eager)
    assert relative.mean() < MEAN_TOLERANCE
    # The trajectory is a real one: the loss fell, so agreement is not two flat lines.
    assert np.mean(eager[-20:]) < 0.8 * np.mean(eager[:20])


def test_captured_step_uses_static_buffers_and_tensor_learning_rate():
    x, y = _problem(300)
    parts = TrainingParts.build(TrainConfig(batch_size=64, device="cpu"), 72, 10, x.device)
    parts.use_step("captured", x, y, 64)
    assert isinstance(parts.step, CapturedStep) and not parts.step.captured
    lr = parts.optimizer.param_groups[0]["lr"]
    assert isinstance(lr, torch.Tensor)
    parts.step(torch.arange(64))
    parts.schedule.step()
    assert parts.optimizer.param_groups[0]["lr"] is lr, "the schedule must fill the tensor in place"
    assert lr.item() == pytest.approx(1e-3 * CosineDecay(10)(1), rel=1e-6)
    assert torch.equal(parts.step.static_index, torch.arange(64))


def test_cosine_decay_matches_cosine_annealing():
    model = torch.nn.Linear(2, 2)
    reference = torch.optim.SGD(model.parameters(), lr=0.1)
    annealing = torch.optim.lr_scheduler.CosineAnnealingLR(reference, T_max=50)
    decay = CosineDecay(50)
    for step in range(1, 51):
        reference.step()
        annealing.step()
        assert 0.1 * decay(step) == pytest.approx(annealing.get_last_lr()[0], abs=1e-9)


def test_the_loop_chooses_eager_on_the_cpu_and_refuses_a_graph_there():
    x, y = _problem(200)
    parts = TrainingParts.build(TrainConfig(device="cpu"), 72, 4, x.device)
    assert type(build_step("auto", parts.model, parts.loss_fn, parts.optimizer, 1.0, x, y, 64)) is (
        EagerStep
    )
    with pytest.raises(ValueError, match="step kind"):
        build_step("graph", parts.model, parts.loss_fn, parts.optimizer, 1.0, x, y, 64)
    with pytest.raises(ValueError, match="CUDA graph needs a CUDA device"):
        CapturedStep(parts.model, parts.loss_fn, parts.optimizer, 1.0, x, y, 64, capture=True)


def test_training_through_the_captured_body_equals_eager_training(tmp_path):
    x, y = _problem(1_500, seed=3)
    config = TrainConfig(epochs=3, batch_size=128, device="cpu", patience=5)
    eager = train_model(
        x[:1_000].numpy(),
        y[:1_000].numpy(),
        x[1_000:].numpy(),
        y[1_000:].numpy(),
        config,
        step="eager",
    )
    captured = train_model(
        x[:1_000].numpy(),
        y[:1_000].numpy(),
        x[1_000:].numpy(),
        y[1_000:].numpy(),
        config,
        checkpoint_dir=tmp_path / "checkpoint",  # tensor learning rates are saved as numbers
        step="captured",
    )
    assert not captured.captured_step
    for mine, theirs in zip(captured.history, eager.history, strict=True):
        assert mine.train_loss == pytest.approx(theirs.train_loss, rel=LOSS_TOLERANCE)
        assert mine.val_loss == pytest.approx(theirs.val_loss, rel=LOSS_TOLERANCE)
        assert mine.learning_rate == pytest.approx(theirs.learning_rate, rel=1e-6)
    assert (tmp_path / "checkpoint" / "state.json").is_file()
