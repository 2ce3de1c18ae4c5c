"""Declarative automation, evaluated in process tick by tick: retrains follow new data only.

Each test evaluates the code location's real conditions (`dg.evaluate_automation_conditions` on
`defs`) against a test instance. Candles are materialized by the real asset from the fake
exchange; the assets after them by stand-ins with the same keys, partitions and gate checks,
which record materializations the way the real ones do without training anything.
"""

from __future__ import annotations

import dagster as dg
import pytest
from helpers import FakeExchangeResource, exchange_config, materialize_candles

from crpbot_assets.checks import GATE_CHECK_SPECS
from crpbot_assets.definitions import defs
from crpbot_assets.partitions import symbol_partitions

AUTOMATED = ("features", "processor", "model", "backtest", "production_model", "gate_report")


class Ticks:
    """The automation sensor's ticks: each `tick()` evaluates every condition once."""

    def __init__(self, instance: dg.DagsterInstance) -> None:
        self.instance = instance
        self.cursor = None
        self.tick()  # the first tick only records where evaluation starts

    def tick(self) -> dict[str, set[str | None]]:
        """Asset name → requested partitions (None for an unpartitioned asset)."""
        result = dg.evaluate_automation_conditions(
            defs=defs, instance=self.instance, cursor=self.cursor
        )
        self.cursor = result.cursor
        requested = {}
        for name in AUTOMATED:
            key = dg.AssetKey(name)
            if result.get_num_requested(key):
                partitions = result.get_requested_partitions(key)
                requested[name] = partitions if partitions else {None}
        return requested


def stand_in(name: str, deps: tuple[str, ...], check_specs=(), passed: bool = True):
    """An asset with `name`'s key that records a materialization (and its gates) instantly."""
    partitions = None if name == "gate_report" else symbol_partitions

    @dg.asset(name=name, deps=deps, partitions_def=partitions, check_specs=list(check_specs))
    def _stand_in() -> dg.MaterializeResult:
        checks = [
            dg.AssetCheckResult(check_name=spec.name, passed=passed or spec.name != "logit_range")
            for spec in check_specs
        ]
        return dg.MaterializeResult(check_results=checks)

    return _stand_in


def model_stand_in(passed: bool = True):
    return stand_in("model", ("features", "processor"), GATE_CHECK_SPECS, passed)


def run_stand_ins(instance, partition: str | None, *assets) -> None:
    dg.materialize(list(assets), partition_key=partition, instance=instance, raise_on_error=False)


@pytest.fixture
def ticks(dagster_instance) -> Ticks:
    return Ticks(dagster_instance)


def test_new_candles_start_a_retrain_and_unchanged_ones_start_nothing(
    ticks, dagster_instance, tmp_path
):
    root = tmp_path / "root"

    def refresh(published: int) -> None:
        exchange = FakeExchangeResource(published=published)
        assert materialize_candles(root, dagster_instance, exchange, exchange_config()).success

    assert ticks.tick() == {}
    refresh(2_000)
    # features for BTC only; processor waits for the features checks of the new file.
    assert ticks.tick() == {"features": {"BTC"}}
    assert ticks.tick() == {}  # requested once, not on every tick

    refresh(2_000)  # the exchange has nothing new: same data version
    assert ticks.tick() == {}

    refresh(3_000)
    assert ticks.tick() == {"features": {"BTC"}}


def test_runs_that_materialize_the_whole_chain_leave_nothing_to_automate(ticks, dagster_instance):
    """What the main command does without a daemon: one run per symbol, then the report."""
    chain = [
        stand_in("candles", ()),
        stand_in("features", ("candles",)),
        stand_in("processor", ("features",)),
        model_stand_in(),
        stand_in("backtest", ("model",)),
        stand_in("production_model", ("model", "backtest")),
    ]
    for symbol in ("BTC", "ETH"):
        run_stand_ins(dagster_instance, symbol, *chain)
    run_stand_ins(dagster_instance, None, stand_in("gate_report", ("model",)))
    assert ticks.tick() == {}


def test_a_model_update_refreshes_the_report_and_promotion_needs_every_gate(
    ticks, dagster_instance
):
    run_stand_ins(dagster_instance, "BTC", model_stand_in(passed=False))
    # The report shows the failed model; neither backtest nor production_model runs for it.
    assert ticks.tick() == {"gate_report": {None}}
    assert ticks.tick() == {}

    run_stand_ins(dagster_instance, "BTC", model_stand_in(passed=True))
    assert ticks.tick() == {
        "gate_report": {None},
        "backtest": {"BTC"},
        "production_model": {"BTC"},
    }


def test_the_report_waits_until_no_model_is_in_progress(ticks, dagster_instance):
    run_stand_ins(dagster_instance, "BTC", model_stand_in())
    # A run of the SOL model has started but not finished.
    job = defs.resolve_job_def("symbol_pipeline")
    run = dagster_instance.create_run_for_job(
        job_def=job,
        asset_selection=frozenset({dg.AssetKey("model")}),
        tags={"dagster/partition": "SOL"},
        status=dg.DagsterRunStatus.STARTED,
    )
    assert "gate_report" not in ticks.tick()
    dagster_instance.report_run_failed(run)
    assert ticks.tick() == {"gate_report": {None}}


def test_the_automation_sensor_covers_every_conditioned_asset_and_runs_by_default():
    sensor = defs.resolve_sensor_def("crpbot_automation")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    graph = defs.resolve_asset_graph()
    conditioned = {k for k in graph.get_all_asset_keys() if graph.get(k).automation_condition}
    assert {key.to_user_string() for key in conditioned} == set(AUTOMATED)
    assert conditioned <= sensor.asset_selection.resolve(graph)
    # No default sensor besides it: it would start stopped and confuse who evaluates what.
    assert "default_automation_condition_sensor" not in {
        s.name for s in defs.get_repository_def().sensor_defs
    }
