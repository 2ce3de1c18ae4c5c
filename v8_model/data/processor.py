"""V8FeatureProcessor: the fitted scaler and label thresholds of one symbol, saved as JSON.

The file is plain JSON (feature names, StandardScaler statistics, label thresholds, the split and
label settings it was fitted with, format version); loading never unpickles and refuses a file
that does not match this code. A file written before the settings were recorded was fitted with
the default settings and reads as such.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from v8_model.data.features import FEATURE_NAMES
from v8_model.data.labels import LabelThresholds
from v8_model.data.settings import DATA_SETTING_NAMES, DEFAULT_DATA_SETTINGS, DataSettings
from v8_model.layout import processor_filename  # noqa: F401 - re-exported for callers
from v8_model.record import strict_json
from v8_model.storage import atomic_write_text

if TYPE_CHECKING:
    from sklearn.preprocessing import StandardScaler

FORMAT = "crpbot.v8.processor"
TRANSFORM_CHUNK_ROWS = 65_536
FORMAT_VERSION = 1


class ProcessorLoadError(ValueError):
    """A processor file that is missing, corrupt or does not match this code."""


class V8FeatureProcessor:
    """StandardScaler over the 72 features and the SELL/HOLD/BUY thresholds, fit on training rows.

    Follows scikit-learn conventions: `fit` learns from training data only and returns self;
    `transform` applies it to any segment.
    """

    def __init__(
        self,
        feature_names: Sequence[str] = FEATURE_NAMES,
        settings: DataSettings = DEFAULT_DATA_SETTINGS,
        symbol: str | None = None,
    ) -> None:
        self.feature_names = tuple(feature_names)
        self.settings = settings  # the split and labels its training rows came from
        self.symbol = symbol
        self.scaler: StandardScaler | None = None
        self.thresholds: LabelThresholds | None = None

    @property
    def horizon(self) -> int:
        return self.settings.label_horizon

    @property
    def is_fitted(self) -> bool:
        return self.scaler is not None and self.thresholds is not None

    def _chunks(
        self, features: pd.DataFrame | np.ndarray, rows: np.ndarray | None
    ) -> Iterator[np.ndarray]:
        """The selected rows' features in float64, TRANSFORM_CHUNK_ROWS rows at a time.

        `features` is a frame (columns found by name) or a matrix whose columns are the
        processor's features in its order. Chunks bound the float64 working copy: a
        whole-segment copy would cost 8 bytes per value on top of the float32 dataset, several
        times the float32 matrix at peak.
        """
        if isinstance(features, np.ndarray):
            if features.ndim != 2 or features.shape[1] != len(self.feature_names):
                raise ValueError(
                    f"feature matrix of shape {features.shape}: expected (rows, "
                    f"{len(self.feature_names)}), the processor's features in its order"
                )

            def rows_in_float64(chunk: slice | np.ndarray) -> np.ndarray:
                # Row-major, as a frame over a row-major matrix gives it: the scaler's sums run
                # in the same order, so its statistics are bit-identical to that frame's.
                return features[chunk].astype(np.float64)

        else:
            missing = [name for name in self.feature_names if name not in features.columns]
            if missing:
                raise ValueError(
                    f"features are missing {len(missing)} of the processor's columns: {missing[:5]}"
                )
            columns = features.columns.get_indexer(list(self.feature_names))

            def rows_in_float64(chunk: slice | np.ndarray) -> np.ndarray:
                return features.iloc[chunk, columns].to_numpy(dtype=np.float64)

        rows = None if rows is None else np.asarray(rows)
        n_rows = len(features) if rows is None else len(rows)
        for start in range(0, n_rows, TRANSFORM_CHUNK_ROWS):
            stop = min(start + TRANSFORM_CHUNK_ROWS, n_rows)
            yield rows_in_float64(slice(start, stop) if rows is None else rows[start:stop])

    def fit(
        self,
        train_features: pd.DataFrame | np.ndarray,
        train_scores: np.ndarray,
        rows: np.ndarray | None = None,
    ) -> V8FeatureProcessor:
        """Fit the scaler on training feature rows and the label thresholds on their scores.

        `train_features` is a frame or a matrix in the processor's column order (see `_chunks`);
        `rows` selects row positions of it (default: all); `train_scores` holds one score per
        selected row.
        """
        if (len(train_features) if rows is None else len(rows)) == 0:
            raise ValueError(
                "the training segment has no row with a label: the volatility-scaled forward "
                "return is undefined where the price never moves (zero trailing volatility). "
                "Fix: check that the candles' close price varies (a constant or placeholder "
                "price series is not a market)"
            )
        # scikit-learn (with scipy.stats, ~2 s) is imported where a scaler is made: the Dagster
        # definitions import this module, and the main command's process never fits one.
        from sklearn.preprocessing import StandardScaler

        scaler = StandardScaler()
        low = np.full(len(self.feature_names), np.inf)
        high = np.full(len(self.feature_names), -np.inf)
        for chunk in self._chunks(train_features, rows):
            if not np.all(np.isfinite(chunk)):
                raise ValueError("training features contain NaN/Inf; the scaler cannot be fitted")
            scaler.partial_fit(chunk)
            low, high = np.minimum(low, chunk.min(axis=0)), np.maximum(high, chunk.max(axis=0))
        constant = [
            name for name, lo, hi in zip(self.feature_names, low, high, strict=True) if lo == hi
        ]
        if constant:
            # A constant column carries no information, and the scaler would silently leave it
            # unscaled: the candles behind it are a placeholder, not a market.
            raise ValueError(
                f"{len(constant)} feature(s) are constant on all {int(scaler.n_samples_seen_)} "
                f"training rows: {constant}. Fix: check the candles these features come from "
                "(e.g. volume that is zero in almost every minute, or a price that never moves); "
                "train on a market with real trading in the training period"
            )
        self.scaler = scaler
        self.thresholds = LabelThresholds.fit(
            np.asarray(train_scores), self.horizon, self.settings.quantiles
        )
        return self

    def _require_fitted(self) -> None:
        if not self.is_fitted:
            raise RuntimeError("V8FeatureProcessor is not fitted: call fit() or load() first")

    def transform(self, features: pd.DataFrame, rows: np.ndarray | None = None) -> np.ndarray:
        """Scaled feature matrix (float32, rows × 72) in the processor's column order.

        `rows` selects row positions of `features` (default: all), without copying the frame.
        """
        self._require_fitted()
        scaled = np.empty(
            (len(features) if rows is None else len(rows), len(self.feature_names)),
            dtype=np.float32,
        )
        start = 0
        for chunk in self._chunks(features, rows):
            scaled[start : start + len(chunk)] = self.scaler.transform(chunk)
            start += len(chunk)
        return scaled

    def scale_in_place(self, features: np.ndarray) -> np.ndarray:
        """Scale a float32 matrix (rows × 72, the processor's column order) in place and return
        it: the figures `transform` gives, without a second matrix, chunk by chunk."""
        self._require_fitted()
        if features.dtype != np.float32:
            raise ValueError(f"scale_in_place scales a float32 matrix, got {features.dtype}")
        start = 0
        for chunk in self._chunks(features, None):
            features[start : start + len(chunk)] = self.scaler.transform(chunk, copy=False)
            start += len(chunk)
        return features

    def labels(self, scores: np.ndarray) -> np.ndarray:
        self._require_fitted()
        return self.thresholds.assign(np.asarray(scores))

    def to_dict(self) -> dict:
        self._require_fitted()
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "symbol": self.symbol,
            "feature_names": list(self.feature_names),
            "scaler": {
                "mean": self.scaler.mean_.tolist(),
                "scale": self.scaler.scale_.tolist(),
                "var": self.scaler.var_.tolist(),
                "n_samples_seen": int(self.scaler.n_samples_seen_),
            },
            "label_thresholds": {
                "sell_below": self.thresholds.sell_below,
                "buy_above": self.thresholds.buy_above,
                "horizon": self.thresholds.horizon,
            },
            "settings": {name: getattr(self.settings, name) for name in DATA_SETTING_NAMES},
        }

    def save(self, path: str | Path) -> Path:
        """Write the processor as JSON, atomically; returns the path written."""
        path = Path(path)
        atomic_write_text(path, strict_json(self.to_dict(), indent=1))
        return path

    @classmethod
    def from_dict(
        cls,
        payload: dict,
        *,
        source: str = "processor",
        expected_feature_names: Sequence[str] = FEATURE_NAMES,
    ) -> V8FeatureProcessor:
        if not isinstance(payload, dict) or payload.get("format") != FORMAT:
            raise ProcessorLoadError(f"{source}: not a V8 processor file (format != {FORMAT!r})")
        version = payload.get("format_version")
        if version != FORMAT_VERSION:
            raise ProcessorLoadError(
                f"{source}: format version {version!r}, this code reads version {FORMAT_VERSION}; "
                "refit the processor with this version"
            )
        names = payload.get("feature_names")
        if names != list(expected_feature_names):
            detail = _first_name_difference(names, list(expected_feature_names))
            raise ProcessorLoadError(
                f"{source}: feature names do not match this code's 72 features ({detail}); "
                "refit the processor on features computed by this version"
            )
        try:
            scaler_stats = payload["scaler"]
            mean = np.asarray(scaler_stats["mean"], dtype=np.float64)
            scale = np.asarray(scaler_stats["scale"], dtype=np.float64)
            var = np.asarray(scaler_stats["var"], dtype=np.float64)
            n_seen = int(scaler_stats["n_samples_seen"])
            label = payload["label_thresholds"]
            thresholds = LabelThresholds(
                float(label["sell_below"]), float(label["buy_above"]), int(label["horizon"])
            )
            # Absent in a file written before the settings were recorded: the defaults then.
            settings = DataSettings(
                **payload.get("settings", {"label_horizon": thresholds.horizon})
            )
        except (KeyError, TypeError, ValueError) as error:
            raise ProcessorLoadError(f"{source}: corrupt processor file ({error!r})") from error
        n_features = len(names)
        if not (mean.shape == scale.shape == var.shape == (n_features,)):
            raise ProcessorLoadError(
                f"{source}: scaler statistics have shapes {mean.shape}, {scale.shape}, "
                f"{var.shape}; expected ({n_features},)"
            )
        if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(scale)) and np.all(scale > 0)):
            raise ProcessorLoadError(f"{source}: scaler statistics contain NaN/Inf or zero scale")
        if not thresholds.sell_below <= thresholds.buy_above:
            raise ProcessorLoadError(f"{source}: label thresholds are out of order")
        if thresholds.horizon != settings.label_horizon:
            raise ProcessorLoadError(
                f"{source}: label thresholds for horizon {thresholds.horizon} but settings say "
                f"label_horizon {settings.label_horizon}"
            )

        processor = cls(names, settings, payload.get("symbol"))
        from sklearn.preprocessing import StandardScaler  # see fit

        scaler = StandardScaler()
        scaler.mean_, scaler.scale_, scaler.var_ = mean, scale, var
        scaler.n_samples_seen_ = n_seen
        scaler.n_features_in_ = n_features
        processor.scaler = scaler
        processor.thresholds = thresholds
        return processor

    @classmethod
    def load(
        cls, path: str | Path, *, expected_feature_names: Sequence[str] = FEATURE_NAMES
    ) -> V8FeatureProcessor:
        """Read a processor file written by `save`; raises ProcessorLoadError on any mismatch."""
        path = Path(path)
        try:
            payload = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as error:
            raise ProcessorLoadError(f"{path}: processor file not found") from error
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            message = f"{path}: corrupt processor file, not JSON ({error})"
            raise ProcessorLoadError(message) from error
        return cls.from_dict(
            payload, source=str(path), expected_feature_names=expected_feature_names
        )


def _first_name_difference(found: object, expected: list[str]) -> str:
    if not isinstance(found, list):
        return f"found {type(found).__name__}, expected a list of {len(expected)} names"
    if len(found) != len(expected):
        return f"found {len(found)} names, expected {len(expected)}"
    for position, (got, want) in enumerate(zip(found, expected, strict=True)):
        if got != want:
            return f"column {position} is {got!r}, expected {want!r}"
    return "identical"
