"""What more than one test module uses: small run configs, readers of results, shared patterns.

A test module imports from here (never from another test module), so moving or deleting one test
file never breaks another.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from functools import cache
from pathlib import Path

import dagster as dg
import fake_exchange as fx
import pandas as pd

from crpbot_assets.assets import candles
from crpbot_assets.profiles import ProfileResource
from crpbot_assets.resources import ExchangeResource
from crpbot_assets.storage import StorageResource
from v8_model.evaluation.gates import GATE_NAMES
from v8_model.layout import features_filename

# The graph's small end-to-end run (tests/test_assets.py explains the 50 days and the one epoch).
SMALL_PROFILE = {
    "name": "demo",
    "days": 50,
    "epochs": 1,
    "batch_size": 1024,
    "seed": 5,
    "min_coverage_days": 7,
}
# ETH must pass every gate, directional skill included, after one epoch on 50 days: a planted
# signal far stronger than the demo's realistic one (0.3: rank IC about 0.5), set here so the
# scenarios do not depend on the demo's calibration (bench/power.py measures that).
STRONG_SIGNAL = 0.3

# The main command's summary table: its header, and the gates column when every gate passed.
ALL_GATES = f"{len(GATE_NAMES)}/{len(GATE_NAMES)}"
TABLE_HEADER = re.compile(r"symbol\s+run\s+gates\s+promoted\s+test acc\s+baseline\s+train\s+ran on")


def small_run_config(
    root: str | Path, hyperparameters: dict[str, str] | None = None, **profile: object
) -> dict:
    """Run config for the small run on the strong market; `profile` overrides SMALL_PROFILE."""
    return {
        "resources": {
            "storage": {"config": {"root": str(root)}},
            "profile": {"config": {**SMALL_PROFILE, **profile}},
        },
        "ops": {
            "candles": {"config": {"volatility_clustering": False, "signal": STRONG_SIGNAL}},
            "model": {"config": {"hyperparameters": hyperparameters or {}}},
        },
    }


def tracked_run_config(root: str | Path) -> dict:
    """The MLflow tests' run (they need promotions to register): two folds and two epochs, so the
    fold metrics and the step histories have more than one entry."""
    return small_run_config(root, epochs=2, folds=2, patience=5)


def metadata_of(result: dg.ExecuteInProcessResult, asset: str) -> dict:
    """The metadata values of `asset`'s one materialization in `result`."""
    [event] = [
        event.materialization
        for event in result.get_asset_materialization_events()
        if event.materialization.asset_key == dg.AssetKey(asset)
    ]
    return {key: getattr(value, "value", value) for key, value in event.metadata.items()}


def tree_digest(folder: Path) -> dict[str, str]:
    """sha256 of every file under `folder`, by relative path: equal digests, unchanged tree."""
    return {
        path.relative_to(folder).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


# The exchange source's seam: a fake exchange (tests/fake_exchange.py) whose market ends two hours
# before the tests start, so "now" always lies past its last candle.
MARKET_MINUTES = 3_000
MARKET_START = pd.Timestamp.now(tz="UTC").floor("min") - pd.Timedelta(minutes=MARKET_MINUTES + 120)


@cache
def fake_market(start: str) -> pd.DataFrame:
    return fx.market(MARKET_MINUTES, start=start)


class FakeExchangeResource(ExchangeResource):
    """A fake exchange that has published the first `published` minutes of the market."""

    published: int = MARKET_MINUTES
    gap: list[int] = []  # [first, count]: minutes the exchange never answers

    def build(self, name: str) -> fx.FakeExchange:
        frame = fake_market(MARKET_START.isoformat()).iloc[: self.published]
        if self.gap:
            first, count = self.gap
            frame = frame.drop(index=range(first, first + count)).reset_index(drop=True)
        return fx.FakeExchange(frame)  # serves BTC/USD


def exchange_config(**overrides) -> dict:
    config = {"source": "exchange", "start": MARKET_START.isoformat(), **overrides}
    return {"ops": {"candles": {"config": config}}}


def materialize_candles(
    root, instance, exchanges: ExchangeResource, run_config: dict
) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [candles],
        partition_key="BTC",
        instance=instance,
        resources={
            "storage": StorageResource(root=str(root)),
            # Short test histories: the profile's minimum (30 days in demo) is not under test here.
            "profile": ProfileResource(min_coverage_days=1),
            "exchanges": exchanges,
        },
        run_config=run_config,
        raise_on_error=False,
    )


def training_container(
    root: Path, datasets: dict[str, pd.DataFrame], hyperparameters: dict
) -> dict:
    """An /opt/ml-like tree under `root` with `datasets` (symbol → features dataset) in the
    training channel; returns the SM_* environment that points into it (this process's
    environment without its SM_* and Dagster variables)."""
    config = root / "input" / "config"
    training = root / "input" / "data" / "training"
    for folder in (config, training, root / "model", root / "output"):
        folder.mkdir(parents=True)
    for symbol, dataset in datasets.items():
        dataset.to_parquet(training / features_filename(symbol))
    (config / "hyperparameters.json").write_text(json.dumps(hyperparameters))
    env = {
        key: value for key, value in os.environ.items() if not key.startswith(("SM_", "DAGSTER"))
    }
    env.update(
        SM_INPUT_CONFIG_DIR=str(config),
        SM_CHANNEL_TRAINING=str(training),
        SM_CHANNELS='["training"]',
        SM_MODEL_DIR=str(root / "model"),
        SM_OUTPUT_DIR=str(root / "output"),
        SM_OUTPUT_DATA_DIR=str(root / "output" / "data"),
        SM_HPS=json.dumps(hyperparameters),
        SM_NUM_GPUS="0",
        TRAINING_JOB_NAME="crpbot-test",
    )
    return env


def processes_working_in(folders: set[Path] | list[Path]) -> list[int]:
    """The pids of the processes whose working folder is one of `folders` (e.g. a trainer's
    emulated container: the entry point, or a warm trainer's request process and training)."""
    wanted, found = set(folders), []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            folder = Path(os.readlink(entry / "cwd"))
        except (FileNotFoundError, ProcessLookupError, PermissionError):  # ended, or not ours
            continue
        if folder in wanted:
            found.append(int(entry.name))
    return found


def gone_within(pid: int, seconds: float) -> bool:
    """Whether process `pid` has ended (and been reaped) within `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False
