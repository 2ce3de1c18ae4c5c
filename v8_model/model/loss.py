"""Training losses: multi-class `FocalLoss` (the default) and cross-entropy, built from TrainConfig.

With p = softmax(logits) and the smoothed target q = (1 - s) * one_hot(y) + s / K:

    loss = mean over samples of  -alpha * sum_k q_k * (1 - p_k)^gamma * log p_k

gamma down-weights classes the model already predicts confidently; alpha scales the whole loss
(a uniform weight, as in the seed's configuration); label smoothing keeps targets off 0 and 1.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from v8_model.config import TrainConfig


class FocalLoss(nn.Module):
    def __init__(
        self,
        alpha: float = TrainConfig.focal_alpha,
        gamma: float = TrainConfig.focal_gamma,
        label_smoothing: float = TrainConfig.label_smoothing,
    ):
        super().__init__()
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        if gamma < 0 or alpha <= 0:
            raise ValueError(f"need alpha > 0 and gamma >= 0, got alpha={alpha}, gamma={gamma}")
        self.alpha, self.gamma, self.label_smoothing = alpha, gamma, label_smoothing

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        n_classes = logits.shape[-1]
        log_p = F.log_softmax(logits, dim=-1)
        # scatter, not F.one_hot: one_hot validates the labels with a host sync on some devices,
        # which a captured CUDA graph (v8_model.model.step) cannot contain.
        q = torch.zeros_like(log_p).scatter_(-1, target.unsqueeze(-1), 1.0)
        q = q * (1.0 - self.label_smoothing) + self.label_smoothing / n_classes
        focal_weight = (1.0 - log_p.exp()).pow(self.gamma)
        per_sample = -(q * focal_weight * log_p).sum(dim=-1)
        return self.alpha * per_sample.mean()


def build_loss(config: TrainConfig) -> nn.Module:
    """The loss the config names, with its parameters."""
    if config.loss == "focal":
        return FocalLoss(config.focal_alpha, config.focal_gamma, config.label_smoothing)
    if config.loss == "cross_entropy":
        return nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    raise ValueError(f"training setting loss {config.loss!r} has no builder")
