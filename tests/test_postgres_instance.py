"""The production instance (deploy/dagster.yaml) proven against a real PostgreSQL server.

A throw-away PostgreSQL cluster on 127.0.0.1 (Debian's `postgresql`), the S3 compute logs on moto
on 127.0.0.1, and deploy/dagster.yaml copied unchanged into a temporary DAGSTER_HOME: the values
come from the environment, exactly as in production. One partition is materialized through that
instance; then a fresh instance from the same file, and plain SQL, read the run and the gate
results back from PostgreSQL, and the step logs back from S3.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import boto3
import dagster as dg
import pytest
from helpers import small_run_config
from servers import (
    Postgres,
    load_deploy_config,
    postgres_server,
    production_dagster_yaml,
    require_module,
)

from crpbot_assets.checks import FEATURES_CHECK_NAMES, PROFIT_CHECK_NAME
from crpbot_assets.definitions import defs
from crpbot_assets.sagemaker.dagster_objects import TRAINING_POOL
from v8_model.evaluation.gates import GATE_NAMES

LOGS_PREFIX = "dagster/compute-logs"


def test_deploy_config_reads_every_secret_and_place_from_the_environment():
    config = load_deploy_config()
    database = config["storage"]["postgres"]["postgres_db"]
    from_env = {
        key: database.pop(key) for key in ("hostname", "port", "db_name", "username", "password")
    }
    assert all(set(value) == {"env"} for value in from_env.values()), from_env
    assert database == {"scheme": "postgresql+psycopg2"}  # nothing else is written down
    logs = config["compute_logs"]
    assert logs["class"] == "S3ComputeLogManager"
    assert {key: set(logs["config"][key]) for key in ("bucket", "prefix")} == {
        "bucket": {"env"},
        "prefix": {"env"},
    }


@pytest.fixture
def production_instance(
    tmp_path: Path, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Path, Postgres]]:
    """DAGSTER_HOME holding deploy/dagster.yaml, its env pointing at PostgreSQL and moto's S3."""
    require_module("dagster_postgres")
    with postgres_server() as postgres:
        for name, value in {
            **postgres.env(),
            "DAGSTER_COMPUTE_LOGS_BUCKET": s3_bucket,
            "DAGSTER_COMPUTE_LOGS_PREFIX": LOGS_PREFIX,
        }.items():
            monkeypatch.setenv(name, value)
        home = tmp_path / "dagster_home"
        production_dagster_yaml(home)
        yield home, postgres


def test_partition_materialized_through_the_production_instance(
    production_instance, s3_bucket, tmp_path
):
    from dagster._core.launcher import DefaultRunLauncher
    from dagster._core.run_coordinator import QueuedRunCoordinator
    from dagster_aws.s3.compute_log_manager import S3ComputeLogManager
    from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage

    home, postgres = production_instance
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert isinstance(instance.run_storage, PostgresRunStorage)
        assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
        assert isinstance(instance.compute_log_manager, S3ComputeLogManager)
        assert isinstance(instance.run_launcher, DefaultRunLauncher)
        assert isinstance(instance.run_coordinator, QueuedRunCoordinator)
        result = defs.resolve_job_def("symbol_pipeline").execute_in_process(
            partition_key="ETH",
            instance=instance,
            run_config=small_run_config(str(tmp_path / "root")),
            raise_on_error=False,
        )
    assert result.success

    # A fresh instance from the same file: everything below comes back out of PostgreSQL.
    with dg.DagsterInstance.from_config(str(home)) as instance:
        run = instance.get_run_by_id(result.run_id)
        assert run is not None and run.status == dg.DagsterRunStatus.SUCCESS
        assert run.tags["dagster/partition"] == "ETH"
        for gate in GATE_NAMES:
            [record] = instance.event_log_storage.get_asset_check_execution_history(
                dg.AssetCheckKey(dg.AssetKey("model"), gate), limit=5
            )
            assert (record.run_id, record.partition, record.evaluation.passed) == (
                result.run_id,
                "ETH",
                True,
            )
        assert instance.get_materialized_partitions(dg.AssetKey("production_model")) == {"ETH"}
        # The `model` step ran under the pool, which took the file's default limit.
        pool = instance.event_log_storage.get_concurrency_info(TRAINING_POOL)
        assert pool.slot_count == load_deploy_config()["concurrency"]["pools"]["default_limit"]

    with closing(postgres.connect()) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT status FROM runs WHERE run_id = %s", (result.run_id,))
        assert cursor.fetchall() == [("SUCCESS",)]
        cursor.execute(
            "SELECT check_name, execution_status FROM asset_check_executions "
            "WHERE run_id = %s AND partition = 'ETH'",
            (result.run_id,),
        )
        assert dict(cursor.fetchall()) == {
            name: "SUCCEEDED" for name in (*GATE_NAMES, *FEATURES_CHECK_NAMES, PROFIT_CHECK_NAME)
        }

    # The steps' stdout/stderr went to S3 under the configured prefix, the trainer's too.
    s3 = boto3.client("s3")
    listing = s3.list_objects_v2(Bucket=s3_bucket, Prefix=f"{LOGS_PREFIX}/")
    keys = [item["Key"] for item in listing.get("Contents", []) if result.run_id in item["Key"]]
    logs = "".join(
        s3.get_object(Bucket=s3_bucket, Key=key)["Body"].read().decode(errors="replace")
        for key in keys
    )
    assert "symbol=ETH epoch=1 train_loss=" in logs, keys
