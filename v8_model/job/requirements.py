"""What the training job needs from its Python environment, and the check made at its start.

Standard library only: the SageMaker bootstrap imports this module before anything is installed.
`requirements.txt` beside it lists the third-party packages (pinned); torch comes with the
training image and must be at least MIN_TORCH_VERSION.
"""

from __future__ import annotations

import importlib.metadata
import re
from pathlib import Path

REQUIREMENTS_FILE = Path(__file__).with_name("requirements.txt")
# The oldest PyTorch the entry point is supported on; the default training image (the
# `framework_version` setting) must satisfy it.
MIN_TORCH_VERSION = "2.8.0"
_PIN = re.compile(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([A-Za-z0-9.+!-]+)")


class JobEnvironmentError(RuntimeError):
    """The job's Python environment lacks a package, or has one too old; the message names it."""


def version_tuple(version: str) -> tuple[int, ...]:
    """'2.8.0' → (2, 8, 0); local and pre-release suffixes ('+cu126', 'rc1') are ignored."""
    numbers = []
    for part in version.split("+")[0].split("."):
        digits = re.match(r"\d+", part)
        if digits is None:
            break
        numbers.append(int(digits.group()))
    return tuple(numbers)


def read_requirements(path: Path = REQUIREMENTS_FILE) -> dict[str, str]:
    """Distribution name → pinned version; refuses a line that is not `name==version`."""
    pins = {}
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        match = _PIN.fullmatch(line)
        if match is None:
            raise JobEnvironmentError(f"{path}:{number}: {line!r} is not a `name==version` pin")
        pins[match.group(1)] = match.group(2)
    return pins


def installed_version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def unmet_requirements(pins: dict[str, str]) -> list[str]:
    """`name==version` of each pin not installed at exactly that version."""
    return [f"{name}=={want}" for name, want in pins.items() if installed_version(name) != want]


def check_torch(version: str | None) -> None:
    """Refuse a missing torch, or one older than MIN_TORCH_VERSION, naming the setting to change."""
    if version is None:
        raise JobEnvironmentError(
            "torch is not installed: the training image must provide PyTorch "
            f">= {MIN_TORCH_VERSION} (setting framework_version / image_uri)"
        )
    if version_tuple(version) < version_tuple(MIN_TORCH_VERSION):
        raise JobEnvironmentError(
            f"torch {version} is older than the supported minimum {MIN_TORCH_VERSION}: use a "
            f"training image with PyTorch >= {MIN_TORCH_VERSION} (setting framework_version, env "
            "CRPBOT_SAGEMAKER_FRAMEWORK_VERSION)"
        )


def check_job_environment(path: Path = REQUIREMENTS_FILE) -> None:
    """The check at the job's start: every pinned package present, torch new enough."""
    missing = [name for name in read_requirements(path) if installed_version(name) is None]
    if missing:
        raise JobEnvironmentError(
            f"the job's environment lacks {', '.join(missing)} (declared in {path.name}); the "
            "bootstrap installs them, so run the job through it or use an image that has them"
        )
    check_torch(installed_version("torch"))
