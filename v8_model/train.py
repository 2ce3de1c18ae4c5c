"""The training loop, readable top to bottom; `python -m v8_model.train` runs the SageMaker entry.

The whole training set sits on the device as tensors and each batch is an index slice of a shuffled
permutation: no per-sample DataLoader. AdamW with a cosine schedule, gradient clipping, early
stopping on validation loss; the best epoch's weights are a real copy (the original saved a
reference to the live weights, so it kept the last epoch).
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from v8_model.checkpoint import TrainingState, resume_or_discard, save_training_state
from v8_model.defaults import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_EPOCHS,
    DEFAULT_LEARNING_RATE,
    DEFAULT_PATIENCE,
    DEFAULT_SEED,
    DEFAULT_WEIGHT_DECAY,
)
from v8_model.loss import FocalLoss
from v8_model.net import V8TradingNet

EVAL_CHUNK_ROWS = 65_536


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = DEFAULT_EPOCHS
    batch_size: int = DEFAULT_BATCH_SIZE
    learning_rate: float = DEFAULT_LEARNING_RATE
    weight_decay: float = DEFAULT_WEIGHT_DECAY
    patience: int = DEFAULT_PATIENCE
    grad_clip: float = 1.0
    seed: int = DEFAULT_SEED
    dropout: float = 0.3
    temperature_init: float = 2.5
    device: str | None = None  # None: CUDA when present, else CPU

    def __post_init__(self) -> None:
        positive = {
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "learning_rate": self.learning_rate,
            "patience": self.patience,
            "grad_clip": self.grad_clip,
            "temperature_init": self.temperature_init,
        }
        for name, value in positive.items():
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ValueError(f"training setting {name} must be positive, got {value!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"training setting dropout must be in [0, 1), got {self.dropout!r}")
        if self.weight_decay < 0:
            raise ValueError(f"training setting weight_decay must be >= 0, got {self.weight_decay}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class EpochStats:
    epoch: int
    train_loss: float
    val_loss: float
    val_acc: float
    learning_rate: float

    def line(self) -> str:
        """The parseable per-epoch line (SageMaker metric definitions match these names)."""
        return (
            f"epoch={self.epoch} train_loss={self.train_loss:.4f} val_loss={self.val_loss:.4f} "
            f"val_acc={self.val_acc:.4f} lr={self.learning_rate:.6f}"
        )


@dataclass
class TrainResult:
    model: V8TradingNet
    history: list[EpochStats] = field(default_factory=list)
    best_epoch: int = 0
    best_val_loss: float = math.inf
    train_seconds: float = 0.0
    device: str = "cpu"
    stopped_early: bool = False


class TrainingDivergedError(RuntimeError):
    """No epoch produced a finite validation loss: there is no model worth keeping."""


def pick_device(requested: str | None = None) -> torch.device:
    if requested:
        return torch.device(requested)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def predict_logits(model: V8TradingNet, features: torch.Tensor | np.ndarray) -> np.ndarray:
    """Logits for every row, in eval mode and in bounded chunks; returns a float32 array."""
    device = next(model.parameters()).device
    features = torch.as_tensor(features, dtype=torch.float32, device=device)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        chunks = [model(chunk) for chunk in torch.split(features, EVAL_CHUNK_ROWS)]
    model.train(was_training)
    return torch.cat(chunks).float().cpu().numpy()


def _validation_loss(model, loss_fn, x_val, y_val) -> tuple[float, float]:
    logits = torch.from_numpy(predict_logits(model, x_val)).to(y_val.device)
    loss = loss_fn(logits, y_val).item()
    accuracy = (logits.argmax(dim=1) == y_val).float().mean().item()
    return loss, accuracy


def _fingerprint(config: TrainConfig, x_train: np.ndarray, y_train: np.ndarray) -> dict:
    """What a checkpoint must match to be resumed: the settings and (a sample of) the data."""
    settings = {k: v for k, v in config.to_dict().items() if k != "device"}
    sample = np.ascontiguousarray(x_train[:: max(1, len(x_train) // 1000)])
    digest = hashlib.sha256(sample.tobytes() + np.asarray(y_train).tobytes()).hexdigest()
    return {"settings": settings, "train_shape": list(x_train.shape), "data_sha256": digest}


def train_model(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    config: TrainConfig | None = None,
    on_epoch: Callable[[EpochStats], None] | None = None,
    checkpoint_dir: str | Path | None = None,
) -> TrainResult:
    """Train a V8TradingNet and return it holding the weights of its best validation epoch.

    With `checkpoint_dir`, the state after every epoch is saved there, and a checkpoint found
    there at the start (same settings and data) is resumed: the result equals an uninterrupted
    run's. An unusable checkpoint there is discarded with a warning, never fatal.
    """
    config = config or TrainConfig()
    device = pick_device(config.device)
    torch.manual_seed(config.seed)
    shuffle = torch.Generator(device=device).manual_seed(config.seed)

    x_train_t = torch.as_tensor(x_train, dtype=torch.float32, device=device)
    y_train_t = torch.as_tensor(y_train, dtype=torch.long, device=device)
    x_val_t = torch.as_tensor(x_val, dtype=torch.float32, device=device)
    y_val_t = torch.as_tensor(y_val, dtype=torch.long, device=device)
    n_rows = len(x_train_t)

    model = V8TradingNet(
        n_features=x_train_t.shape[1],
        dropout=config.dropout,
        temperature_init=config.temperature_init,
    ).to(device)
    # The fused kernel cuts the per-step launches on a GPU; on the CPU the default path is used.
    optimizer = torch.optim.AdamW(
        model.parameter_groups(config.weight_decay),
        lr=config.learning_rate,
        fused=device.type == "cuda",
    )
    steps_per_epoch = math.ceil(n_rows / config.batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, T_max=config.epochs * steps_per_epoch
    )
    loss_fn = FocalLoss()
    result = TrainResult(model=model, device=str(device))
    best_state: dict[str, torch.Tensor] | None = None
    epochs_without_improvement = 0
    first_epoch = 1
    fingerprint = _fingerprint(config, x_train, y_train) if checkpoint_dir else {}
    saved = resume_or_discard(checkpoint_dir, fingerprint) if checkpoint_dir else None
    if saved is not None:
        model.load_state_dict(saved.model)
        optimizer.load_state_dict(saved.optimizer)
        schedule.load_state_dict(saved.schedule)
        shuffle.set_state(saved.shuffle_rng)
        torch.set_rng_state(saved.torch_rng)
        if device.type == "cuda" and saved.cuda_rng is not None:
            torch.cuda.set_rng_state(saved.cuda_rng)
        result.history = [EpochStats(**stats) for stats in saved.history]
        result.best_epoch, result.best_val_loss = saved.best_epoch, saved.best_val_loss
        best_state = {name: t.to(device) for name, t in saved.best_model.items()}
        epochs_without_improvement = saved.epochs_without_improvement
        first_epoch = saved.epoch + 1
        result.stopped_early = epochs_without_improvement >= config.patience
    started = time.perf_counter()

    for epoch in range(first_epoch, config.epochs + 1):
        if result.stopped_early:
            break
        model.train()
        learning_rate = optimizer.param_groups[0]["lr"]
        order = torch.randperm(n_rows, device=device, generator=shuffle)
        loss_sum = torch.zeros((), device=device)
        for batch_start in range(0, n_rows, config.batch_size):
            batch = order[batch_start : batch_start + config.batch_size]
            loss = loss_fn(model(x_train_t[batch]), y_train_t[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            schedule.step()
            loss_sum += loss.detach() * len(batch)  # stays on the device: no sync per batch

        val_loss, val_acc = _validation_loss(model, loss_fn, x_val_t, y_val_t)
        stats = EpochStats(epoch, (loss_sum / n_rows).item(), val_loss, val_acc, learning_rate)
        result.history.append(stats)

        if math.isfinite(val_loss) and val_loss < result.best_val_loss:
            result.best_val_loss, result.best_epoch = val_loss, epoch
            best_state = {name: t.detach().clone() for name, t in model.state_dict().items()}
            epochs_without_improvement = 0
        else:
            epochs_without_improvement += 1
            result.stopped_early = epochs_without_improvement >= config.patience
        if checkpoint_dir and best_state is not None:
            save_training_state(
                checkpoint_dir,
                TrainingState(
                    epoch=epoch,
                    model=model.state_dict(),
                    best_model=best_state,
                    optimizer=optimizer.state_dict(),
                    schedule=schedule.state_dict(),
                    shuffle_rng=shuffle.get_state(),
                    torch_rng=torch.get_rng_state(),
                    cuda_rng=torch.cuda.get_rng_state() if device.type == "cuda" else None,
                    history=[vars(s) for s in result.history],
                    best_epoch=result.best_epoch,
                    best_val_loss=result.best_val_loss,
                    epochs_without_improvement=epochs_without_improvement,
                    fingerprint=fingerprint,
                ),
            )
        if on_epoch is not None:
            on_epoch(stats)

    if best_state is None:
        raise TrainingDivergedError(
            f"no epoch of {len(result.history)} gave a finite validation loss; "
            "lower the learning rate or check the features"
        )
    model.load_state_dict(best_state)
    model.eval()
    if device.type == "cuda":
        torch.cuda.synchronize()
    result.train_seconds = time.perf_counter() - started
    return result


if __name__ == "__main__":
    from v8_model.entrypoint import main

    raise SystemExit(main())
