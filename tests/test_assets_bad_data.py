"""Bad data is refused: bad features files before any training starts, bad candles at the source.

Each case puts a bad `data/BTC_features.parquet` in the storage root — as if someone uploaded it —
and runs the features checks with everything downstream of them. The trainer stand-in records any
call: none may happen.
"""

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from crpbot_assets.assets import candles
from crpbot_assets.checks import FEATURES_CHECK_NAMES, features_checks
from crpbot_assets.definitions import SYMBOL_ASSETS
from crpbot_assets.profiles import ProfileResource
from crpbot_assets.resources import ExchangeResource
from crpbot_assets.storage import (
    StorageResource,
    candles_key,
    features_key,
    processor_key,
    staged_candles_key,
)
from crpbot_assets.trainers import ModelTrainer
from v8_model.data.features import build_features_dataset
from v8_model.data.synthetic import generate_candles

TRAINER_CALLS: list[str] = []


class RecordingTrainer(ModelTrainer):
    @property
    def kind(self) -> str:
        return "recording"

    def train(self, context, *, symbol, storage, hyperparameters):
        TRAINER_CALLS.append(symbol)
        raise AssertionError("training started on a features file that failed its checks")


@pytest.fixture(scope="module")
def good_features() -> pd.DataFrame:
    return build_features_dataset(generate_candles("BTC", minutes=12 * 1440, seed=3, signal=0.3))


def run_checks_and_downstream(root, dataset: pd.DataFrame, instance) -> dg.ExecuteInProcessResult:
    storage = StorageResource(root=str(root))
    storage.store.write_parquet(features_key("BTC"), dataset)
    TRAINER_CALLS.clear()
    return dg.materialize(
        [*SYMBOL_ASSETS, features_checks],
        selection=dg.AssetSelection.checks_for_assets("features")
        | dg.AssetSelection.assets("processor", "model", "production_model"),
        partition_key="BTC",
        instance=instance,
        resources={
            "storage": storage,
            # 12 days of candles are a full history for this profile; 1,000 rows are not.
            "profile": ProfileResource(name="demo", min_coverage_days=7),
            "trainer": RecordingTrainer(),
            "exchanges": ExchangeResource(),
        },
        raise_on_error=False,
    )


def failed_checks(result: dg.ExecuteInProcessResult) -> dict[str, str]:
    evaluations = result.get_asset_check_evaluations()
    assert {e.check_name for e in evaluations} == set(FEATURES_CHECK_NAMES)
    return {e.check_name: e.description for e in evaluations if not e.passed}


def assert_nothing_trained(result: dg.ExecuteInProcessResult, root) -> None:
    assert not result.success
    assert result.get_asset_materialization_events() == []
    assert TRAINER_CALLS == []
    assert not StorageResource(root=str(root)).store.exists(processor_key("BTC"))


def test_the_good_file_passes_every_check(good_features, tmp_path, dagster_instance):
    TRAINER_CALLS.clear()
    result = run_checks_and_downstream(tmp_path, good_features, dagster_instance)
    assert failed_checks(result) == {}
    assert TRAINER_CALLS == ["BTC"]  # the checks passed, so training was attempted


def test_missing_feature_column(good_features, tmp_path, dagster_instance):
    result = run_checks_and_downstream(
        tmp_path, good_features.drop(columns=["rsi_14"]), dagster_instance
    )
    assert failed_checks(result) == {
        "feature_columns": "missing 1 of 72 feature columns: 'rsi_14'. Rebuild the file with "
        "v8_model.data.features.build_features_dataset."
    }
    assert_nothing_trained(result, tmp_path)


def test_nan_values(good_features, tmp_path, dagster_instance):
    bad = good_features.copy()
    bad.loc[[10, 11, 500], "volatility_20"] = np.nan
    bad.loc[7, "close"] = np.inf
    result = run_checks_and_downstream(tmp_path, bad, dagster_instance)
    failed = failed_checks(result)
    assert set(failed) == {"finite_values"}
    assert failed["finite_values"].startswith(
        "NaN/Inf in 2 column(s): 'close (1 rows)', 'volatility_20 (3 rows)'; "
        "first offending rows [7, 10, 11, 500]."
    )
    assert_nothing_trained(result, tmp_path)


def test_a_1000_row_sample_is_refused(good_features, tmp_path, dagster_instance):
    result = run_checks_and_downstream(tmp_path, good_features.iloc[:1000], dagster_instance)
    failed = failed_checks(result)
    assert set(failed) == {"enough_history"}
    assert failed["enough_history"].startswith(
        "1,000 rows, the demo profile needs 9,072 (7 days of 1-minute candles, 90% complete); "
        "covers 0.69 days, the demo profile needs 7: "
        "this looks like a sample file, not a training history."
    )
    assert_nothing_trained(result, tmp_path)


def test_unordered_timestamps(good_features, tmp_path, dagster_instance):
    bad = pd.concat([good_features.iloc[:100], good_features.iloc[99:]], ignore_index=True)
    result = run_checks_and_downstream(tmp_path, bad, dagster_instance)
    failed = failed_checks(result)
    assert set(failed) == {"timestamps_increasing"}
    assert failed["timestamps_increasing"].startswith(
        "1 row(s) do not come strictly after the previous one (duplicates or out of order): "
        "'row 100 ("
    )
    assert_nothing_trained(result, tmp_path)


def test_float64_features_are_mistyped(good_features, tmp_path, dagster_instance):
    bad = good_features.astype({"log_return": "float64"})
    result = run_checks_and_downstream(tmp_path, bad, dagster_instance)
    assert (
        "wrong dtype (features must be float32): 'log_return is float64'"
        in (failed_checks(result)["feature_columns"])
    )
    assert_nothing_trained(result, tmp_path)


def materialize_candles(tmp_path, instance, path: str) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [candles],
        partition_key="SOL",
        instance=instance,
        resources={
            "storage": StorageResource(root=str(tmp_path / "root")),
            # Short test histories: the profile's minimum (30 days in demo) is not under test here.
            "profile": ProfileResource(min_coverage_days=1),
            "exchanges": ExchangeResource(),
        },
        run_config={"ops": {"candles": {"config": {"source": "parquet", "path": path}}}},
        raise_on_error=False,
    )


def test_candles_from_an_existing_parquet_file(tmp_path, dagster_instance):
    frame = generate_candles("SOL", minutes=2000, seed=1)
    frame.to_parquet(tmp_path / "SOL_1m.parquet")
    result = materialize_candles(tmp_path, dagster_instance, str(tmp_path / "{symbol}_1m.parquet"))
    assert result.success
    store = StorageResource(root=str(tmp_path / "root")).store
    pd.testing.assert_frame_equal(store.read_parquet(staged_candles_key("SOL")), frame)
    assert not store.exists(candles_key("SOL"))  # published only by `features`, once audited


def test_invalid_candles_are_refused_with_the_validation_message(tmp_path, dagster_instance):
    frame = generate_candles("SOL", minutes=2000, seed=1)
    frame.loc[5, "high"] = frame.loc[5, "low"] / 2
    path = tmp_path / "SOL_1m.parquet"
    frame.to_parquet(path)
    result = materialize_candles(tmp_path, dagster_instance, str(path))
    assert not result.success
    [failure] = result.get_step_failure_events()
    failure_data = failure.step_failure_data.user_failure_data
    assert failure_data.description.startswith(
        f"{path}: rule 'high >= max(open, close)' is broken in column 'high'"
    )
    assert failure_data.metadata["rule"].value == "high_below_open_close"
    assert not (tmp_path / "root" / "candles").exists()


@pytest.mark.parametrize(
    ("content", "problem"),
    [(b"PAR1 not a parquet file PAR1", "is not a readable parquet file"), (None, "no such object")],
)
def test_a_garbage_or_missing_candles_file_is_named_with_its_path(
    tmp_path, dagster_instance, content, problem
):
    """pyarrow's ArrowInvalid says "magic bytes not found" and never which file: the failure
    names the setting, the file and the fix, and nothing is stored."""
    path = tmp_path / "SOL_1m.parquet"
    if content is not None:
        path.write_bytes(content)
    result = materialize_candles(tmp_path, dagster_instance, str(path))
    assert not result.success
    [failure] = result.get_step_failure_events()
    description = failure.step_failure_data.user_failure_data.description
    assert description.startswith(f"candles config path='{path}': ")
    assert str(path) in description.split(": ", 1)[1] and problem in description.lower()
    assert description.endswith(
        "Fix: point `path` at a parquet file of 1-minute candles "
        "(timestamp, open, high, low, close, volume)"
    )
    assert not (tmp_path / "root" / "candles").exists()
