"""Names the asset modules share: their group in the UI and the metadata keys they agree on."""

GROUP = "crpbot_v8"
MIB = 1024 * 1024
FIGURE_METADATA_PREFIX = "figure_"
STAGED_FILES_METADATA = "staged_files"  # on `model`: name → {bytes, sha256} as trained and gated
