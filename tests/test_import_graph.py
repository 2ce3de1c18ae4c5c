"""bench/import_graph.py: the rooms' arrows run one way, and a loop between rooms is caught."""

import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("import_graph", REPO / "bench" / "import_graph.py")
import_graph = importlib.util.module_from_spec(spec)
spec.loader.exec_module(import_graph)


def test_the_project_has_no_module_cycle_and_one_way_rooms() -> None:
    modules = import_graph.module_files()
    assert "v8_model.data.features" in modules and "crpbot_assets.assets.data" in modules
    assert import_graph.cycles(import_graph.import_graph(modules)) == []
    arrows = import_graph.room_arrows(import_graph.import_graph(modules, load_time_only=False))
    assert ("crpbot_assets", "v8_model.data") in arrows
    assert import_graph.room_problems(arrows) == []


def test_rooms_that_import_each_other_are_named() -> None:
    assert import_graph.room_of("v8_model.data.features") == "v8_model.data"
    assert import_graph.room_of("v8_model.config") == "v8_model"
    assert import_graph.room_of("crpbot_assets.assets.model") == "crpbot_assets"
    graph = {
        "v8_model.data.candles": {"v8_model.model.net"},
        "v8_model.model.net": {"v8_model.data.candles", "crpbot_assets.cli"},
        "v8_model.config": {"v8_model.job.train"},
        "crpbot_assets.cli": set(),
        "v8_model.job.train": set(),
    }
    problems = import_graph.room_problems(import_graph.room_arrows(graph))
    assert "rooms import each other: v8_model.data <-> v8_model.model" in problems
    assert "the foundations import a room: v8_model -> v8_model.job" in problems
    assert "the library imports the Dagster side: v8_model.model -> crpbot_assets" in problems
