"""Seconds to set up the test venv: the way `make setup` did until the sixth session (pip installs
requirements/dev.lock, then `compileall` writes the bytecode of the whole venv) against the way it
does now (uv installs the same lock with a cold cache of its own; no bytecode until a process
imports a module). Both in fresh venvs in one run, torch from its pin by pip first as the Makefile
does; the ratio is what to compare (the machine is shared). What the new way moves to the first
test processes, the bytecode of what they import, is timed too: one import of the suite's main
modules with and without its .pyc.
Usage: python bench/setup.py     (run from the repository root with `make setup` done: takes ~2 min)
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LOCK = REPO / "requirements" / "dev.lock"
UV = REPO / ".venv" / "bin" / "uv"
# What the suite's processes import most (tests/conftest.py, the definitions, a training).
SUITE_IMPORTS = (
    "import boto3, dagster, pytest, pandas, torch, mlflow, sklearn, matplotlib.pyplot, moto.server;"
    "import crpbot_assets.definitions, crpbot_assets.cli, v8_model.model.pipeline"
)
PRINT_PURELIB = "import sysconfig; print(sysconfig.get_path('purelib'))"
NO_BYTECODE = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def run(command: list[str], env: dict[str, str] | None = None) -> str:
    """The command's output; its errors in full if it fails (pip's warnings about this machine's
    local indexes are not printed otherwise)."""
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)} exited {done.returncode}:\n{done.stderr}")
    return done.stdout


def timed(command: list[str], env: dict[str, str] | None = None) -> tuple[float, float]:
    """Wall and CPU seconds (the command's and its children's) of one command."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.monotonic()
    run(command, env)
    wall = time.monotonic() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def new_venv(folder: Path) -> Path:
    run([sys.executable, "-m", "venv", str(folder)])
    python = folder / "bin" / "python"
    pip = [str(python), "-m", "pip", "install", "--quiet", "--no-compile"]
    run([*pip, "pip==26.3"])
    run([*pip, "torch==2.13.0"])
    return python


def the_old_way(folder: Path) -> dict[str, tuple[float, float]]:
    python = new_venv(folder)
    purelib = run([str(python), "-c", PRINT_PURELIB]).strip()
    pip = [str(python), "-m", "pip", "install", "--quiet", "--no-compile", "--require-hashes"]
    # compileall exits 1 on the one torch file written for a newer Python, as the Makefile allowed.
    compile_all = ["sh", "-c", f"'{python}' -m compileall -q -j 0 '{purelib}' >/dev/null || true"]
    return {
        "pip installs dev.lock": timed([*pip, "-r", str(LOCK)]),
        "compileall of the venv": timed(compile_all),
    }


def the_new_way(folder: Path) -> dict[str, tuple[float, float]]:
    python = new_venv(folder)
    cold_cache = {**os.environ, "UV_CACHE_DIR": str(folder / "uv-cache")}
    install = [str(UV), "pip", "install", "--quiet", "--python", str(python), "--require-hashes"]
    return {"uv installs dev.lock": timed([*install, "-r", str(LOCK)], env=cold_cache)}


def first_imports(python: Path) -> tuple[float, float]:
    """CPU s of the suite's main imports: the first time (writing their .pyc), then with it."""
    imports = [str(python), "-c", f"import sys; sys.path.insert(0, {str(REPO)!r}); {SUITE_IMPORTS}"]
    return timed(imports, env=NO_BYTECODE)[1], timed(imports, env=NO_BYTECODE)[1]


def main() -> None:
    if not UV.exists():
        sys.exit(f"{UV} is missing: run `make setup` first")
    with tempfile.TemporaryDirectory(prefix="bench-setup-") as root:
        old = the_old_way(Path(root) / "old")
        new = the_new_way(Path(root) / "new")
        first, again = first_imports(Path(root) / "new" / "bin" / "python")
    print("set-up steps that differ (torch, pip and the venv itself are the same both ways):")
    for name, (wall, cpu) in {**old, **new}.items():
        print(f"  {name:<26} {wall:6.1f} s wall {cpu:6.1f} CPU s")
    old_wall, new_wall = sum(w for w, _ in old.values()), sum(w for w, _ in new.values())
    print(f"  ratio (wall)               {old_wall / new_wall:6.1f}x")
    print("moved to the first test processes, the suite's main imports in the new venv:")
    print(f"  first import (writes .pyc) {first:6.1f} CPU s")
    print(f"  with its .pyc              {again:6.1f} CPU s")


if __name__ == "__main__":
    main()
