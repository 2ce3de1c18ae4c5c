"""`python -m v8_model.job.train`: the training container's command (see `v8_model.job.entrypoint`).

A module of its own, so that running it imports the library once: the loop lives in
`v8_model.model.loop`, the SageMaker contract in `v8_model.job.entrypoint`.
"""

import gc
import os

from v8_model.job.entrypoint import main
from v8_model.job.lifetime import die_with_parent

if __name__ == "__main__":
    die_with_parent(os.environ)
    code = main()
    # The interpreter's last garbage collection over torch's, pandas' and scipy's modules took
    # 0.7-2 CPU s, only to free memory that the process's end frees anyway.
    gc.freeze()
    raise SystemExit(code)
