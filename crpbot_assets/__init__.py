"""The Dagster side of crpbot V8: assets, checks, resources and sensors over `v8_model`.

`crpbot_assets.definitions.defs` is the code location that `workspace.yaml` loads.

Every process that loads it (the main command, Dagster's run workers, code servers and daemon)
ends without collecting its objects one by one: the interpreter's last garbage collection over
Dagster's and MLflow's modules took 1-2 CPU s per process, only to free memory that the process's
end frees anyway. `gc.freeze` at exit moves them out of that collection; objects still reachable
are released as before, and exit handlers registered later still run first.
"""

import atexit
import gc

atexit.register(gc.freeze)
