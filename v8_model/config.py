"""Every training setting, defined once: `TrainConfig` and its SageMaker hyperparameter form.

SageMaker passes hyperparameters as a string → string map (values sometimes JSON-encoded) and its
driver turns them into `--name value` flags; `to_hyperparameters` renders a `TrainConfig` that way
and `from_hyperparameters` parses it back, so the names are spelled in one place (the field names,
with '-' for '_'). The entry point's argument parser is generated from the same fields
(`add_hyperparameter_arguments`). Validation lives in `TrainConfig.__post_init__` only.

No torch import here: the Dagster side renders hyperparameters without loading the trainer.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from v8_model.defaults import DEFAULT_HORIZON, LABEL_VOLATILITY_WINDOW
from v8_model.record import ABSENT_MEANS_DEFAULT

# The entry point's one hyperparameter that is not a training setting: which symbols a job trains.
SYMBOLS_HYPERPARAMETER = "symbols"
# The loss functions `v8_model.model.loss.build_loss` knows.
LOSSES = ("focal", "cross_entropy")
# Binance spot's taker fee for a regular account (the cheapest retail taker fee of the exchanges
# the exchange source is used with) and the half-spread plus impact a market order pays on a
# liquid pair; both per side, in basis points. README "Worth" lists each exchange's fees and where
# the figures come from: Coinbase Advanced's lowest tier charges far more.
DEFAULT_FEE_BPS = 10.0
DEFAULT_SLIPPAGE_BPS = 2.0
# The lowest confidence threshold the backtest may choose: with three classes the top probability
# is never below 1/3, so 1/3 trades every BUY/SELL call.
LOWEST_CONFIDENCE = 1.0 / 3.0


class HyperparameterError(ValueError):
    """A hyperparameter that is unknown or has a value of the wrong kind."""


@dataclass(frozen=True)
class TrainConfig:
    """The defaults are the seed's run (100 epochs, batch 256, lr 0.001)."""

    epochs: int = 100
    batch_size: int = 256
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    patience: int = 10  # epochs without a better validation loss before stopping
    grad_clip: float = 1.0
    seed: int = 7  # of the weights, the batch order and the profile's synthetic market
    dropout: float = 0.3
    temperature_init: float = 2.5
    loss: str = "focal"
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    label_smoothing: float = 0.1
    device: str | None = None  # None: CUDA when present, else CPU
    # Worth (v8_model.evaluation.worth, v8_model.evaluation.backtest,
    # v8_model.evaluation.walkforward): walk-forward folds, the last one being the main split; the
    # directional-skill test's one-sided significance level;
    # costs per side; whether SELL calls go short or stay flat; the lowest confidence threshold
    # the backtest may choose on validation.
    folds: int = 3
    skill_alpha: float = 0.01
    fee_bps: float = DEFAULT_FEE_BPS
    slippage_bps: float = DEFAULT_SLIPPAGE_BPS
    long_only: bool = False
    min_confidence: float = LOWEST_CONFIDENCE
    # Made settings later: a record without them was made with these defaults.
    # The net's hidden layers, input side first (v8_model.model.net: 72 → 512 → 256 → 128 → 3).
    hidden_widths: tuple[int, ...] = dataclasses.field(
        default=(512, 256, 128), metadata=ABSENT_MEANS_DEFAULT
    )
    # The chronological split (v8_model.data.split): the training and validation segments'
    # shares of the rows left after the embargoes; the test segment gets the rest.
    train_fraction: float = dataclasses.field(default=0.70, metadata=ABSENT_MEANS_DEFAULT)
    val_fraction: float = dataclasses.field(default=0.15, metadata=ABSENT_MEANS_DEFAULT)
    # The labels (v8_model.data.labels): the forward return's horizon and the trailing window of
    # the volatility that scales it, in 1-minute bars; the training scores' quantiles below which
    # a row is SELL and above which it is BUY (1/3 and 2/3: three balanced classes).
    label_horizon: int = dataclasses.field(default=DEFAULT_HORIZON, metadata=ABSENT_MEANS_DEFAULT)
    label_volatility_window: int = dataclasses.field(
        default=LABEL_VOLATILITY_WINDOW, metadata=ABSENT_MEANS_DEFAULT
    )
    label_sell_quantile: float = dataclasses.field(default=1.0 / 3.0, metadata=ABSENT_MEANS_DEFAULT)
    label_buy_quantile: float = dataclasses.field(default=2.0 / 3.0, metadata=ABSENT_MEANS_DEFAULT)

    def __post_init__(self) -> None:
        self._check_training()
        self._check_worth()
        self._check_data()

    def _check_training(self) -> None:
        positive = ("epochs", "batch_size", "learning_rate", "patience", "grad_clip")
        for name in (*positive, "temperature_init", "focal_alpha"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ValueError(f"training setting {name} must be positive, got {value!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"training setting dropout must be in [0, 1), got {self.dropout!r}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(
                f"training setting label_smoothing must be in [0, 1), got {self.label_smoothing!r}"
            )
        for name in ("weight_decay", "focal_gamma"):
            value = getattr(self, name)
            # `nan < 0` is False: the finiteness test is what refuses nan (and inf).
            if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
                raise ValueError(
                    f"training setting {name} must be a finite number >= 0, got {value!r}"
                )
        if self.loss not in LOSSES:
            raise ValueError(f"training setting loss must be one of {LOSSES}, got {self.loss!r}")

    def _check_worth(self) -> None:
        if isinstance(self.folds, bool) or not isinstance(self.folds, int) or self.folds < 1:
            raise ValueError(f"training setting folds must be an integer >= 1, got {self.folds!r}")
        if not 0.0 < self.skill_alpha < 0.5:
            raise ValueError(
                f"training setting skill_alpha must be in (0, 0.5), got {self.skill_alpha!r}"
            )
        for name in ("fee_bps", "slippage_bps"):
            value = getattr(self, name)
            if not (math.isfinite(value) and 0.0 <= value < 10_000):
                raise ValueError(
                    f"training setting {name} is a cost per side in basis points and must be "
                    f">= 0, got {value!r}"
                )
        # A tiny tolerance: 1/3 written as 0.333333333 still means "every call".
        if not (LOWEST_CONFIDENCE - 1e-6 <= self.min_confidence < 1.0):
            raise ValueError(
                "training setting min_confidence is a confidence threshold and must be in "
                f"[1/3, 1), got {self.min_confidence!r}"
            )

    def _check_data(self) -> None:
        widths = self.hidden_widths
        if (
            isinstance(widths, str)
            or not isinstance(widths, Sequence)
            or not widths
            or not all(_is_int(width) and width >= 1 for width in widths)
        ):
            raise ValueError(
                "training setting hidden_widths must be a non-empty sequence of positive "
                f"integers (e.g. 512,256,128), got {widths!r}"
            )
        object.__setattr__(self, "hidden_widths", tuple(widths))  # a list read from JSON
        for name in ("train_fraction", "val_fraction"):
            value = getattr(self, name)
            if not (_is_number(value) and 0.0 < value < 1.0):
                raise ValueError(f"training setting {name} must be in (0, 1), got {value!r}")
        if not self.train_fraction + self.val_fraction < 1.0:
            raise ValueError(
                "training settings train_fraction + val_fraction must be below 1 (the test "
                f"segment gets the rest), got {self.train_fraction!r} + {self.val_fraction!r}"
            )
        for name in ("label_horizon", "label_volatility_window"):
            value = getattr(self, name)
            if not (_is_int(value) and value >= 1):
                raise ValueError(
                    f"training setting {name} is a number of 1-minute bars and must be an "
                    f"integer >= 1, got {value!r}"
                )
        # One bar's return has no spread: the volatility needs two.
        if self.label_volatility_window < 2:
            raise ValueError(
                "training setting label_volatility_window must be at least 2 bars (a standard "
                f"deviation of one return is undefined), got {self.label_volatility_window!r}"
            )
        sell, buy = self.label_sell_quantile, self.label_buy_quantile
        if not (_is_number(sell) and _is_number(buy) and 0.0 < sell < buy < 1.0):
            raise ValueError(
                "training settings label_sell_quantile and label_buy_quantile must satisfy "
                f"0 < label_sell_quantile < label_buy_quantile < 1, got {sell!r} and {buy!r}"
            )

    def to_dict(self) -> dict:
        """Every field, JSON-ready: a tuple as a list (what JSON gives back)."""
        return {
            name: list(value) if isinstance(value, tuple) else value
            for name, value in dataclasses.asdict(self).items()
        }


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def setting_text(value: object) -> str:
    """A setting's value as one string: a sequence comma-separated (`512,256,128`), None empty."""
    if value is None:
        return ""
    if isinstance(value, tuple | list):
        return ",".join(str(item) for item in value)
    return str(value)


def hyperparameter_name(field_name: str) -> str:
    """The SageMaker spelling of a TrainConfig field: `batch_size` → `batch-size`."""
    return field_name.replace("_", "-")


_FIELD_TYPES = typing.get_type_hints(TrainConfig)
HYPERPARAMETER_NAMES: tuple[str, ...] = tuple(
    hyperparameter_name(field.name) for field in dataclasses.fields(TrainConfig)
)


def to_hyperparameters(config: TrainConfig) -> dict[str, str]:
    """Every setting as SageMaker sends it (string values); unset optional ones are left out."""
    rendered = {}
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if value is not None:
            if isinstance(value, bool):
                rendered[hyperparameter_name(field.name)] = "true" if value else "false"
            else:
                rendered[hyperparameter_name(field.name)] = (
                    repr(float(value)) if isinstance(value, float) else setting_text(value)
                )
    return rendered


def _convert(name: str, raw: object) -> object:
    """One hyperparameter's value, from a string, a JSON-encoded string or a JSON value."""
    kind = _FIELD_TYPES[name.replace("-", "_")]
    if isinstance(raw, str):
        with contextlib.suppress(json.JSONDecodeError):
            raw = json.loads(raw)
    if kind == str | None:
        kind = str
        if raw in ("", None):
            return None
    if kind == tuple[int, ...]:
        return _integers(name, raw)
    if kind is bool:  # bool("false") is True: only spelled-out truth values are accepted
        spelled = str(raw).strip().lower()
        if spelled in ("true", "1"):
            return True
        if spelled in ("false", "0"):
            return False
        raise HyperparameterError(f"hyperparameter {name!r}: expected true or false, got {raw!r}")
    try:
        if kind is int and isinstance(raw, float) and not raw.is_integer():
            raise ValueError
        return kind(raw)
    except (TypeError, ValueError) as error:
        raise HyperparameterError(
            f"hyperparameter {name!r}: expected {kind.__name__}, got {raw!r}"
        ) from error


def _integers(name: str, raw: object) -> tuple[int, ...]:
    """A sequence of integers from '512,256,128', a JSON list or one integer."""
    items = raw.split(",") if isinstance(raw, str) else raw if isinstance(raw, list) else [raw]
    try:
        values = []
        for item in items:
            if isinstance(item, bool) or (isinstance(item, float) and not item.is_integer()):
                raise ValueError
            values.append(int(item.strip() if isinstance(item, str) else item))
        return tuple(values)
    except (TypeError, ValueError) as error:
        raise HyperparameterError(
            f"hyperparameter {name!r}: expected comma-separated integers such as 512,256,128, "
            f"got {raw!r}"
        ) from error


def decode_hyperparameters(
    values: Mapping[str, object], source: str = "hyperparameters"
) -> dict[str, object]:
    """TrainConfig keyword arguments from hyperparameters (SageMaker names, or '_' spellings).

    Unknown names and values of the wrong kind raise HyperparameterError naming `source`.
    """
    changes = {}
    for key, raw in values.items():
        name = hyperparameter_name(key)
        if name not in HYPERPARAMETER_NAMES:
            raise HyperparameterError(
                f"{source}: unknown hyperparameter {key!r}; "
                f"known: {', '.join(HYPERPARAMETER_NAMES)}"
            )
        changes[name.replace("-", "_")] = _convert(name, raw)
    return changes


def from_hyperparameters(
    values: Mapping[str, object], base: TrainConfig | None = None, source: str = "hyperparameters"
) -> TrainConfig:
    """`base` (default: the seed's settings) with `values`; out-of-range values raise
    TrainConfig's ValueError."""
    return dataclasses.replace(base or TrainConfig(), **decode_hyperparameters(values, source))


def add_hyperparameter_arguments(parser: argparse.ArgumentParser) -> None:
    """A `--name` flag (and its `--name_with_underscores` spelling) per TrainConfig field."""
    for name in HYPERPARAMETER_NAMES:
        field_name = name.replace("-", "_")
        flags = [f"--{name}"] + ([f"--{field_name}"] if field_name != name else [])
        parser.add_argument(*flags, dest=name, default=None, metavar=field_name.upper())
