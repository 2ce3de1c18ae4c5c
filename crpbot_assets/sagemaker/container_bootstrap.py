"""The job's ContainerEntrypoint: prepare the PyTorch image, then `python -m v8_model.job.train`.

This file is copied into the job's `code` channel as `bootstrap.py` and runs inside the SageMaker
container with the image's Python, so it imports the standard library only (and, from the
bundled source, `v8_model.job.contract` and `v8_model.job.requirements`, which do too). A
custom entry point bypasses the SageMaker training toolkit, so this script does what the job
needs:

1. exports SM_CHANNEL_<NAME> / SM_CHANNELS / SM_MODEL_DIR for the channels SageMaker downloaded
   (what the toolkit would export; the entry point reads them, e.g. the `processor` channel);
2. installs `v8_model/job/requirements.txt` (pinned) when the image lacks any of it, failing
   fast (one retry, short timeout) with the reason when there is no network (network isolation,
   a VPC without a route to PyPI); the bundled source already carries v8_model and dagster_pipes;
3. drops a leading `train` argument (SageMaker appends it to some entry commands; the entry
   point takes only `--key value` flags), puts the bundled source first on PYTHONPATH and
   replaces itself with the entry point.

Any failure here goes to the failure file, so it becomes the job's FailureReason.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

SOURCE_DIR = "src"
REQUIREMENTS_PATH = f"{SOURCE_DIR}/v8_model/job/requirements.txt"
# Fail fast without a network: one retry and a short timeout instead of pip's minutes of retries.
PIP_COMMAND = (
    "-m",
    "pip",
    "install",
    "--no-input",
    "--quiet",
    "--disable-pip-version-check",
    "--retries",
    "1",
    "--timeout",
    "15",
)


def _use_bundled_source(code_dir: Path) -> None:
    """Put the bundled source first on sys.path: the contract and the requirements check are
    read from the code this job shipped with (standard library only, nothing installed yet)."""
    source = str(code_dir / SOURCE_DIR)
    if source not in sys.path:
        sys.path.insert(0, source)


def _fail(base: Path, reason: str) -> int:
    from v8_model.job import contract

    tree = contract.ContainerTree(base)
    failure = Path(os.environ.get(contract.FAILURE_FILE_ENV, tree.failure_file))
    failure.parent.mkdir(parents=True, exist_ok=True)
    failure.write_text(reason[: contract.FAILURE_REASON_LIMIT], encoding="utf-8")
    print(reason, file=sys.stderr, flush=True)
    return 1


def container_env(base: Path, code_dir: Path, environ: dict[str, str]) -> dict[str, str]:
    """The entry point's environment: channels as the toolkit names them, bundled source first."""
    from v8_model.job import contract

    env = dict(environ)
    tree = contract.ContainerTree(base)
    data_dir = tree.data_dir
    channels = sorted(p.name for p in data_dir.iterdir() if p.is_dir()) if data_dir.is_dir() else []
    for name in channels:
        env.setdefault(contract.channel_env(name), str(tree.channel_dir(name)))
    env.setdefault(contract.CHANNELS_ENV, json.dumps(channels, allow_nan=False))
    env.setdefault(contract.MODEL_DIR_ENV, str(tree.model_dir))
    env.setdefault("PYTHONUNBUFFERED", "1")
    source = str(code_dir / SOURCE_DIR)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (source, env.get("PYTHONPATH", "")) if p)
    return env


def entry_arguments(argv: list[str]) -> list[str]:
    """The entry point's arguments: SageMaker's trailing `train` word dropped, flags kept."""
    return argv[1:] if argv[:1] == ["train"] else argv


def _job_requirements(code_dir: Path) -> ModuleType:
    """`v8_model.job.requirements` from the bundled source (standard library only)."""
    _use_bundled_source(code_dir)
    import v8_model.job.requirements as job_requirements

    return job_requirements


def install_requirements(base: Path, code_dir: Path) -> int | None:
    """Install what the image lacks; None when ready, else the exit code after the failure file."""
    job_requirements = _job_requirements(code_dir)
    requirements = code_dir / REQUIREMENTS_PATH
    unmet = job_requirements.unmet_requirements(job_requirements.read_requirements(requirements))
    if not unmet:
        return None
    print(f"bootstrap: installing what the image lacks: {' '.join(unmet)}", flush=True)
    command = [sys.executable, *PIP_COMMAND, "-r", str(requirements)]
    result = subprocess.run(command, check=False)
    if result.returncode != 0:
        return _fail(
            base,
            f"bootstrap: pip install {' '.join(unmet)} failed (exit {result.returncode}); the "
            "image lacks them and the job could not download them (network isolation, or a VPC "
            "without internet access?): use an image that has them",
        )
    still = job_requirements.unmet_requirements(job_requirements.read_requirements(requirements))
    if still:
        return _fail(base, f"bootstrap: after pip install, still missing: {' '.join(still)}")
    return None


def main(argv: list[str]) -> int:
    code_dir = Path(__file__).resolve().parent
    _use_bundled_source(code_dir)
    from v8_model.job import contract

    base = Path(os.environ.get(contract.BASE_DIR_ENV, contract.ML_ROOT))
    failed = install_requirements(base, code_dir)
    if failed is not None:
        return failed
    env = container_env(base, code_dir, dict(os.environ))
    command = [sys.executable, "-m", contract.ENTRY_POINT_MODULE, *entry_arguments(argv)]
    print(f"bootstrap: exec {' '.join(command)} (source {code_dir / SOURCE_DIR})", flush=True)
    os.execve(sys.executable, command, env)  # replaces this process: the job is the entry point


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
