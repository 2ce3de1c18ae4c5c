#!/usr/bin/env bash
# Wall time and peak RSS of the main command (all symbols, demo profile unless CRPBOT_PROFILE says
# otherwise), measured after set-up so that installing packages is not counted.
# Usage: bench/demo.sh [main-command args, e.g. --symbols BTC]
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || make setup
PYTHON=.venv/bin/python
log=$(mktemp)
trap 'rm -f "$log"' EXIT

status=0
if [ -x /usr/bin/time ]; then
    # -v: GNU time's report; its "Maximum resident set size" is the largest single process among
    # the command and its children (here: the Dagster process or a training subprocess).
    /usr/bin/time -v -o "$log" "$PYTHON" -m crpbot_assets.main "$@" || status=$?
    wall=$(sed -n 's/^\tElapsed (wall clock) time (h:mm:ss or m:ss): //p' "$log")
    rss_kib=$(sed -n 's/^\tMaximum resident set size (kbytes): //p' "$log")
else
    "$PYTHON" - "$log" "$@" <<'PY' || status=$?
import resource, subprocess, sys, time
log, args = sys.argv[1], sys.argv[2:]
start = time.perf_counter()
code = subprocess.call([sys.executable, "-m", "crpbot_assets.main", *args])
wall = time.perf_counter() - start
rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB on Linux
open(log, "w").write(f"{int(wall // 60)}:{wall % 60:05.2f} {rss}\n")
sys.exit(code)
PY
    read -r wall rss_kib < "$log"
fi
echo
echo "main command: exit ${status}, wall ${wall} (m:ss), peak RSS $((rss_kib / 1024)) MiB"
exit "$status"
