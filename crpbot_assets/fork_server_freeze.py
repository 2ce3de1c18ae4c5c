"""Imported last by the symbols' fork server (`crpbot_assets.symbol_processes.WARM_IMPORTS`).

It moves every object the fork server's imports made into the garbage collector's permanent
generation, as Python's documentation of `gc.freeze` advises before `fork()` without `exec()`:
the forked symbol processes' collections skip those objects and leave their pages shared, and
the fork server's own end does not collect them one by one (about 1.3 s with Dagster's and
MLflow's modules loaded).
"""

import gc

gc.freeze()
