#!/usr/bin/env bash
# The GPU check, run on a machine with CUDA and a python3 that has torch, pandas, pyarrow,
# scikit-learn and scipy (dagster-pipes is only imported under Dagster Pipes).
#   bash bench/gpu_check.sh            # prints figures; about 3 minutes on one H100/H200
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PYTHON=${PYTHON:-python3}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
"$PYTHON" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'"
echo "== index-slice loop vs DataLoader, same model and batch, on the GPU"
"$PYTHON" bench/train_cpu.py 500000 2 cuda
echo "== full-size entry point on the GPU (2 years, ~1.05 M rows, seed batch size and lr)"
"$PYTHON" bench/gpu_train.py "${EPOCHS:-5}"
