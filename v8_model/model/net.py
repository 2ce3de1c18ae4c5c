"""V8TradingNet: 72 → 512 → 256 → 128 → 3 with a learned, positive temperature.

The hidden widths are the `hidden_widths` training setting (512, 256, 128 by default).

Normalization: each hidden block is Linear → LayerNorm → ReLU → Dropout. LayerNorm normalises each
row by its own statistics, so training and inference use the same trained parameters, and an
evaluated batch gives exactly its rows' one-by-one outputs.

Temperature: learned in log space (always positive), initialised at 2.5, divides the logits, and is
excluded from weight decay (decay would pull it toward 1, i.e. log-temperature 0).
Saved as `weights.npz` (plain arrays, loaded with allow_pickle=False) plus `config.json`.
"""

from __future__ import annotations

import io
import json
import math
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from v8_model.config import TrainConfig
from v8_model.data.features import FEATURE_NAMES
from v8_model.layout import CONFIG_FILE, WEIGHTS_FILE
from v8_model.record import strict_json
from v8_model.storage import atomic_write_bytes, atomic_write_text

MODEL_FORMAT = "crpbot.v8.model"
MODEL_FORMAT_VERSION = 1
# Rows per forward pass when predicting: each chunk holds ~4 KB of activations per row, so this
# bounds evaluation memory at ~35 MB whatever the segment size.
EVAL_CHUNK_ROWS = 8_192


# What np.load raises for a truncated or empty weights.npz.
_TORN_ARCHIVE_ERRORS = (zipfile.BadZipFile, EOFError)


class ModelLoadError(ValueError):
    """Model files that are missing, corrupt or do not match this code."""


class V8TradingNet(nn.Module):
    def __init__(
        self,
        n_features: int = len(FEATURE_NAMES),
        hidden: Sequence[int] = TrainConfig.hidden_widths,
        n_classes: int = 3,
        dropout: float = TrainConfig.dropout,
        temperature_init: float = TrainConfig.temperature_init,
    ) -> None:
        super().__init__()
        if temperature_init <= 0:
            raise ValueError(f"temperature_init must be positive, got {temperature_init}")
        self.config = {
            "n_features": n_features,
            "hidden": list(hidden),
            "n_classes": n_classes,
            "dropout": dropout,
            "temperature_init": temperature_init,
        }
        layers: list[nn.Module] = []
        width = n_features
        for size in hidden:
            layers += [nn.Linear(width, size), nn.LayerNorm(size), nn.ReLU(), nn.Dropout(dropout)]
            width = size
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(width, n_classes)
        self.log_temperature = nn.Parameter(torch.tensor(math.log(temperature_init)))

    @property
    def temperature(self) -> torch.Tensor:
        return self.log_temperature.exp()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x)) / self.temperature

    def parameter_groups(self, weight_decay: float) -> list[dict]:
        """AdamW groups: decay Linear weights only; never biases, norms or the temperature."""
        decayed, exempt = [], []
        for name, parameter in self.named_parameters():
            is_linear_weight = name.endswith("weight") and parameter.ndim == 2
            (decayed if is_linear_weight else exempt).append(parameter)
        return [
            {"params": decayed, "weight_decay": weight_decay},
            {"params": exempt, "weight_decay": 0.0},
        ]


def save_model(
    model: V8TradingNet, directory: str | Path, feature_names: Sequence[str] = FEATURE_NAMES
) -> None:
    """Write `weights.npz` and `config.json` into `directory`, each atomically."""
    directory = Path(directory)
    arrays = {name: tensor.detach().cpu().numpy() for name, tensor in model.state_dict().items()}
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    atomic_write_bytes(directory / WEIGHTS_FILE, buffer.getvalue())
    config = {
        "format": MODEL_FORMAT,
        "format_version": MODEL_FORMAT_VERSION,
        "architecture": model.config,
        "feature_names": list(feature_names),
        "temperature": float(model.temperature.detach()),
    }
    atomic_write_text(directory / CONFIG_FILE, strict_json(config, indent=1))


def load_model(
    directory: str | Path, *, expected_feature_names: Sequence[str] = FEATURE_NAMES
) -> V8TradingNet:
    """Rebuild a V8TradingNet from `save_model` output, in eval mode; nothing is unpickled."""
    directory = Path(directory)
    config_path, weights_path = directory / CONFIG_FILE, directory / WEIGHTS_FILE
    for path in (config_path, weights_path):
        if not path.is_file():
            raise ModelLoadError(f"{path}: model file not found")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelLoadError(f"{config_path}: corrupt model config ({error})") from error
    if not isinstance(config, dict) or config.get("format") != MODEL_FORMAT:
        raise ModelLoadError(f"{config_path}: not a V8 model config")
    if config.get("format_version") != MODEL_FORMAT_VERSION:
        raise ModelLoadError(
            f"{config_path}: format version {config.get('format_version')!r}, this code reads "
            f"version {MODEL_FORMAT_VERSION}; retrain the model with this version"
        )
    if config.get("feature_names") != list(expected_feature_names):
        raise ModelLoadError(
            f"{config_path}: the model was trained on other feature names than this code's; "
            "retrain it on features computed by this version"
        )
    try:
        model = V8TradingNet(**config["architecture"])
        with np.load(weights_path, allow_pickle=False) as arrays:
            state = {name: torch.from_numpy(arrays[name]) for name in arrays.files}
        model.load_state_dict(state, strict=True)
    except (KeyError, TypeError, ValueError, RuntimeError, OSError, *_TORN_ARCHIVE_ERRORS) as error:
        raise ModelLoadError(f"{directory}: corrupt or mismatched model files ({error})") from error
    return model.eval()


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
