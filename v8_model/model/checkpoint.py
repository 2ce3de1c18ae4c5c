"""Per-epoch training checkpoints, so a restarted job (a reclaimed spot instance) resumes.

`Progress` is the loop's bookkeeping between epochs; `snapshot` turns it and the torch objects
into a `TrainingState`, `restore` loads one back into them.

A checkpoint is two files in one folder: `state.npz` (every tensor: weights, the best weights so
far, AdamW's moments, the random generators) loaded with allow_pickle=False, and `state.json`
(epoch, history, counters, the learning-rate schedule, the settings it was written with),
written last, so a reader that finds the JSON finds the arrays of the same epoch. Nothing is
unpickled.
"""

from __future__ import annotations

import io
import json
import logging
import math
import shutil
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from v8_model.evaluation.metrics import EpochStats
from v8_model.record import strict_json
from v8_model.storage import atomic_write_bytes, atomic_write_text

ARRAYS_FILE = "state.npz"
STATE_FILE = "state.json"
CHECKPOINT_FORMAT_VERSION = 2  # 2: the schedule is a LambdaLR (closed-form cosine)

log = logging.getLogger(__name__)


class CheckpointError(ValueError):
    """A checkpoint that cannot be resumed: corrupt, or written for other settings or data."""


@dataclass
class TrainingState:
    """Everything the loop needs to continue after `epoch` exactly as if it had not stopped."""

    epoch: int
    model: dict[str, torch.Tensor]
    best_model: dict[str, torch.Tensor]
    optimizer: dict
    schedule: dict
    shuffle_rng: torch.Tensor
    torch_rng: torch.Tensor
    cuda_rng: torch.Tensor | None
    history: list[dict]
    best_epoch: int
    best_val_loss: float
    epochs_without_improvement: int
    fingerprint: dict  # settings and data shape: a checkpoint resumes only the same training


@dataclass
class Progress:
    """Where the loop stands after its last completed epoch."""

    epoch: int = 0
    history: list[EpochStats] = field(default_factory=list)
    best_epoch: int = 0
    best_val_loss: float = math.inf
    best_weights: dict[str, torch.Tensor] | None = None  # a copy, never the live weights
    epochs_without_improvement: int = 0

    def record(self, stats: EpochStats, model: torch.nn.Module) -> None:
        """Add an epoch; keep a copy of the weights when its validation loss is the best yet."""
        self.epoch = stats.epoch
        self.history.append(stats)
        if math.isfinite(stats.val_loss) and stats.val_loss < self.best_val_loss:
            self.best_val_loss, self.best_epoch = stats.val_loss, stats.epoch
            self.best_weights = {name: t.detach().clone() for name, t in model.state_dict().items()}
            self.epochs_without_improvement = 0
        else:
            self.epochs_without_improvement += 1


def snapshot(
    progress: Progress,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    schedule: torch.optim.lr_scheduler.LRScheduler,
    shuffle: torch.Generator,
    fingerprint: dict,
) -> TrainingState:
    """The state to save after `progress.epoch` (which must have a best epoch)."""
    if progress.best_weights is None:
        raise ValueError("no checkpoint before the first epoch with a finite validation loss")
    on_cuda = shuffle.device.type == "cuda"
    return TrainingState(
        epoch=progress.epoch,
        model=model.state_dict(),
        best_model=progress.best_weights,
        optimizer=optimizer.state_dict(),
        schedule=schedule.state_dict(),
        shuffle_rng=shuffle.get_state(),
        torch_rng=torch.get_rng_state(),
        cuda_rng=torch.cuda.get_rng_state() if on_cuda else None,
        history=[vars(stats) for stats in progress.history],
        best_epoch=progress.best_epoch,
        best_val_loss=progress.best_val_loss,
        epochs_without_improvement=progress.epochs_without_improvement,
        fingerprint=fingerprint,
    )


def restore(
    state: TrainingState,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    schedule: torch.optim.lr_scheduler.LRScheduler,
    shuffle: torch.Generator,
) -> Progress:
    """Load `state` into the torch objects and the random generators; return the bookkeeping."""
    device = shuffle.device
    model.load_state_dict(state.model)
    optimizer.load_state_dict(state.optimizer)
    schedule.load_state_dict(state.schedule)
    shuffle.set_state(state.shuffle_rng)
    torch.set_rng_state(state.torch_rng)
    if device.type == "cuda" and state.cuda_rng is not None:
        torch.cuda.set_rng_state(state.cuda_rng)
    return Progress(
        epoch=state.epoch,
        history=[EpochStats(**stats) for stats in state.history],
        best_epoch=state.best_epoch,
        best_val_loss=state.best_val_loss,
        best_weights={name: t.to(device) for name, t in state.best_model.items()},
        epochs_without_improvement=state.epochs_without_improvement,
    )


def _flatten_optimizer(optimizer_state: dict, arrays: dict[str, np.ndarray]) -> dict:
    """Move the per-parameter tensors into `arrays`; what is left is JSON."""
    per_parameter = {}
    for index, slots in optimizer_state["state"].items():
        for slot, tensor in slots.items():
            arrays[f"optimizer/{index}/{slot}"] = tensor.detach().cpu().numpy()
        per_parameter[str(index)] = sorted(slots)
    return {"slots": per_parameter, "param_groups": _plain(optimizer_state["param_groups"])}


def _plain(value: object) -> object:
    """`value` with tensors as numbers: a captured step keeps learning rates as device tensors."""
    if isinstance(value, torch.Tensor):
        return value.item()
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


def save_training_state(directory: str | Path, state: TrainingState) -> None:
    directory = Path(directory)
    arrays: dict[str, np.ndarray] = {}
    for prefix, weights in (("model", state.model), ("best_model", state.best_model)):
        for name, tensor in weights.items():
            arrays[f"{prefix}/{name}"] = tensor.detach().cpu().numpy()
    optimizer = _flatten_optimizer(state.optimizer, arrays)
    arrays["rng/shuffle"] = state.shuffle_rng.cpu().numpy()
    arrays["rng/torch"] = state.torch_rng.cpu().numpy()
    if state.cuda_rng is not None:
        arrays["rng/cuda"] = state.cuda_rng.cpu().numpy()
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    atomic_write_bytes(directory / ARRAYS_FILE, buffer.getvalue())
    payload = {
        "format_version": CHECKPOINT_FORMAT_VERSION,
        "epoch": state.epoch,
        "optimizer": optimizer,
        "schedule": _plain(state.schedule),
        "history": state.history,
        "best_epoch": state.best_epoch,
        "best_val_loss": state.best_val_loss,
        "epochs_without_improvement": state.epochs_without_improvement,
        "fingerprint": state.fingerprint,
    }
    atomic_write_text(directory / STATE_FILE, strict_json(payload))


def load_training_state(directory: str | Path, fingerprint: dict) -> TrainingState | None:
    """The checkpoint in `directory`, or None when there is none; refuses a corrupt or foreign
    one with CheckpointError (see `resume_or_discard` for the training loop's use)."""
    directory = Path(directory)
    state_path, arrays_path = directory / STATE_FILE, directory / ARRAYS_FILE
    if not state_path.is_file():
        return None
    try:
        payload = json.loads(state_path.read_text(encoding="utf-8"))
        with np.load(arrays_path, allow_pickle=False) as stored:
            arrays = {name: torch.from_numpy(stored[name].copy()) for name in stored.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise CheckpointError(f"{directory}: corrupt checkpoint ({error})") from error
    if payload.get("format_version") != CHECKPOINT_FORMAT_VERSION:
        raise CheckpointError(f"{directory}: checkpoint format {payload.get('format_version')!r}")
    if payload.get("fingerprint") != fingerprint:
        raise CheckpointError(
            f"{directory}: the checkpoint was written for other settings or data "
            f"({payload.get('fingerprint')} != {fingerprint})"
        )
    try:
        return _state_from(payload, arrays)
    except KeyError as error:
        raise CheckpointError(f"{directory}: incomplete checkpoint, {error} is missing") from error


def resume_or_discard(directory: str | Path, fingerprint: dict) -> TrainingState | None:
    """The checkpoint to resume, or None: an unusable one (corrupt, incomplete, written for other
    settings or data) is deleted with a warning and training starts afresh; never fatal."""
    try:
        return load_training_state(directory, fingerprint)
    except CheckpointError as error:
        log.warning("discarding the checkpoint and starting afresh: %s", error)
        shutil.rmtree(directory, ignore_errors=True)
        return None


def _state_from(payload: dict, arrays: dict[str, torch.Tensor]) -> TrainingState:
    def weights(prefix: str) -> dict[str, torch.Tensor]:
        start = len(prefix) + 1
        return {k[start:]: v for k, v in arrays.items() if k.startswith(f"{prefix}/")}

    optimizer = {
        "state": {
            int(index): {slot: arrays[f"optimizer/{index}/{slot}"] for slot in slots}
            for index, slots in payload["optimizer"]["slots"].items()
        },
        "param_groups": payload["optimizer"]["param_groups"],
    }
    return TrainingState(
        epoch=payload["epoch"],
        model=weights("model"),
        best_model=weights("best_model"),
        optimizer=optimizer,
        schedule=payload["schedule"],
        shuffle_rng=arrays["rng/shuffle"],
        torch_rng=arrays["rng/torch"],
        cuda_rng=arrays.get("rng/cuda"),
        history=[_null_as_nan(stats) for stats in payload["history"]],
        best_epoch=payload["best_epoch"],
        best_val_loss=payload["best_val_loss"],
        epochs_without_improvement=payload["epochs_without_improvement"],
        fingerprint=payload["fingerprint"],
    )


def _null_as_nan(stats: dict) -> dict:
    """An epoch's figures as written: strict_json stored a diverged epoch's NaN loss as null.

    (best_val_loss needs no such care: a checkpoint is written only once an epoch was finite.)
    """
    return {name: math.nan if value is None else value for name, value in stats.items()}
