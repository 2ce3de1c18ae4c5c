"""The training loop, readable top to bottom.

The whole training set sits on the device as tensors and each batch is an index slice of a shuffled
permutation: no per-sample DataLoader. AdamW with a cosine schedule, gradient clipping, early
stopping on validation loss; the best epoch's weights are kept as a copy. `TrainingParts.train_step`
One optimizer step is `v8_model.model.step`'s: eager on the CPU, a replayed CUDA graph on a GPU
(`step="auto"`); the loop is the same either way.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from v8_model.config import TrainConfig
from v8_model.evaluation.metrics import EpochStats
from v8_model.model.checkpoint import (
    Progress,
    restore,
    resume_or_discard,
    save_training_state,
    snapshot,
)
from v8_model.model.loss import build_loss
from v8_model.model.net import V8TradingNet, predict_logits
from v8_model.model.step import EagerStep, build_schedule, build_step


@dataclass
class TrainResult:
    model: V8TradingNet
    history: list[EpochStats] = field(default_factory=list)
    best_epoch: int = 0
    best_val_loss: float = math.inf
    train_seconds: float = 0.0
    device: str = "cpu"
    stopped_early: bool = False
    captured_step: bool = False  # the optimizer steps ran as a replayed CUDA graph


class TrainingDivergedError(RuntimeError):
    """No epoch produced a finite validation loss: there is no model worth keeping."""


def pick_device(requested: str | None = None) -> torch.device:
    if requested:
        return torch.device(requested)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@dataclass
class TrainingParts:
    """The model and what updates it; `step` (set by `use_step`) runs one optimizer step."""

    model: V8TradingNet
    optimizer: torch.optim.Optimizer
    schedule: torch.optim.lr_scheduler.LRScheduler
    loss_fn: torch.nn.Module
    shuffle: torch.Generator  # the batch order's own generator, saved with checkpoints
    grad_clip: float
    step: EagerStep | None = None

    @classmethod
    def build(
        cls, config: TrainConfig, n_features: int, steps: int, device: torch.device
    ) -> TrainingParts:
        torch.manual_seed(config.seed)
        shuffle = torch.Generator(device=device).manual_seed(config.seed)
        model = V8TradingNet(
            n_features=n_features,
            hidden=config.hidden_widths,
            dropout=config.dropout,
            temperature_init=config.temperature_init,
        ).to(device)
        # The fused kernel cuts the per-step launches on a GPU; on the CPU the default path is used.
        optimizer = torch.optim.AdamW(
            model.parameter_groups(config.weight_decay),
            lr=config.learning_rate,
            fused=device.type == "cuda",
        )
        schedule = build_schedule(optimizer, steps)
        return cls(model, optimizer, schedule, build_loss(config), shuffle, config.grad_clip)

    def use_step(
        self, kind: str, features: torch.Tensor, labels: torch.Tensor, batch_size: int
    ) -> None:
        """Choose how steps run (after any checkpoint is restored: a captured step re-prepares
        the optimizer's learning rates as device tensors)."""
        self.step = build_step(
            kind,
            self.model,
            self.loss_fn,
            self.optimizer,
            self.grad_clip,
            features,
            labels,
            batch_size,
        )

    def learning_rate(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def train_epoch(self, features: torch.Tensor, labels: torch.Tensor, batch_size: int) -> float:
        """One pass over shuffled batches; the mean training loss."""
        if self.step is None:
            self.use_step("auto", features, labels, batch_size)
        self.model.train()
        n_rows = len(features)
        order = torch.randperm(n_rows, device=features.device, generator=self.shuffle)
        self.step.loss_sum.zero_()
        for start in range(0, n_rows, batch_size):
            self.step(order[start : start + batch_size])
            self.schedule.step()
        return (self.step.loss_sum / n_rows).item()  # one sync per epoch, not per batch

    def validate(self, features: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
        """Validation loss and accuracy."""
        logits = torch.from_numpy(predict_logits(self.model, features)).to(labels.device)
        loss = self.loss_fn(logits, labels).item()
        accuracy = (logits.argmax(dim=1) == labels).float().mean().item()
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
    step: str = "auto",
) -> TrainResult:
    """Train a V8TradingNet and return it holding the weights of its best validation epoch.

    With `checkpoint_dir`, the state after every epoch is saved there, and a checkpoint found
    there at the start (same settings and data) is resumed: the result equals an uninterrupted
    run's. `step`: "auto" (a captured CUDA graph on a GPU, eager on the CPU), "eager" or
    "captured" (see `v8_model.model.step`).
    """
    config = config or TrainConfig()
    device = pick_device(config.device)
    x, y, x_val_t, y_val_t = (
        torch.as_tensor(array, dtype=dtype, device=device)
        for array, dtype in (
            (x_train, torch.float32),
            (y_train, torch.long),
            (x_val, torch.float32),
            (y_val, torch.long),
        )
    )
    steps = config.epochs * math.ceil(len(x) / config.batch_size)
    parts = TrainingParts.build(config, x.shape[1], steps, device)
    fingerprint = _fingerprint(config, x_train, y_train) if checkpoint_dir else {}
    saved = resume_or_discard(checkpoint_dir, fingerprint) if checkpoint_dir else None
    progress = Progress() if saved is None else restore(saved, *_checkpointed(parts))
    parts.use_step(step, x, y, config.batch_size)
    started = time.perf_counter()

    while progress.epoch < config.epochs and progress.epochs_without_improvement < config.patience:
        learning_rate = parts.learning_rate()
        train_loss = parts.train_epoch(x, y, config.batch_size)
        val_loss, val_acc = parts.validate(x_val_t, y_val_t)
        stats = EpochStats(progress.epoch + 1, train_loss, val_loss, val_acc, learning_rate)
        progress.record(stats, parts.model)
        if checkpoint_dir and progress.best_weights is not None:
            save_training_state(
                checkpoint_dir, snapshot(progress, *_checkpointed(parts), fingerprint)
            )
        if on_epoch is not None:
            on_epoch(stats)

    if progress.best_weights is None:
        raise TrainingDivergedError(
            f"no epoch of {len(progress.history)} gave a finite validation loss; "
            "lower the learning rate or check the features"
        )
    parts.model.load_state_dict(progress.best_weights)
    parts.model.eval()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return TrainResult(
        model=parts.model,
        history=progress.history,
        best_epoch=progress.best_epoch,
        best_val_loss=progress.best_val_loss,
        train_seconds=time.perf_counter() - started,
        device=str(device),
        stopped_early=progress.epochs_without_improvement >= config.patience,
        captured_step=parts.step.captured,
    )


def _checkpointed(parts: TrainingParts) -> tuple:
    """The objects a checkpoint saves and restores, in `snapshot`/`restore` order."""
    return parts.model, parts.optimizer, parts.schedule, parts.shuffle
