"""The set-up is reproducible: the lock files, the training job's pins and this environment agree.

A new release on the registry cannot reach a fresh clone (`make setup` installs the locks with
their hashes); when something does drift, this file fails once, naming the package.
"""

from __future__ import annotations

import importlib.util
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[1]


def _load_pins_module():
    spec = importlib.util.spec_from_file_location("lock_pins", REPO / "requirements" / "pins.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


pins = _load_pins_module()


def _installed_versions() -> dict[str, str]:
    import importlib.metadata

    return {
        pins.canonical(dist.metadata["Name"]): dist.version
        for dist in importlib.metadata.distributions()
    }


def test_every_locked_package_is_installed_at_its_locked_version() -> None:
    installed = _installed_versions()
    drift = {
        name: (locked, installed.get(name))
        for name, locked in pins.read_lock(pins.DEV_LOCK).items()
        if installed.get(name) != locked
    }
    assert not drift, (
        f"installed differs from requirements/dev.lock (package: (locked, installed)): {drift}; "
        "run `make setup` (or `make lock` if pyproject.toml changed)"
    )


def test_job_requirements_are_the_locked_versions_of_job_in() -> None:
    from v8_model.job.requirements import read_requirements

    lock = pins.read_lock(pins.DEV_LOCK)
    job = {pins.canonical(name): version for name, version in read_requirements().items()}
    assert set(job) == {pins.canonical(name) for name in pins.read_names()}
    differ = {name: (version, lock.get(name)) for name, version in job.items()}
    differ = {name: pair for name, pair in differ.items() if pair[0] != pair[1]}
    assert not differ, (
        f"v8_model/job/requirements.txt vs dev.lock (job, lock): {differ}; run `make lock`"
    )
    assert pins.JOB_REQUIREMENTS.read_text() == pins.job_requirements_text(lock, pins.read_names())


@pytest.mark.parametrize("name", ["demo.lock", "mlflow-ui.lock"])
def test_every_lock_agrees_with_dev_lock_and_leaves_torch_to_its_exact_pin(name: str) -> None:
    dev, other = pins.read_lock(pins.DEV_LOCK), pins.read_lock(pins.HERE / name)
    assert set(other) <= set(dev)
    assert {package: version for package, version in other.items() if dev[package] != version} == {}
    assert "torch" not in dev and "torch" not in other
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    (torch,) = [Requirement(text) for text in declared if Requirement(text).name == "torch"]
    assert str(torch.specifier).startswith("=="), "torch must stay an exact pin (CUDA builds)"


def test_locked_versions_satisfy_every_range_in_pyproject() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    declared = project["dependencies"] + [
        text for extra in project["optional-dependencies"].values() for text in extra
    ]
    lock = pins.read_lock(pins.DEV_LOCK)
    for requirement in map(Requirement, declared):
        name = pins.canonical(requirement.name)
        if name in pins.UNLOCKED:
            continue
        assert name in lock, f"{requirement} is declared in pyproject.toml but not locked"
        assert requirement.specifier.contains(lock[name], prereleases=True), (
            requirement,
            lock[name],
        )


def test_drop_unlocked_removes_only_torchs_block(tmp_path: Path) -> None:
    lock = tmp_path / "x.lock"
    lock.write_text(
        "filelock==3.0 \\\n    --hash=sha256:aa\n    # via\n    #   torch\n"
        "torch==2.13.0+cpu \\\n    --hash=sha256:bb\n    # via crpbot-v8 (pyproject.toml)\n"
        "tqdm==4.0 \\\n    --hash=sha256:cc\n"
    )
    pins.drop_unlocked(lock)
    assert pins.read_lock(lock) == {"filelock": "3.0", "tqdm": "4.0"}
    assert "sha256:bb" not in lock.read_text() and "#   torch" in lock.read_text()


def test_a_job_package_missing_from_the_lock_is_named() -> None:
    with pytest.raises(SystemExit, match="polars"):
        pins.job_requirements_text({"numpy": "2.0"}, ["numpy", "polars"])
