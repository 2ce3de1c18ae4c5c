"""What turns a features dataset into labelled segments: the split fractions and label settings.

They are `TrainConfig` fields (defaults and validation live there); `DataSettings` is the part of
a config the data side needs. Each processor records the settings it was fitted with, so a model
is never trained on segments cut or labelled otherwise than its processor's training rows were.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from v8_model.config import TrainConfig


@dataclass(frozen=True)
class DataSettings:
    train_fraction: float = TrainConfig.train_fraction
    val_fraction: float = TrainConfig.val_fraction
    label_horizon: int = TrainConfig.label_horizon
    label_volatility_window: int = TrainConfig.label_volatility_window
    label_sell_quantile: float = TrainConfig.label_sell_quantile
    label_buy_quantile: float = TrainConfig.label_buy_quantile

    def __post_init__(self) -> None:
        TrainConfig(**dataclasses.asdict(self))  # the rules are TrainConfig's

    @classmethod
    def of(cls, config: TrainConfig) -> DataSettings:
        return cls(**{name: getattr(config, name) for name in DATA_SETTING_NAMES})

    @property
    def fractions(self) -> tuple[float, float, float]:
        """The train, validation and test segments' shares."""
        return (
            self.train_fraction,
            self.val_fraction,
            1.0 - self.train_fraction - self.val_fraction,
        )

    @property
    def quantiles(self) -> tuple[float, float]:
        return self.label_sell_quantile, self.label_buy_quantile

    def differences(self, other: DataSettings) -> str:
        """'name a (here) vs b (other)' per setting that differs; empty when none does."""
        return ", ".join(
            f"{name} {getattr(self, name)!r} vs {getattr(other, name)!r}"
            for name in DATA_SETTING_NAMES
            if getattr(self, name) != getattr(other, name)
        )


DATA_SETTING_NAMES: tuple[str, ...] = tuple(
    field.name for field in dataclasses.fields(DataSettings)
)
DEFAULT_DATA_SETTINGS = DataSettings()
