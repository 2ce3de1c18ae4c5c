"""A user's partition backfill of every symbol, end to end, on the production instance.

dagster-webserver and dagster-daemon run against deploy/dagster.yaml (PostgreSQL on 127.0.0.1,
compute logs in moto's S3) with the repo's workspace.yaml. The backfill is launched as the UI's
"Materialize" dialog launches it: the `launchPartitionBackfill` GraphQL mutation with the asset
selection and the partition keys. The daemon queues and launches one run per symbol (each in its
own process, the `model` steps taking turns in the training pool); when the three are done, the
assets' automation refreshes gate_report once over all symbols.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest
from helpers import small_run_config
from servers import (
    Service,
    Webserver,
    dagster_daemon,
    dagster_env,
    dagster_webserver,
    graphql,
    postgres_server,
    production_dagster_yaml,
    require_module,
    wait_for,
)

from crpbot_assets.assets import SYMBOL_ASSET_NAMES
from crpbot_assets.automation import automation_sensor
from crpbot_assets.partitions import symbol_partitions
from crpbot_assets.storage import REPORT_JSON_KEY

SYMBOLS = symbol_partitions.get_partition_keys()
PARTITIONED_ASSETS = SYMBOL_ASSET_NAMES
# Three small runs on 2 busy cores, plus the daemon's 30 s backfill and sensor ticks.
BACKFILL_TIMEOUT = 360.0
REPORT_TIMEOUT = 120.0
FINISHED = {"COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED"}

LAUNCH_BACKFILL = """
mutation LaunchBackfill($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on Error { message }
  }
}
"""
BACKFILL_STATUS = """
query BackfillStatus($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    __typename
    ... on PartitionBackfill { status }
    ... on Error { message }
  }
}
"""


@dataclass
class Deployment:
    webserver: Webserver
    daemon: Service
    home: Path
    root: Path

    def check_alive(self) -> None:
        self.webserver.service.check_alive()
        self.daemon.check_alive()


@pytest.fixture
def deployment(
    tmp_path: Path, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Deployment]:
    require_module("dagster_postgres")
    home, root, logs = tmp_path / "dagster_home", tmp_path / "root", tmp_path / "logs"
    logs.mkdir()
    production_dagster_yaml(home)
    with postgres_server() as postgres:
        settings = {
            **postgres.env(),
            "DAGSTER_COMPUTE_LOGS_BUCKET": s3_bucket,
            "DAGSTER_COMPUTE_LOGS_PREFIX": "dagster/compute-logs",
            # Runs the automation starts have no run config: they find the root here.
            "CRPBOT_ROOT": str(root),
        }
        for name, value in settings.items():  # this process reads the instance too
            monkeypatch.setenv(name, value)
        env = dagster_env(home, settings)
        with dagster_webserver(home, env, logs) as webserver, dagster_daemon(env, logs) as daemon:
            yield Deployment(webserver, daemon, home, root)


def backfill_status(deployment: Deployment, backfill_id: str) -> str:
    data = graphql(deployment.webserver.url, BACKFILL_STATUS, {"id": backfill_id})
    backfill = data["partitionBackfillOrError"]
    assert backfill["__typename"] == "PartitionBackfill", backfill
    return backfill["status"]


# Above the waits below plus the servers' start and stop, so those report what was late.
@pytest.mark.timeout(900)
def test_backfill_of_every_symbol_through_the_graphql_api(deployment: Deployment):
    launched = graphql(
        deployment.webserver.url,
        LAUNCH_BACKFILL,
        {
            "params": {
                "assetSelection": [{"path": [name]} for name in PARTITIONED_ASSETS],
                "partitionNames": SYMBOLS,
                "fromFailure": False,
                "title": "every symbol",
                "runConfigData": {
                    # Small data, one epoch: what the launchpad's config editor would send.
                    **small_run_config(str(deployment.root)),
                    # Each run is still a process of its own (the launcher's part); its steps
                    # share it, since on 2 busy cores a process per step costs more than a step.
                    "execution": {"config": {"in_process": {}}},
                },
            }
        },
    )["launchPartitionBackfill"]
    assert launched["__typename"] == "LaunchBackfillSuccess", launched
    backfill_id = launched["backfillId"]

    def finished_status() -> str | None:
        status = backfill_status(deployment, backfill_id)
        return status if status in FINISHED else None

    status = wait_for(
        finished_status,
        what=f"backfill {backfill_id}",
        timeout=BACKFILL_TIMEOUT,
        interval=5.0,
        alive=deployment.check_alive,
    )

    with dg.DagsterInstance.from_config(str(deployment.home)) as instance:
        runs = instance.get_run_records(
            dg.RunsFilter(tags={"dagster/backfill": backfill_id}), ascending=True
        )
        outcomes = {r.dagster_run.tags["dagster/partition"]: r.dagster_run.status for r in runs}
        assert status == "COMPLETED_SUCCESS", outcomes
        # One run per symbol, every asset of that symbol in it.
        assert outcomes == dict.fromkeys(SYMBOLS, dg.DagsterRunStatus.SUCCESS)
        for record in runs:
            assert record.dagster_run.asset_selection == {
                dg.AssetKey(name) for name in PARTITIONED_ASSETS
            }
        for name in PARTITIONED_ASSETS:
            assert instance.get_materialized_partitions(dg.AssetKey(name)) == set(SYMBOLS)
        models_done = max(record.end_time or 0.0 for record in runs)

        # The report follows: materialized once the last model is, in a run of its own.
        def new_report() -> dg.EventLogRecord | None:
            records = instance.fetch_materializations(dg.AssetKey("gate_report"), limit=1).records
            return records[0] if records and records[0].timestamp > models_done else None

        report = wait_for(
            new_report,
            what="gate_report after the backfill",
            timeout=REPORT_TIMEOUT,
            interval=5.0,
            alive=deployment.check_alive,
        )

        def report_run_finished() -> dg.DagsterRun | None:
            run = instance.get_run_by_id(report.run_id)
            return run if run and run.is_finished else None

        report_run = wait_for(
            report_run_finished,
            what="the gate_report run",
            timeout=REPORT_TIMEOUT,
            alive=deployment.check_alive,
        )
        assert report_run.status == dg.DagsterRunStatus.SUCCESS
        # Started by the assets' automation, not by the backfill: one report for three symbols.
        assert report_run.tags.get("dagster/sensor_name") == automation_sensor.name
        reports = instance.fetch_materializations(dg.AssetKey("gate_report"), limit=10).records
        assert [record.run_id for record in reports] == [report.run_id]

    summary = json.loads((deployment.root / REPORT_JSON_KEY).read_text())
    assert summary["trained"] == len(SYMBOLS)
    assert {
        symbol: entry["status"] for symbol, entry in summary["symbols"].items()
    } == dict.fromkeys(SYMBOLS, "passed")
