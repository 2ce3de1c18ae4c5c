#!/usr/bin/env bash
# The GPU check, run on a machine with CUDA and a python3 that has torch and the job's
# requirements (v8_model/job/requirements.txt: pandas, pyarrow, scikit-learn, scipy, arch;
# dagster-pipes is only imported under Dagster Pipes).
#   bash bench/gpu_check.sh        # prints the figures issue 10 asks for; ~5 minutes on an H200
# 1. DataLoader loop vs eager step vs captured CUDA-graph step, same GPU and data, and the eager
#    vs captured loss trajectories against their tolerances (non-zero exit if they disagree).
# 2. The full-size entry point end to end: ~1.05 M rows, ${EPOCHS:-100} epochs, no early stop.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PYTHON=${PYTHON:-python3}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
"$PYTHON" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'"
"$PYTHON" -c "import v8_model.job.requirements as r; r.check_job_environment()" || {
    echo "install the job's requirements first: $PYTHON -m pip install -r v8_model/job/requirements.txt" >&2
    exit 1
}
echo "== DataLoader loop vs eager step vs captured step (samples/s, s/epoch, trajectories)"
"$PYTHON" bench/gpu_train.py compare "${ROWS:-500000}" "${COMPARE_EPOCHS:-3}"
echo "== full-size entry point on the GPU (2 years, ~1.05 M rows, seed batch size and lr)"
"$PYTHON" bench/gpu_train.py full "${EPOCHS:-100}"
