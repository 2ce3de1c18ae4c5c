"""The Dagster side of crpbot V8: assets, checks, resources and sensors over `v8_model`.

`crpbot_assets.definitions.defs` is the code location that `workspace.yaml` loads.
"""
