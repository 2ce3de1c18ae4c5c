"""`python -m v8_model.job.train`: the training container's command (see `v8_model.job.entrypoint`).

A module of its own, so that running it imports the library once: the loop lives in
`v8_model.model.loop`, the SageMaker contract in `v8_model.job.entrypoint`.
"""

import os

from v8_model.job.entrypoint import main
from v8_model.job.lifetime import die_with_parent

if __name__ == "__main__":
    die_with_parent(os.environ)
    raise SystemExit(main())
