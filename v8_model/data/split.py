"""Chronological train / validation / test split with an embargo between segments.

Rows are in time order. Each segment is a contiguous block; between two segments `embargo` rows are
thrown away, so that no training label (which looks `horizon` bars ahead) overlaps a validation
window, and no validation feature window (up to LONGEST_FEATURE_WINDOW bars back) reaches into
training rows.
"""

from __future__ import annotations

from dataclasses import dataclass

from v8_model.data.settings import DEFAULT_DATA_SETTINGS
from v8_model.defaults import DEFAULT_HORIZON, LONGEST_FEATURE_WINDOW

# TrainConfig's train_fraction and val_fraction, and the rest for the test segment.
DEFAULT_FRACTIONS = DEFAULT_DATA_SETTINGS.fractions


def minimum_embargo(horizon: int = DEFAULT_HORIZON) -> int:
    """The smallest safe gap between segments: label horizon plus the longest feature window."""
    return horizon + LONGEST_FEATURE_WINDOW


@dataclass(frozen=True)
class ChronologicalSplit:
    """Row slices of the three segments."""

    train: slice
    validation: slice
    test: slice
    embargo: int

    def sizes(self) -> dict[str, int]:
        return {
            name: segment.stop - segment.start
            for name, segment in (
                ("train", self.train),
                ("validation", self.validation),
                ("test", self.test),
            )
        }


def chronological_split(
    n_rows: int,
    *,
    fractions: tuple[float, float, float] = DEFAULT_FRACTIONS,
    horizon: int = DEFAULT_HORIZON,
    embargo: int | None = None,
) -> ChronologicalSplit:
    """Split `n_rows` time-ordered rows into train/validation/test with `embargo` rows between."""
    if len(fractions) != 3 or any(f <= 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-9:
        raise ValueError(f"fractions must be three positive numbers summing to 1, got {fractions}")
    safe = minimum_embargo(horizon)
    embargo = safe if embargo is None else embargo
    if embargo < safe:
        raise ValueError(
            f"embargo of {embargo} rows is shorter than horizon {horizon} + longest feature "
            f"window {LONGEST_FEATURE_WINDOW} = {safe} rows: neighbouring samples would leak"
        )
    usable = n_rows - 2 * embargo
    n_train = int(usable * fractions[0])
    n_validation = int(usable * fractions[1])
    n_test = usable - n_train - n_validation
    if min(n_train, n_validation, n_test) < 1:
        raise ValueError(
            f"{n_rows} rows are too few for a {fractions} split with {embargo}-row embargoes"
        )
    validation_start = n_train + embargo
    test_start = validation_start + n_validation + embargo
    return ChronologicalSplit(
        train=slice(0, n_train),
        validation=slice(validation_start, validation_start + n_validation),
        test=slice(test_start, n_rows),
        embargo=embargo,
    )
