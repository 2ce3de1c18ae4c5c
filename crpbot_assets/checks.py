"""Asset checks: what a features file must satisfy before training, and the six model gates.

The features checks read the stored file (what the trainer will read), once, and judge it with one
small function per check. They are blocking: when one fails, `processor`, `model` and
`production_model` do not run, so no training starts on a bad file. The rows and time coverage a
file needs come from the run's profile, so a sample is refused.

The gates are computed by the training entry point and reported through Pipes; here they are only
declared, one blocking ERROR check per gate on `model`. The `backtest` asset's
`profitable_after_costs` check is declared here too; its severity is the profile's (WARN by
default; ERROR keeps the model out of production, since `production_model` depends on `backtest`).
"""

import warnings

import dagster as dg
import numpy as np
import pandas as pd
from pandas.api.types import is_numeric_dtype

from crpbot_assets.partitions import symbol_partitions
from crpbot_assets.profiles import Profile, ProfileResource
from crpbot_assets.storage import StorageResource, features_key
from v8_model.data.candles import VALUE_COLUMNS
from v8_model.data.features import FEATURE_NAMES
from v8_model.evaluation.gates import GATES
from v8_model.evaluation.metrics import BacktestFigures
from v8_model.record import is_finite_number

FEATURE_DTYPE = np.dtype("float32")
_MAX_NAMED = 5  # columns or rows quoted in a message; counts cover the rest

FEATURES_CHECK_NAMES = (
    "feature_columns",
    "enough_history",
    "timestamps_increasing",
    "finite_values",
)


def _spec(name: str, asset: str, description: str) -> dg.AssetCheckSpec:
    # Partitioned checks are a preview feature; their behaviour (per-partition results, blocking)
    # was verified on the pinned dagster 1.13.27, so the warning is silenced here only.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.PreviewWarning)
        return dg.AssetCheckSpec(
            name,
            asset=asset,
            description=description,
            blocking=True,
            partitions_def=symbol_partitions,
        )


FEATURES_CHECK_SPECS = [
    _spec(
        "feature_columns",
        "features",
        "timestamp, OHLCV and the 72 feature columns with the expected names, float32 features",
    ),
    _spec(
        "enough_history",
        "features",
        "enough rows and time coverage for the profile: refuses sample files",
    ),
    _spec("timestamps_increasing", "features", "timestamps are tz-aware and strictly increasing"),
    _spec("finite_values", "features", "no NaN or Inf in OHLCV or any feature"),
]

# Reported by the entry point through Pipes; a failed gate fails the step and stops promotion.
GATE_CHECK_SPECS = [_spec(gate.name, "model", gate.description) for gate in GATES]

PROFIT_CHECK_NAME = "profitable_after_costs"
# Blocking, so that with severity ERROR a loss after costs stops promotion; a WARN never blocks.
PROFIT_CHECK_SPEC = _spec(
    PROFIT_CHECK_NAME,
    "backtest",
    "the walk-forward backtest's net_return (after fees and slippage on both sides) is > 0; "
    "severity: the profile's profit_check_severity",
)


def profitable(figures: BacktestFigures) -> bool:
    """The profit check's verdict; a non-finite return (corrupt prices) is no profit."""
    return is_finite_number(figures.net_return) and figures.net_return > 0


def _result(name: str, passed: bool, description: str, **metadata) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        check_name=name,
        asset_key="features",
        passed=passed,
        severity=dg.AssetCheckSeverity.ERROR,
        description=description,
        metadata=metadata,
    )


def _named(items: list[str], total: int | None = None) -> str:
    """The first few items, and how many more of `total` (default: all of `items`) there are."""
    total = len(items) if total is None else total
    shown = items[:_MAX_NAMED]
    more = f" and {total - len(shown)} more" if total > len(shown) else ""
    return ", ".join(map(repr, shown)) + more


def check_feature_columns(dataset: pd.DataFrame) -> dg.AssetCheckResult:
    present = set(dataset.columns)
    missing_features = [name for name in FEATURE_NAMES if name not in present]
    missing_base = [name for name in ("timestamp", *VALUE_COLUMNS) if name not in present]
    mistyped = [
        f"{name} is {dataset[name].dtype}"
        for name in FEATURE_NAMES
        if name in present and dataset[name].dtype != FEATURE_DTYPE
    ]
    mistyped += [
        f"{name} is {dataset[name].dtype}"
        for name in VALUE_COLUMNS
        if name in present and not is_numeric_dtype(dataset[name])
    ]
    unexpected = [str(c) for c in dataset.columns if c not in {"timestamp", *VALUE_COLUMNS}]
    unexpected = [c for c in unexpected if c not in FEATURE_NAMES]
    problems = []
    if missing_base:
        problems.append(f"missing base column(s) {_named(missing_base)}")
    if missing_features:
        problems.append(
            f"missing {len(missing_features)} of {len(FEATURE_NAMES)} feature columns: "
            f"{_named(missing_features)}"
        )
    if mistyped:
        problems.append(f"wrong dtype (features must be float32): {_named(mistyped)}")
    n_features = len(FEATURE_NAMES) - len(missing_features)
    if problems:
        description = (
            "; ".join(problems)
            + ". Rebuild the file with v8_model.data.features.build_features_dataset."
        )
    else:
        description = f"all {len(FEATURE_NAMES)} feature columns present as float32"
    return _result(
        "feature_columns",
        not problems,
        description,
        feature_columns=n_features,
        expected_feature_columns=len(FEATURE_NAMES),
        missing=missing_base + missing_features,
        mistyped=mistyped,
        unexpected=unexpected,
    )


def check_enough_history(dataset: pd.DataFrame, profile: Profile) -> dg.AssetCheckResult:
    rows = len(dataset)
    coverage_days = 0.0
    if "timestamp" in dataset.columns and rows > 1:
        span = dataset["timestamp"].iloc[-1] - dataset["timestamp"].iloc[0]
        coverage_days = max(span / pd.Timedelta(days=1), 0.0)
    problems = profile.history_problems(rows, coverage_days)
    if problems:
        description = (
            "; ".join(problems)
            + ": this looks like a sample file, not a training history. Supply the full "
            "history (the seed's files hold two years of 1-minute candles)."
        )
    else:
        description = f"{rows:,} rows over {coverage_days:.1f} days"
    return _result(
        "enough_history",
        not problems,
        description,
        rows=rows,
        min_rows=profile.min_rows,
        coverage_days=round(coverage_days, 3),
        min_coverage_days=profile.min_coverage_days,
        profile=profile.name,
    )


def check_timestamps_increasing(dataset: pd.DataFrame) -> dg.AssetCheckResult:
    name = "timestamps_increasing"
    if "timestamp" not in dataset.columns:
        return _result(name, False, "no 'timestamp' column: cannot order the rows")
    stamps = dataset["timestamp"]
    if not isinstance(stamps.dtype, pd.DatetimeTZDtype):
        return _result(
            name,
            False,
            f"'timestamp' is {stamps.dtype}, expected tz-aware UTC datetimes: parse it with "
            "pd.to_datetime(..., utc=True)",
        )
    values = stamps.dt.tz_convert(None).to_numpy()
    bad = np.flatnonzero(~(np.diff(values) > np.timedelta64(0))) + 1
    if bad.size:
        shown = [
            f"row {i} ({stamps.iloc[i]}) after row {i - 1} ({stamps.iloc[i - 1]})"
            for i in bad[:_MAX_NAMED]
        ]
        description = (
            f"{bad.size} row(s) do not come strictly after the previous one (duplicates or "
            f"out of order): {_named(shown, bad.size)}. Sort and de-duplicate the candles, "
            "then rebuild."
        )
    else:
        description = f"{len(values):,} timestamps strictly increasing"
    return _result(name, not bad.size, description, offending_rows=int(bad.size))


def check_finite_values(dataset: pd.DataFrame) -> dg.AssetCheckResult:
    columns = [c for c in (*VALUE_COLUMNS, *FEATURE_NAMES) if c in dataset.columns]
    numeric = [c for c in columns if is_numeric_dtype(dataset[c])]
    matrix = dataset[numeric].to_numpy(dtype=np.float64, na_value=np.nan)
    bad_mask = ~np.isfinite(matrix)
    per_column = bad_mask.sum(axis=0)
    offending = {numeric[i]: int(n) for i, n in enumerate(per_column) if n}
    bad_rows = np.flatnonzero(bad_mask.any(axis=1))
    if offending:
        named = [f"{column} ({count} rows)" for column, count in offending.items()]
        description = (
            f"NaN/Inf in {len(offending)} column(s): {_named(named)}; first offending rows "
            f"{bad_rows[:_MAX_NAMED].tolist()}. Warm-up rows must be dropped, never filled: "
            "rebuild the file with v8_model.data.features.build_features_dataset."
        )
    else:
        description = f"no NaN/Inf in {len(numeric)} columns"
    return _result(
        "finite_values",
        not offending,
        description,
        offending_columns=offending,
        offending_rows=int(bad_rows.size),
    )


def audit_features(dataset: pd.DataFrame, profile: Profile) -> list[dg.AssetCheckResult]:
    """The four features checks on a dataset, in order (the `features` asset audits with them
    before it publishes; `features_checks` runs them on the stored file)."""
    return [
        check_feature_columns(dataset),
        check_enough_history(dataset, profile),
        check_timestamps_increasing(dataset),
        check_finite_values(dataset),
    ]


@dg.multi_asset_check(specs=FEATURES_CHECK_SPECS, compute_kind="pandas")
def features_checks(
    context: dg.AssetCheckExecutionContext, storage: StorageResource, profile: ProfileResource
):
    """Reads the stored features file once and runs the four features checks on it."""
    key = features_key(context.partition_key)
    dataset = storage.store.read_parquet(key)
    context.log.info(f"checking {storage.store.uri(key)}: {len(dataset):,} rows")
    yield from audit_features(dataset, profile.get())
