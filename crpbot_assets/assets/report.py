"""The gate report asset: every symbol's gates, test metrics and figures in one report."""

import dagster as dg

from crpbot_assets.assets.metadata import GROUP
from crpbot_assets.assets.model import model
from crpbot_assets.automation import GATE_REPORT_CONDITION
from crpbot_assets.partitions import symbol_partitions
from crpbot_assets.report import (
    FIGURES_FOLDER,
    write_report,
)
from crpbot_assets.storage import (
    REPORT_JSON_KEY,
    REPORT_LINKED_MARKDOWN_KEY,
    REPORT_MARKDOWN_KEY,
    StorageResource,
)
from crpbot_assets.trainers import utc_now


@dg.asset(
    deps=[model],
    group_name=GROUP,
    kinds={"markdown"},
    automation_condition=GATE_REPORT_CONDITION,
    description="All symbols' gates, test metrics and figures: reports/gate_report.md "
    "(images embedded), gate_report_linked.md (images in reports/figures/) and .json",
)
def gate_report(
    context: dg.AssetExecutionContext, storage: StorageResource
) -> dg.MaterializeResult:
    symbols = symbol_partitions.get_partition_keys()
    written = write_report(storage.store, symbols, generated_at=utc_now())
    report = written.report
    context.log.info(f"gate report: {storage.store.uri(REPORT_MARKDOWN_KEY)}")
    return dg.MaterializeResult(
        metadata={
            "report": dg.MetadataValue.md(written.markdown),
            "markdown_uri": storage.store.uri(REPORT_MARKDOWN_KEY),
            "linked_markdown_uri": storage.store.uri(REPORT_LINKED_MARKDOWN_KEY),
            "figures_uri": storage.store.uri(f"reports/{FIGURES_FOLDER}"),
            "figure_files": len(written.figure_keys),
            "json_uri": storage.store.uri(REPORT_JSON_KEY),
            "symbols_trained": report["trained"],
            "symbols_passed": report["passed"],
            "total_cost_usd": report["total_cost_usd"],
        }
    )
