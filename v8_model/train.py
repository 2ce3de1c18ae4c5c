"""`python -m v8_model.train`: the training container's command (see `v8_model.entrypoint`).

A module of its own, so that running it imports the library once: the loop lives in
`v8_model.loop`, the SageMaker contract in `v8_model.entrypoint`.
"""

from v8_model.entrypoint import main

if __name__ == "__main__":
    raise SystemExit(main())
