"""Symbols are configuration: crpbot.toml or CRPBOT_SYMBOLS, validated, followed everywhere."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from crpbot_assets.cli import main as crpbot
from v8_model.symbols import (
    DEFAULT_SYMBOLS,
    SETTINGS_FILE,
    SYMBOLS_ENV_VAR,
    SymbolSettingsError,
    load_symbols,
)

REPO = Path(__file__).resolve().parents[1]


def settings(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "crpbot.toml"
    path.write_text(text)
    return path


def test_the_repo_settings_file_lists_the_seed_symbols():
    assert SETTINGS_FILE == REPO / "crpbot.toml"
    assert load_symbols(SETTINGS_FILE, environ={}) == ("BTC", "ETH", "SOL")


def test_the_settings_file_is_read_and_normalized(tmp_path):
    path = settings(tmp_path, 'symbols = ["btc", " DOGE ", "1INCH"]\n')
    assert load_symbols(path, environ={}) == ("BTC", "DOGE", "1INCH")


def test_the_environment_variable_wins_over_the_file(tmp_path):
    path = settings(tmp_path, 'symbols = ["BTC"]\n')
    assert load_symbols(path, environ={SYMBOLS_ENV_VAR: "BTC,ETH,SOL,DOGE"}) == (
        "BTC",
        "ETH",
        "SOL",
        "DOGE",
    )


def test_without_a_settings_file_the_seed_symbols_apply(tmp_path):
    assert load_symbols(tmp_path / "missing.toml", environ={}) == DEFAULT_SYMBOLS


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "CRPBOT_SYMBOLS lists no symbols"),
        ("  ", "CRPBOT_SYMBOLS lists no symbols"),
        ("BTC,,ETH", "CRPBOT_SYMBOLS: symbol 2 is empty"),
        ("BTC,ETH,", "CRPBOT_SYMBOLS: symbol 3 is empty"),
        ("BTC/USD", "symbol 1 'BTC/USD' is not a symbol: expected 2 to 15 letters or digits"),
        ("BTC,DOGE!", "symbol 2 'DOGE!' is not a symbol"),
        ("B", "symbol 1 'B' is not a symbol"),
        ("ABCDEFGHIJKLMNOP", "is not a symbol"),
        ("BTC,ETH,btc", "CRPBOT_SYMBOLS: BTC is listed more than once"),
    ],
)
def test_bad_environment_values_are_refused(tmp_path, value, message):
    with pytest.raises(SymbolSettingsError) as error:
        load_symbols(tmp_path / "missing.toml", environ={SYMBOLS_ENV_VAR: value})
    assert message in str(error.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("symbols = []\n", "`symbols` lists no symbols"),
        ('symbols = "BTC,ETH"\n', "`symbols` must be a list like"),
        ("symbols = [1, 2]\n", "symbol 1 is 1, not a string"),
        ('symbols = ["BTC", "ETH", "ETH"]\n', "ETH is listed more than once"),
        ('symbols = ["BTC-USD"]\n', "symbol 1 'BTC-USD' is not a symbol"),
        ('symbol = ["BTC"]\n', "has no `symbols` setting"),
        ('symbols = ["BTC"\n', "is not valid TOML"),
    ],
)
def test_bad_settings_files_are_refused_naming_the_file(tmp_path, text, message):
    path = settings(tmp_path, text)
    with pytest.raises(SymbolSettingsError) as error:
        load_symbols(path, environ={})
    assert message in str(error.value) and str(path) in str(error.value)


def _python(code: str, symbols: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env={**os.environ, SYMBOLS_ENV_VAR: symbols},
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_partitions_and_preflight_follow_the_setting():
    code = (
        "import inspect\n"
        "from crpbot_assets.partitions import symbol_partitions\n"
        "from crpbot_assets.sagemaker.preflight import run_preflight\n"
        "print(','.join(symbol_partitions.get_partition_keys()))\n"
        "print(','.join(inspect.signature(run_preflight).parameters['symbols'].default))\n"
    )
    done = _python(code, "BTC,DOGE")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["BTC,DOGE", "BTC,DOGE"]


def test_a_bad_setting_stops_every_command_with_the_reason():
    done = _python("import crpbot_assets.definitions", "BTC,DOGE/USD")
    assert done.returncode != 0
    assert "CRPBOT_SYMBOLS: symbol 2 'DOGE/USD' is not a symbol" in done.stderr


def test_an_unknown_symbol_says_how_to_add_it(capsys):
    with pytest.raises(SystemExit):
        crpbot(["predict", "DOGE"])
    err = capsys.readouterr().err
    assert "unknown symbol 'DOGE'; known: BTC, ETH, SOL" in err
    assert "add it to `symbols` in crpbot.toml or CRPBOT_SYMBOLS" in err


CONSOLE_SCRIPT = Path(sys.executable).with_name("crpbot")


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["--help"], 0),
        (["predict", "--help"], 0),
        (["predict", "BTC"], 2),
        (["rollback", "BTC"], 2),
        (["preflight"], 2),
        (["sagemaker-request", "BTC"], 2),
    ],
)
def test_a_malformed_symbols_setting_leaves_help_working_and_every_command_one_line(args, code):
    """It once printed a 12-line traceback on every command, `crpbot --help` included."""
    done = subprocess.run(
        [str(CONSOLE_SCRIPT), *args],
        env={**os.environ, SYMBOLS_ENV_VAR: "BTC,DOGE/USD"},
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == code, done.stderr
    assert "Traceback" not in done.stderr
    if code == 0:
        assert done.stdout.startswith("usage: crpbot")
        return
    last_line = done.stderr.strip().splitlines()[-1]
    assert last_line.startswith(f"crpbot {args[0]}: ")
    assert last_line.endswith(
        "CRPBOT_SYMBOLS: symbol 2 'DOGE/USD' is not a symbol: expected 2 to 15 letters or digits "
        "naming the base asset (e.g. BTC, not BTC/USD)"
    )


def test_a_malformed_symbols_setting_stops_the_main_command_with_one_line():
    """`python -m crpbot_assets.main` reads the symbols as its definitions load: a malformed
    setting must be one line naming it (exit 2), not a traceback."""
    done = subprocess.run(
        [sys.executable, "-m", "crpbot_assets.main"],
        cwd=REPO,
        env={**os.environ, SYMBOLS_ENV_VAR: "BTC,DOGE/USD"},
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        "python -m crpbot_assets.main: CRPBOT_SYMBOLS: symbol 2 'DOGE/USD' is not a symbol: "
        "expected 2 to 15 letters or digits naming the base asset (e.g. BTC, not BTC/USD)"
    ]
