"""Run profiles: how much data a run gets and how it trains. Every size default lives here.

`demo` is the main command's default: about 60 days of synthetic candles per symbol and a few
epochs, so all three symbols finish in minutes on a laptop CPU. `full` is the seed's run: two years
of candles and `TrainConfig`'s defaults (100 epochs, batch 256, learning rate 0.001).

A run picks its profile through the `profile` resource (run config
`resources: {profile: {config: {name: full}}}`) or, by default, the env variable CRPBOT_PROFILE.
"""

from __future__ import annotations

import dataclasses
import os
import typing
from dataclasses import dataclass, replace

import dagster as dg
import pydantic
from pydantic import Field

from v8_model.config import TrainConfig
from v8_model.defaults import MINUTES_PER_DAY
from v8_model.evaluation.monitor import MonitorSettings

PROFILE_ENV_VAR = "CRPBOT_PROFILE"
DEFAULT_PROFILE = "demo"
# A features file may miss a few candles (exchange outages): it needs this share of the minutes
# in the profile's minimum coverage.
MIN_COMPLETENESS = 0.9

# The synthetic market (v8_model.data.synthetic) behind the embedded default. The planted signal
# gives the demo model something real to learn; 0 would leave nothing predictable. At 0.1 the demo's
# models reach a rank IC of about 0.1-0.15 on their test rows (the top of what minute-scale crypto
# forecasts show) and a break-even cost of a few bps per side; the weakest strength the gates still
# promote almost always over 60 days (bench/power.py). Turn it up or down per run with the candles
# config `signal`.
SYNTHETIC_START = "2024-01-01"
SYNTHETIC_SIGNAL = 0.1
# Severities the `profitable_after_costs` check may have: WARN reports an unprofitable backtest;
# ERROR also keeps the model out of production.
PROFIT_CHECK_SEVERITIES = ("WARN", "ERROR")


@dataclass(frozen=True)
class Profile:
    name: str
    # Candles per symbol: the synthetic market's length, or how far back an exchange download
    # starts when nothing is stored yet.
    days: int
    # The features checks refuse a file that covers less than this: a sample, not a history.
    min_coverage_days: float
    # How the model trains; its seed also seeds the synthetic market.
    train: TrainConfig
    # The severity of the backtest's `profitable_after_costs` check.
    profit_check_severity: str = "WARN"
    # After promotion: the monitor's thresholds and severities (v8_model.evaluation.monitor).
    monitor: MonitorSettings = MonitorSettings()

    def __post_init__(self) -> None:
        if self.profit_check_severity not in PROFIT_CHECK_SEVERITIES:
            raise ValueError(
                f"profile setting profit_check_severity must be one of "
                f"{PROFIT_CHECK_SEVERITIES}, got {self.profit_check_severity!r}"
            )

    @property
    def min_rows(self) -> int:
        return int(self.min_coverage_days * MINUTES_PER_DAY * MIN_COMPLETENESS)

    def history_problems(self, rows: int, coverage_days: float | None = None) -> list[str]:
        """Why `rows` candles spanning `coverage_days` are not a training history for this
        profile; empty when they are. The one minimum-history rule: the candles asset asks it
        with rows only (coverage None), the `enough_history` check with both; preflight compares
        a stored file's rows with the same `min_rows` (unless CRPBOT_MIN_FEATURES_ROWS overrides
        it). The feature window's own minimum is a schema rule, not this one
        (`v8_model.data.candles.DEFAULT_MIN_ROWS`)."""
        problems = []
        if rows < self.min_rows:
            problems.append(
                f"{rows:,} rows, the {self.name} profile needs {self.min_rows:,} "
                f"({self.min_coverage_days:g} days of 1-minute candles, "
                f"{MIN_COMPLETENESS:.0%} complete)"
            )
        if coverage_days is not None and coverage_days < self.min_coverage_days:
            problems.append(
                f"covers {coverage_days:.2f} days, the {self.name} profile needs "
                f"{self.min_coverage_days:g}"
            )
        return problems


PROFILES: dict[str, Profile] = {
    "demo": Profile(
        name="demo",
        days=60,
        min_coverage_days=30,
        # On this data validation loss bottoms out by epoch 2-3; more epochs only cost time.
        # Two walk-forward folds: the main split and one earlier, within 2x the demo's time.
        train=TrainConfig(epochs=3, folds=2),
    ),
    "full": Profile(
        name="full",
        days=730,
        # The seed's files hold two years; one year is the least that is not a sample.
        min_coverage_days=365,
        train=TrainConfig(folds=3),
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


def current_profile() -> Profile:
    """The profile CRPBOT_PROFILE names (the default one when unset)."""
    return get_profile(default_profile_name())


class _ProfileSelection(dg.ConfigurableResource):
    """The run's profile by name, with optional per-field overrides (e.g. fewer days in tests).

    Besides `days` and `min_coverage_days`, every `TrainConfig` field may be overridden, and
    every `MonitorSettings` field as `monitor_<name>` (fields generated below, so a setting is
    never declared twice).
    """

    name: str = Field(
        default_factory=default_profile_name,
        description=f"demo or full; default: env {PROFILE_ENV_VAR}, else {DEFAULT_PROFILE}",
    )
    days: int | None = None
    min_coverage_days: float | None = None
    profit_check_severity: str | None = Field(
        default=None, description="WARN or ERROR; default: the profile's (WARN)"
    )

    def get(self) -> Profile:
        base = get_profile(self.name)
        train_overrides = {  # a list (Dagster config has no tuple) becomes a tuple in TrainConfig
            name: getattr(self, name) for name in _TRAIN_FIELDS if getattr(self, name) is not None
        }
        sizing = {
            name: getattr(self, name)
            for name in ("days", "min_coverage_days", "profit_check_severity")
            if getattr(self, name) is not None
        }
        monitor_overrides = {
            name: getattr(self, f"{MONITOR_PREFIX}{name}")
            for name in _MONITOR_FIELDS
            if getattr(self, f"{MONITOR_PREFIX}{name}") is not None
        }
        return replace(
            base,
            train=replace(base.train, **train_overrides),
            monitor=replace(base.monitor, **monitor_overrides),
            **sizing,
        )


def _config_type(hint: object) -> object:
    """A field's type as Dagster config can hold it: `tuple[X, ...]` as `list[X]`."""
    if typing.get_origin(hint) is tuple:
        return list[typing.get_args(hint)[0]]
    return hint


_TRAIN_TYPES = {
    name: _config_type(hint) for name, hint in typing.get_type_hints(TrainConfig).items()
}
_TRAIN_FIELDS = tuple(field.name for field in dataclasses.fields(TrainConfig))
# Monitor settings are overridden as `monitor_<name>` (TrainConfig has a `skill_alpha` too).
MONITOR_PREFIX = "monitor_"
_MONITOR_TYPES = typing.get_type_hints(MonitorSettings)
_MONITOR_FIELDS = tuple(field.name for field in dataclasses.fields(MonitorSettings))
ProfileResource = pydantic.create_model(
    "ProfileResource",
    __base__=_ProfileSelection,
    __module__=__name__,
    __doc__=_ProfileSelection.__doc__,
    **{
        name: (
            _TRAIN_TYPES[name] | None,
            Field(default=None, description=f"override of the profile's TrainConfig.{name}"),
        )
        for name in _TRAIN_FIELDS
    },
    **{
        f"{MONITOR_PREFIX}{name}": (
            _MONITOR_TYPES[name] | None,
            Field(default=None, description=f"override of the profile's MonitorSettings.{name}"),
        )
        for name in _MONITOR_FIELDS
    },
)
