"""The `candles` asset's exchange source and the daily refresh schedule, offline.

The download itself (pages, retries, gaps, duplicates) is tested in test_exchange.py; here the
Dagster wiring: run config to `update_candles`, incremental runs, the data version, each error as
a clear step failure, and the schedule's run requests. `FakeExchangeResource` is the seam: it
replaces the ccxt exchange with `tests/fake_exchange.FakeExchange`, whose market ends two hours
before the tests start, so "now" always lies past its last candle.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime

import dagster as dg
import pandas as pd
from helpers import (
    MARKET_MINUTES,
    MARKET_START,
    FakeExchangeResource,
    exchange_config,
    fake_market,
    materialize_candles,
)

from crpbot_assets.automation import EXCHANGE_RUN_CONFIG, candles_refresh_schedule
from crpbot_assets.definitions import defs
from crpbot_assets.resources import ExchangeResource
from crpbot_assets.storage import StorageResource, staged_candles_key
from v8_model.data.candles import CANDLE_COLUMNS

DATA_VERSION_TAG = "dagster/data_version"


def recorded(result: dg.ExecuteInProcessResult) -> tuple[dict, str]:
    """The candles materialization's metadata (plain values) and data version."""
    assert result.success, [e.message for e in result.get_step_failure_events()]
    [event] = result.get_asset_materialization_events()
    materialization = event.materialization
    metadata = {
        key: getattr(value, "value", value) for key, value in materialization.metadata.items()
    }
    return metadata, materialization.tags[DATA_VERSION_TAG]


def failure(result: dg.ExecuteInProcessResult):
    assert not result.success
    assert not result.get_asset_materialization_events()
    [event] = result.get_step_failure_events()
    return event.step_failure_data.user_failure_data


def stored(root) -> pd.DataFrame:
    """The downloaded candles: staged until `features` audits and publishes them."""
    return StorageResource(root=str(root)).store.read_parquet(staged_candles_key("BTC"))


def test_exchange_source_downloads_incrementally_with_a_content_version(tmp_path, dagster_instance):
    root = tmp_path / "root"
    market = fake_market(MARKET_START.isoformat())

    first, version = recorded(
        materialize_candles(
            root, dagster_instance, FakeExchangeResource(published=2_000), exchange_config()
        )
    )
    assert (first["source"], first["rows"], first["rows_added"]) == (
        "exchange coinbase BTC/USD",
        2_000,
        2_000,
    )
    assert first["uri"] == str(root / "candles" / "BTC_candles.parquet")
    assert version == f"{market.timestamp[0]}/{market.timestamp[1_999]}/2000"
    pd.testing.assert_frame_equal(
        stored(root)[list(CANDLE_COLUMNS[1:])], market.iloc[:2_000, 1:], check_dtype=False
    )

    # Nothing new published: no candle added, the same data version.
    again, same_version = recorded(
        materialize_candles(
            root, dagster_instance, FakeExchangeResource(published=2_000), exchange_config()
        )
    )
    assert (again["rows_added"], again["rows"], same_version) == (0, 2_000, version)
    assert again["requested_from"] == str(market.timestamp[2_000])  # after the last stored one

    more, new_version = recorded(
        materialize_candles(root, dagster_instance, FakeExchangeResource(), exchange_config())
    )
    assert (more["rows_added"], more["rows"]) == (1_000, 3_000)
    assert new_version != version
    assert len(stored(root)) == MARKET_MINUTES


def test_missing_ccxt_is_a_failure_that_says_how_to_install_it(
    tmp_path, dagster_instance, monkeypatch
):
    monkeypatch.setitem(sys.modules, "ccxt", None)  # `import ccxt` raises ImportError
    result = materialize_candles(tmp_path, dagster_instance, ExchangeResource(), exchange_config())
    description = failure(result).description
    assert description.startswith("cannot open exchange 'coinbase': ")
    assert "needs ccxt" in description and "pip install" in description


def test_a_hard_exchange_error_names_the_market(tmp_path, dagster_instance):
    result = materialize_candles(
        tmp_path, dagster_instance, FakeExchangeResource(), exchange_config(market="{symbol}/EUR")
    )
    data = failure(result)
    assert "fetch_ohlcv('BTC/EUR', '1m'" in data.description
    assert "BadSymbol" in data.description and "not transient" in data.description
    assert data.metadata["market"].value == "BTC/EUR"
    assert not (tmp_path / "candles").exists()


def test_a_gap_fails_validation_and_its_page_is_not_stored(tmp_path, dagster_instance):
    exchange = FakeExchangeResource(gap=[1_000, 45])
    result = materialize_candles(tmp_path, dagster_instance, exchange, exchange_config())
    assert recorded(result)[0]["rows"] == MARKET_MINUTES - 45  # within the default 60 minutes

    root = tmp_path / "strict"
    result = materialize_candles(root, dagster_instance, exchange, exchange_config(max_gap="30min"))
    data = failure(result)
    assert data.metadata["rule"].value == "gap"
    assert str(root / "staging" / "candles" / "BTC_candles.parquet") in data.description
    # Pages before the gap's page are kept (the next run resumes there), none after it.
    gap_start = fake_market(MARKET_START.isoformat()).timestamp[1_000]
    assert 0 < len(stored(root)) < 1_000
    assert stored(root).timestamp.iloc[-1] < gap_start


def test_too_little_history_and_a_bad_max_gap_are_refused(tmp_path, dagster_instance):
    few = failure(
        materialize_candles(
            tmp_path, dagster_instance, FakeExchangeResource(published=100), exchange_config()
        )
    )
    assert "holds 100 candles of BTC/USD after the download; the features need at least" in (
        few.description
    )
    bad = failure(
        materialize_candles(
            tmp_path, dagster_instance, FakeExchangeResource(), exchange_config(max_gap="soon")
        )
    )
    assert bad.description.startswith("candles config max_gap='soon' is not a duration")


def test_the_download_never_extends_candles_of_another_source(tmp_path, dagster_instance):
    root = tmp_path / "root"
    synthetic = {"ops": {"candles": {"config": {"days": 1}}}}
    materialize_candles(root, dagster_instance, FakeExchangeResource(), synthetic)
    before = stored(root)
    data = failure(
        materialize_candles(root, dagster_instance, FakeExchangeResource(), exchange_config())
    )
    assert "holds candles from synthetic(days=1, " in data.description
    assert "not from exchange coinbase BTC/USD" in data.description
    pd.testing.assert_frame_equal(stored(root), before)


def test_synthetic_candles_are_versioned_by_content(tmp_path, dagster_instance):
    synthetic = {"ops": {"candles": {"config": {"days": 1}}}}
    versions = [
        recorded(materialize_candles(tmp_path, dagster_instance, ExchangeResource(), config))[1]
        for config in (
            synthetic,
            synthetic,
            {"ops": {"candles": {"config": {"days": 1, "seed": 9}}}},
        )
    ]
    assert versions[0] == versions[1] != versions[2]


def test_daily_schedule_requests_one_exchange_refresh_per_symbol():
    assert candles_refresh_schedule.default_status == dg.DefaultScheduleStatus.STOPPED
    assert candles_refresh_schedule.cron_schedule == "15 0 * * *"
    context = dg.build_schedule_context(
        repository_def=defs.get_repository_def(),
        scheduled_execution_time=datetime(2026, 3, 2, 0, 15, tzinfo=UTC),
    )
    requests = list(candles_refresh_schedule.evaluate_tick(context).run_requests)
    assert [r.partition_key for r in requests] == ["BTC", "ETH", "SOL"]
    assert [r.run_key for r in requests] == [
        f"candles-{s}-2026-03-02" for s in ("BTC", "ETH", "SOL")
    ]
    assert all(r.run_config == EXCHANGE_RUN_CONFIG for r in requests)
    job = defs.resolve_job_def(candles_refresh_schedule.job_name)
    assert {key.to_user_string() for key in job.asset_layer.selected_asset_keys} == {"candles"}
    assert dg.validate_run_config(job, EXCHANGE_RUN_CONFIG)
