"""The job's ContainerEntrypoint: prepare the PyTorch image, then `python -m v8_model.train`.

This file is copied into the job's `code` channel as `bootstrap.py` and runs inside the SageMaker
container with the image's Python, so it imports the standard library only. A custom entry point
bypasses the SageMaker training toolkit, so this script does the three things the job needs:

1. exports SM_CHANNEL_<NAME> / SM_CHANNELS / SM_MODEL_DIR for the channels SageMaker downloaded
   (what the toolkit would export; the entry point reads them, e.g. the `processor` channel);
2. pip-installs the packages the image lacks (pyarrow is not in every PyTorch image); the
   bundled source already carries v8_model and dagster_pipes (pure Python, the orchestrator's
   exact version), so only these third-party wheels ever come from PyPI;
3. puts the bundled source first on PYTHONPATH and replaces itself with the entry point.

Any failure here goes to the failure file, so it becomes the job's FailureReason.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

# import name → pip requirement, mirroring pyproject's runtime dependencies the entry point uses.
REQUIREMENTS = {
    "boto3": "boto3>=1.35",  # the Pipes S3 message writer
    "numpy": "numpy>=2.0,<3",
    "pandas": "pandas>=2.2,<4",
    "pyarrow": "pyarrow>=17",
    "sklearn": "scikit-learn>=1.5,<2",
}
FAILURE_REASON_LIMIT = 1024


def _fail(base: Path, reason: str) -> int:
    failure = Path(os.environ.get("SM_OUTPUT_FAILURE", base / "output" / "failure"))
    failure.parent.mkdir(parents=True, exist_ok=True)
    failure.write_text(reason[:FAILURE_REASON_LIMIT], encoding="utf-8")
    print(reason, file=sys.stderr, flush=True)
    return 1


def container_env(base: Path, code_dir: Path, environ: dict[str, str]) -> dict[str, str]:
    """The entry point's environment: channels as the toolkit names them, bundled source first."""
    env = dict(environ)
    data_dir = base / "input" / "data"
    channels = sorted(p.name for p in data_dir.iterdir() if p.is_dir()) if data_dir.is_dir() else []
    for name in channels:
        env.setdefault(f"SM_CHANNEL_{name.upper()}", str(data_dir / name))
    env.setdefault("SM_CHANNELS", json.dumps(channels))
    env.setdefault("SM_MODEL_DIR", str(base / "model"))
    env.setdefault("PYTHONUNBUFFERED", "1")
    source = str(code_dir / "src")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (source, env.get("PYTHONPATH", "")) if p)
    return env


def missing_requirements() -> list[str]:
    return [
        spec for module, spec in REQUIREMENTS.items() if importlib.util.find_spec(module) is None
    ]


def main(argv: list[str]) -> int:
    base = Path(os.environ.get("SM_BASE_DIR", "/opt/ml"))
    code_dir = Path(__file__).resolve().parent
    missing = missing_requirements()
    if missing:
        print(f"bootstrap: installing what the image lacks: {' '.join(missing)}", flush=True)
        command = [sys.executable, "-m", "pip", "install", "--no-input", "--quiet"]
        result = subprocess.run([*command, "--disable-pip-version-check", *missing], check=False)
        if result.returncode != 0:
            return _fail(
                base,
                f"bootstrap: pip install {' '.join(missing)} failed (exit {result.returncode}); "
                "the image lacks them and the job could not install them (network isolation, "
                "or a VPC without internet access?): use an image that has them",
            )
    env = container_env(base, code_dir, dict(os.environ))
    command = [sys.executable, "-m", "v8_model.train", *argv]
    print(f"bootstrap: exec {' '.join(command)} (source {code_dir / 'src'})", flush=True)
    os.execve(sys.executable, command, env)  # replaces this process: the job is the entry point


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
