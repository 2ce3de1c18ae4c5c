"""The Dagster UI in a real browser: the asset graph and the `model` gates, as a user sees them.

One partition (ETH, small data) is materialized into a temporary DAGSTER_HOME; dagster-webserver
serves that instance on 127.0.0.1 from the repo's workspace.yaml; Debian's headless Chromium,
driven by Playwright, opens the asset group's lineage and the `model` asset's checks. The
screenshots land in test-artifacts/screenshots/ (git-ignored) for people to look at.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg
import pytest
from helpers import small_run_config
from servers import (
    SCREENSHOTS,
    Webserver,
    chromium_page,
    dagster_env,
    dagster_webserver,
    require_module,
)

from crpbot_assets.assets.metadata import GROUP
from crpbot_assets.definitions import defs
from v8_model.evaluation.gates import GATE_NAMES

if TYPE_CHECKING:
    from playwright.sync_api import Page

# Skips this module where Playwright is absent (fails under CI=true).
expect = require_module("playwright.sync_api").expect

# Every asset of the group, as the definitions have them (test_assets_definitions pins the list).
_GRAPH = defs.resolve_asset_graph()
ASSETS = sorted(
    key.to_user_string()
    for key in _GRAPH.get_all_asset_keys()
    if _GRAPH.get(key).group_name == GROUP
)
SYMBOL = "ETH"
# The UI's words for an asset check execution's status.
STATUS_WORDS = {True: "Succeeded", False: "Failed"}


@pytest.fixture(scope="module")
def materialized(tmp_path_factory) -> tuple[Path, Path, dg.ExecuteInProcessResult]:
    """A DAGSTER_HOME (default SQLite storage) holding one materialized partition."""
    base = tmp_path_factory.mktemp("ui")
    home, root = base / "dagster_home", base / "root"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    with dg.DagsterInstance.from_config(str(home)) as instance:
        result = defs.resolve_job_def("symbol_pipeline").execute_in_process(
            partition_key=SYMBOL,
            instance=instance,
            run_config=small_run_config(str(root)),
            raise_on_error=False,
        )
        report = defs.resolve_job_def("gate_report_job").execute_in_process(
            instance=instance,
            run_config={"resources": small_run_config(str(root))["resources"]},
            raise_on_error=False,
        )
    assert result.success and report.success
    return home, root, result


@pytest.fixture(scope="module")
def webserver(materialized, tmp_path_factory) -> Iterator[Webserver]:
    home, root, _ = materialized
    env = dagster_env(home, {"CRPBOT_ROOT": str(root)})
    with dagster_webserver(home, env, tmp_path_factory.mktemp("logs")) as server:
        yield server


@pytest.fixture(scope="module")
def page() -> Iterator[Page]:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with chromium_page() as browser_page:
        yield browser_page


def test_asset_graph_shows_every_asset(webserver: Webserver, page: Page):
    page.goto(f"{webserver.url}/locations/{webserver.location}/asset-groups/{GROUP}/lineage")
    # Each asset is one node (an SVG foreignObject) whose header is the asset's name.
    nodes = page.locator("foreignObject")
    for name in ASSETS:
        expect(nodes.get_by_text(name, exact=True)).to_be_visible()
    expect(nodes).to_have_count(len(ASSETS))
    model_node = nodes.filter(has=page.get_by_text("model", exact=True))
    expect(model_node).to_contain_text(f"{len(GATE_NAMES)} / {len(GATE_NAMES)} Passed")
    page.screenshot(path=SCREENSHOTS / "asset_graph.png")


def test_model_checks_page_shows_every_gate_with_its_status(
    webserver: Webserver, page: Page, materialized
):
    _, _, result = materialized
    recorded = {
        evaluation.check_name: STATUS_WORDS[evaluation.passed]
        for evaluation in result.get_asset_check_evaluations()
        if evaluation.asset_key == dg.AssetKey("model")
    }
    assert set(recorded) == set(GATE_NAMES)

    page.goto(f"{webserver.url}/assets/model?view=checks")
    expect(page.get_by_text(f"Checks ({len(GATE_NAMES)})")).to_be_visible()
    for gate, status in recorded.items():
        # In the checks list, each gate's name is followed by its latest status.
        name = page.get_by_title(gate, exact=True)
        expect(name.locator("xpath=following-sibling::span[1]")).to_have_text(status)
    # The selected gate's latest execution: blocking, on the materialized partition.
    expect(page.get_by_text("This is a blocking asset check.")).to_be_visible()
    expect(page.get_by_text("Latest execution")).to_be_visible()
    expect(page.get_by_text(SYMBOL, exact=True)).to_be_visible()
    page.screenshot(path=SCREENSHOTS / "model_checks.png")


def _open_markdown(page: Page, metadata_key: str) -> None:
    """Open a Markdown metadata entry's dialog from the asset's latest event."""
    row = page.locator("tr", has=page.get_by_text(metadata_key, exact=True))
    row.get_by_text("Show Markdown").click()


def _expect_rendered_image(page: Page) -> None:
    image = page.get_by_role("dialog").locator("img").first
    expect(image).to_be_visible()
    # Decoded, not a broken-image icon: the embedded PNG has its real width.
    assert image.evaluate("img => img.complete && img.naturalWidth") > 100


def test_model_figures_and_the_gate_report_render_in_the_ui(webserver: Webserver, page: Page):
    page.goto(f"{webserver.url}/assets/model?view=events&partition={SYMBOL}")
    _open_markdown(page, "figure_loss_curves")
    _expect_rendered_image(page)
    page.screenshot(path=SCREENSHOTS / "model_figure.png")
    page.keyboard.press("Escape")

    page.goto(f"{webserver.url}/assets/gate_report?view=events")
    _open_markdown(page, "report")
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text(SYMBOL)
    _expect_rendered_image(page)
    page.screenshot(path=SCREENSHOTS / "gate_report.png")
