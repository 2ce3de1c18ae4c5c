"""Run profiles: how much data and training a run gets. Every size default lives here.

`demo` is the main command's default: about 60 days of synthetic candles per symbol and a few
epochs, so all three symbols finish in minutes on a laptop CPU. `full` is the seed's run: two years
of candles, 100 epochs, batch 256, learning rate 0.001. The hyperparameter values come from
`v8_model.defaults`, so the library and the orchestration never disagree.

A run picks its profile through the `profile` resource (run config
`resources: {profile: {config: {name: full}}}`) or, by default, the env variable CRPBOT_PROFILE.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace

import dagster as dg
from pydantic import Field

from v8_model.defaults import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_EPOCHS,
    DEFAULT_LEARNING_RATE,
    DEFAULT_PATIENCE,
    DEFAULT_SEED,
)
from v8_model.synthetic import MINUTES_PER_DAY

PROFILE_ENV_VAR = "CRPBOT_PROFILE"
DEFAULT_PROFILE = "demo"
# A features file may miss a few candles (exchange outages): it needs this share of the minutes
# in the profile's minimum coverage.
MIN_COMPLETENESS = 0.9

# The synthetic market (v8_model.synthetic) behind the embedded default. The planted signal gives
# the demo model something real to learn; 0 would leave nothing predictable.
SYNTHETIC_START = "2024-01-01"
SYNTHETIC_SIGNAL = 0.3


@dataclass(frozen=True)
class Profile:
    name: str
    # Candles per symbol: the synthetic market's length, or how far back an exchange download
    # starts when nothing is stored yet.
    days: int
    epochs: int
    batch_size: int
    learning_rate: float
    patience: int
    seed: int  # of the synthetic market and of training
    # The features checks refuse a file that covers less than this: a sample, not a history.
    min_coverage_days: float

    @property
    def min_rows(self) -> int:
        return int(self.min_coverage_days * MINUTES_PER_DAY * MIN_COMPLETENESS)

    def hyperparameters(self) -> dict[str, str]:
        """The training entry point's hyperparameters (SageMaker style: string values)."""
        return {
            "epochs": str(self.epochs),
            "batch-size": str(self.batch_size),
            "learning-rate": str(self.learning_rate),
            "patience": str(self.patience),
            "seed": str(self.seed),
        }


PROFILES: dict[str, Profile] = {
    "demo": Profile(
        name="demo",
        days=60,
        # On this data validation loss bottoms out by epoch 2-3; more epochs only cost time.
        epochs=3,
        batch_size=DEFAULT_BATCH_SIZE,
        learning_rate=DEFAULT_LEARNING_RATE,
        patience=DEFAULT_PATIENCE,
        seed=DEFAULT_SEED,
        min_coverage_days=30,
    ),
    "full": Profile(
        name="full",
        days=730,
        epochs=DEFAULT_EPOCHS,
        batch_size=DEFAULT_BATCH_SIZE,
        learning_rate=DEFAULT_LEARNING_RATE,
        patience=DEFAULT_PATIENCE,
        seed=DEFAULT_SEED,
        # The seed's files hold two years; one year is the least that is not a sample.
        min_coverage_days=365,
    ),
}


def get_profile(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(
            f"unknown profile {name!r}; choose one of {', '.join(PROFILES)} "
            f"(run config resources.profile.config.name or env {PROFILE_ENV_VAR})"
        ) from None


def default_profile_name() -> str:
    """The profile named by CRPBOT_PROFILE (default demo); ValueError for an unknown name."""
    name = os.environ.get(PROFILE_ENV_VAR, DEFAULT_PROFILE)
    get_profile(name)
    return name


class ProfileResource(dg.ConfigurableResource):
    """The run's profile by name, with optional per-field overrides (e.g. fewer days in tests)."""

    name: str = Field(
        default_factory=default_profile_name,
        description=f"demo or full; default: env {PROFILE_ENV_VAR}, else {DEFAULT_PROFILE}",
    )
    days: int | None = None
    epochs: int | None = None
    batch_size: int | None = None
    learning_rate: float | None = None
    patience: int | None = None
    seed: int | None = None
    min_coverage_days: float | None = None

    def get(self) -> Profile:
        base = get_profile(self.name)
        overrides = {
            field.name: getattr(self, field.name)
            for field in fields(Profile)
            if field.name != "name" and getattr(self, field.name) is not None
        }
        return replace(base, **overrides)
