"""Red-team cases end to end against a real Dagster instance: each gives a clear error and
leaves `production/` (and the stored candles) byte-identical.

One module-wide root holds a promoted ETH model trained on small synthetic data (the same small
profile as tests/test_assets.py). Every case then feeds one bad input or fault to the real graph
or the real commands and compares the trees before and after.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
from helpers import gone_within, processes_working_in, small_run_config, tree_digest

from crpbot_assets import main as main_command
from crpbot_assets.cli import main as crpbot
from crpbot_assets.definitions import SYMBOL_ASSETS, defs
from crpbot_assets.profiles import ProfileResource
from crpbot_assets.resources import ExchangeResource
from crpbot_assets.storage import StorageResource, candles_key
from crpbot_assets.trainers import WORK_BASE, ModelTrainer
from crpbot_assets.writers import PID_TAG
from v8_model.storage import open_store

SYMBOL = "ETH"  # trains to passing gates on the small profile (see tests/test_assets.py)
REPO = Path(__file__).resolve().parents[1]
PROCESS_TIMEOUT = 300


@pytest.fixture(scope="module")
def promoted(tmp_path_factory):
    """A root with ETH promoted, and the instance that recorded it."""
    base = tmp_path_factory.mktemp("faults")
    (base / "home").mkdir()
    root = base / "root"
    with dg.instance_for_test(temp_dir=str(base / "home")) as instance:
        result = defs.resolve_job_def("symbol_pipeline").execute_in_process(
            partition_key=SYMBOL, instance=instance, run_config=small_run_config(str(root))
        )
        assert result.success
        yield {"root": root, "instance": instance, "base": base}


@pytest.fixture
def unchanged(promoted):
    """Asserts, after the test, that production/ and the stored candles did not change."""
    root = promoted["root"]
    before = tree_digest(root / "production")
    candles_before = (root / candles_key(SYMBOL)).read_bytes()
    yield root
    assert tree_digest(root / "production") == before
    assert (root / candles_key(SYMBOL)).read_bytes() == candles_before


def stored_candles(root: Path) -> pd.DataFrame:
    return pd.read_parquet(root / candles_key(SYMBOL))


def run_with_candles_file(promoted, path: str) -> dg.ExecuteInProcessResult:
    config = small_run_config(str(promoted["root"]))
    config["ops"]["candles"]["config"] = {"source": "parquet", "path": path}
    return defs.resolve_job_def("symbol_pipeline").execute_in_process(
        partition_key=SYMBOL, instance=promoted["instance"], run_config=config, raise_on_error=False
    )


def first_failure(result: dg.ExecuteInProcessResult) -> tuple[str, str]:
    """(step, the cause as the main command shows it) of the run's first failed step."""
    [event, *_] = result.get_step_failure_events()
    return event.step_key, main_command.failure_summary(result)


def _constant(column: str, value: float):
    def damage(frame: pd.DataFrame) -> pd.DataFrame:
        columns = ["open", "high", "low", "close"] if column == "price" else [column]
        return frame.assign(**dict.fromkeys(columns, value))

    return damage


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (_constant("volume", 0.0), "rule 'volume varies' is broken: all"),
        (_constant("volume", 7.5), "volume=7.5"),
        (_constant("price", 100.0), "rule 'close varies' is broken"),
        (
            lambda frame: frame.iloc[:300],
            "300 rows, the demo profile needs 9,072 (7 days of 1-minute candles, 90% complete)",
        ),
    ],
    ids=["all_zero_volume", "constant_volume", "constant_price", "sample_300_rows"],
)
def test_bad_candles_are_refused_before_anything_is_stored(
    promoted, unchanged, tmp_path, damage, message
):
    bad = tmp_path / "bad.parquet"
    damage(stored_candles(unchanged)).to_parquet(bad, index=False)
    result = run_with_candles_file(promoted, str(bad))
    assert not result.success
    step, cause = first_failure(result)
    assert step == "candles"
    assert message in cause and str(bad) in cause


def test_an_unknown_path_placeholder_names_the_setting(promoted, unchanged, tmp_path):
    result = run_with_candles_file(promoted, str(tmp_path / "{foo}.parquet"))
    step, cause = first_failure(result)
    assert step == "candles"
    assert "candles config path=" in cause and "only the placeholder '{symbol}'" in cause


def test_the_failure_line_shows_the_cause_not_dagsters_wrapper(promoted, unchanged, tmp_path):
    result = run_with_candles_file(promoted, str(tmp_path / "missing.parquet"))
    _, cause = first_failure(result)
    assert "missing.parquet: no such object" in cause
    assert "Error occurred while executing" not in cause


class BlockingTrainer(ModelTrainer):
    """Holds its run inside the `model` step until the test releases it, then fails it."""

    @property
    def kind(self) -> str:
        return "blocking"

    def train(self, context, *, symbol, storage, hyperparameters):
        BLOCKED.set()
        assert RELEASE.wait(timeout=PROCESS_TIMEOUT)
        raise dg.Failure(description="released by the test")


BLOCKED, RELEASE = threading.Event(), threading.Event()


def test_a_second_run_of_a_symbol_refuses_while_the_first_writes(promoted, unchanged):
    root, instance = promoted["root"], promoted["instance"]
    resources = {
        "storage": StorageResource(root=str(root)),
        "profile": ProfileResource(name="demo", days=50, min_coverage_days=7, seed=5),
        "trainer": BlockingTrainer(),
        "exchanges": ExchangeResource(),
    }
    first: dict[str, dg.ExecuteInProcessResult] = {}

    def first_run() -> None:
        first["result"] = dg.materialize(
            SYMBOL_ASSETS,
            selection=["model", "production_model"],
            partition_key=SYMBOL,
            instance=instance,
            resources=resources,
            raise_on_error=False,
        )

    BLOCKED.clear()
    RELEASE.clear()
    thread = threading.Thread(target=first_run, daemon=True)
    thread.start()
    try:
        assert BLOCKED.wait(timeout=PROCESS_TIMEOUT), "the first run never reached its trainer"
        second = run_with_candles_file(promoted, str(root / candles_key(SYMBOL)))
    finally:
        RELEASE.set()
        thread.join(timeout=PROCESS_TIMEOUT)
    assert not second.success
    step, cause = first_failure(second)
    assert step == "candles"
    first_run_id = first["result"].run_id
    assert f"another run ({first_run_id}" in cause and "started first" in cause
    assert not first["result"].success  # released with a failure: nothing promoted either way


@pytest.fixture
def copied_root(promoted, tmp_path):
    """A copy of the promoted root for the main command, whose candles step rewrites candles;
    asserts afterwards that its production/ did not change."""
    root = tmp_path / "root"
    shutil.copytree(promoted["root"], root)
    before = tree_digest(root / "production")
    yield root
    assert tree_digest(root / "production") == before


def _private_tmp(root: Path) -> Path:
    """The test's own temporary folder: the trainers' work folders of tests running beside this
    one (other xdist workers) stay out of it, and their start cannot clean up this test's orphan.
    """
    folder = root.parent / "tmp"
    folder.mkdir(exist_ok=True)
    return folder


def _main_command(promoted, root: Path, *symbols: str) -> subprocess.Popen:
    env = {
        **os.environ,
        "DAGSTER_HOME": str(promoted["base"] / "main_home"),
        "CRPBOT_ROOT": str(root),
        "CRPBOT_PROFILE": "demo",
        "TMPDIR": str(_private_tmp(root)),
    }
    return subprocess.Popen(
        # One symbol at a time: the signal test checks that no next symbol starts.
        [sys.executable, "-m", "crpbot_assets.main", "--symbols", ",".join(symbols), "--jobs", "1"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        # A process group of its own, as a shell's job: a signal may go to the whole group.
        start_new_session=True,
    )


def _wait_for_trainer(process: subprocess.Popen, root: Path) -> list[int]:
    """The processes of the training the main command started (bounded wait): those working in
    its emulated container folder. Fresh, that is the entry point; through a warm trainer server
    (`crpbot_assets.warm_trainer`), the request process and the training forked for it."""
    deadline = time.monotonic() + PROCESS_TIMEOUT
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stdout.read()
        trainers = processes_working_in(_trainer_folders(root))
        if trainers:
            return trainers
        time.sleep(0.2)
    raise TimeoutError("the main command started no trainer")


def _all_gone_within(pids: list[int], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    return all(gone_within(pid, max(0.0, deadline - time.monotonic())) for pid in pids)


def _trainer_folders(root: Path) -> set[Path]:
    """The local trainer's work folders of the main commands started on `root`."""
    work_base = _private_tmp(root) / WORK_BASE.name
    return set(work_base.glob("*")) if work_base.is_dir() else set()


@pytest.mark.parametrize("to_group", [False, True], ids=["to_the_command", "to_its_group"])
def test_sigterm_stops_the_main_command_and_no_further_symbol_runs(promoted, copied_root, to_group):
    """SIGTERM to the main command, or to its whole process group (a supervisor's stop), which
    reaches the symbols' fork server too: the symbol's run stops the same way."""
    process = _main_command(promoted, copied_root, "ETH", "BTC")
    trainers = _wait_for_trainer(process, copied_root)
    if to_group:
        os.killpg(process.pid, signal.SIGTERM)
    else:
        process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=PROCESS_TIMEOUT)
    assert process.returncode == 128 + signal.SIGTERM, output
    assert "stopped by SIGTERM" in output and "not run: BTC" in output
    assert "BTC started" not in output
    assert _all_gone_within(trainers, 30)
    with dg.DagsterInstance.from_config(str(promoted["base"] / "main_home")) as instance:
        [eth] = instance.get_run_records(  # the newest first
            filters=dg.RunsFilter(tags={"dagster/partition": "ETH"}), limit=1
        )
    # The run was stopped, not left in progress as by a kill.
    assert eth.dagster_run.status in (dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED)


def test_kill_9_leaves_no_orphan_and_the_next_start_cleans_up(promoted, copied_root):
    process = _main_command(promoted, copied_root, "ETH")
    trainers = _wait_for_trainer(process, copied_root)
    [work_folder] = _trainer_folders(copied_root)
    process.kill()
    process.wait(timeout=PROCESS_TIMEOUT)
    assert _all_gone_within(trainers, 60), "the training outlived the main command"

    home = promoted["base"] / "main_home"
    with dg.DagsterInstance.from_config(str(home)) as instance:
        [stuck] = instance.get_run_records(
            filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED])
        )
        # The run's process (the main command's process for ETH) died with the main command.
        assert stuck.dagster_run.tags["dagster/partition"] == "ETH"
        assert gone_within(int(stuck.dagster_run.tags[PID_TAG]), 60)
    # The next start marks the dead run failed; its first training removes the folder.
    again = _main_command(promoted, copied_root, "ETH")
    _wait_for_trainer(again, copied_root)
    again.send_signal(signal.SIGTERM)
    output, _ = again.communicate(timeout=PROCESS_TIMEOUT)
    assert f"run {stuck.dagster_run.run_id} was left in progress" in output
    assert f"removed {work_folder}" in output
    assert not work_folder.exists()


def test_repeated_symbols_and_an_unknown_profile_are_usage_errors(monkeypatch, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main_command.main(["--symbols", "BTC,btc"])
    assert exit_info.value.code == 2
    assert "--symbols lists BTC more than once" in capsys.readouterr().err
    monkeypatch.setenv("CRPBOT_PROFILE", "fast")
    with pytest.raises(SystemExit):
        main_command.main(["--symbols", "BTC"])
    assert "unknown profile 'fast'; choose one of demo, full" in capsys.readouterr().err


def test_predict_explains_unreadable_candles_and_refuses_last_0(
    promoted, unchanged, tmp_path, capsys, monkeypatch
):
    garbage = tmp_path / "candles.parquet"
    garbage.write_bytes(b"PAR1 this is not parquet")
    root = str(unchanged)
    assert crpbot(["predict", SYMBOL, "--root", root, "--candles", str(garbage)]) == 1
    err = capsys.readouterr().err
    assert f"cannot read {garbage}" in err and "Traceback" not in err

    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens on port 9
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-2")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    assert crpbot(["predict", SYMBOL, "--root", "s3://unreachable-bucket/crpbot"]) == 1
    err = capsys.readouterr().err
    assert "cannot read the stored candles of ETH under s3://unreachable-bucket" in err

    with pytest.raises(SystemExit):
        crpbot(["predict", SYMBOL, "--root", root, "--last", "0"])
    assert "expected a whole number of rows >= 1, got '0'" in capsys.readouterr().err


def test_artifacts_follow_the_umask_so_a_serving_user_can_read_them(promoted):
    umask = os.umask(0o022)
    os.umask(umask)
    serving = open_store(promoted["root"]).list_keys("production")
    modes = {oct((promoted["root"] / key).stat().st_mode & 0o777) for key in serving}
    assert modes == {oct(0o666 & ~umask)}


@pytest.mark.parametrize("value", ["", "  "])
def test_empty_symbols_are_refused_not_read_as_every_symbol(value, capsys):
    """`--symbols "$UNSET"` once trained every symbol."""
    with pytest.raises(SystemExit) as exit_info:
        main_command.main(["--symbols", value])
    assert exit_info.value.code == 2
    assert "--symbols is empty; name at least one of BTC, ETH, SOL" in capsys.readouterr().err


@contextlib.contextmanager
def read_only_folder(path: Path):
    """`path` made unwritable for this user: immutable for root (who ignores modes), 0555 else."""
    path.mkdir(parents=True, exist_ok=True)
    as_root = os.geteuid() == 0
    if as_root:
        subprocess.run(["chattr", "+i", str(path)], check=True, timeout=30)
    else:
        path.chmod(0o555)
    try:
        yield path
    finally:
        if as_root:
            subprocess.run(["chattr", "-i", str(path)], check=True, timeout=30)
        else:
            path.chmod(0o755)


def test_a_read_only_dagster_home_is_one_line_naming_it(tmp_path, monkeypatch, capsys):
    """It was a 46-line traceback from deep inside Dagster's sqlite storage."""
    with read_only_folder(tmp_path / "home") as home:
        monkeypatch.setenv("DAGSTER_HOME", str(home))
        assert main_command.main(["--symbols", "BTC"]) == 2
        assert list(home.iterdir()) == []
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith(f"python -m crpbot_assets.main: DAGSTER_HOME={home} is not writable (")
    assert "Fix: point DAGSTER_HOME at a folder this user may write" in err


GATE_REPORT_DRIVER = """
import os, signal
import dagster as dg
import crpbot_assets.assets.report as gate_report_asset
from crpbot_assets import main as command

write_report = gate_report_asset.write_report

def write_report_under_sigterm(*args, **kwargs):
    # A supervisor's stop while the gate report's step runs: sent from inside the step, so that
    # it never misses a run that a fast machine finishes between two polls.
    os.kill(os.getpid(), signal.SIGTERM)
    return write_report(*args, **kwargs)

gate_report_asset.write_report = write_report_under_sigterm
with dg.DagsterInstance.get() as instance, command.SignalWatch() as watch:
    try:
        command.run_all([], "demo", instance, watch)
    except command.Interrupted as stop:
        print("interrupted", stop.signal_number, stop.outcomes, flush=True)
        raise SystemExit(128 + stop.signal_number)
print("finished", flush=True)
"""


def test_sigterm_during_the_gate_report_stops_with_143(tmp_path):
    """The gate report runs in the main command's own process, where Dagster turned SIGTERM into
    a failed run: the command went on and exited 1. It now stops as during a symbol's run."""
    home = tmp_path / "home"
    home.mkdir()
    env = {**os.environ, "DAGSTER_HOME": str(home), "CRPBOT_ROOT": str(tmp_path / "root")}
    driver = subprocess.run(
        [sys.executable, "-c", GATE_REPORT_DRIVER],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=PROCESS_TIMEOUT,
    )
    output = driver.stdout
    assert driver.returncode == 128 + signal.SIGTERM, output
    assert f"interrupted {int(signal.SIGTERM)} {{'gate_report': 'interrupted'}}" in output
    with dg.DagsterInstance.from_config(str(home)) as instance:
        [run] = instance.get_run_records(filters=dg.RunsFilter(job_name="gate_report_job"))
    assert run.dagster_run.status in (dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED)


def test_predict_says_a_missing_candles_file_does_not_exist(tmp_path, capsys):
    missing = tmp_path / "nonexistent.parquet"
    assert crpbot(["predict", SYMBOL, "--root", str(tmp_path), "--candles", str(missing)]) == 1
    err = capsys.readouterr().err
    assert err == (
        f"crpbot predict: --candles {missing} does not exist (or is not a file); pass a parquet "
        "file of 1-minute candles (timestamp, open, high, low, close, volume), or leave "
        f"--candles out to use the stored candles of {SYMBOL}\n"
    )
