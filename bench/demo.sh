#!/usr/bin/env bash
# Wall time and peak RSS of the main command (all symbols, demo profile unless CRPBOT_PROFILE says
# otherwise), measured after set-up so that installing packages is not counted.
# Usage: bench/demo.sh [main-command args, e.g. --symbols BTC]
#        bench/demo.sh --compare OTHER_CHECKOUT [args]   e.g. --compare ../main
#   runs the demo in OTHER_CHECKOUT ("before") and in this checkout ("after"), one after the other,
#   each in a fresh storage root and DAGSTER_HOME, and prints both wall times and their ratio.
# PYTHON (default .venv/bin/python, made by `make setup` when missing) runs both checkouts.
set -euo pipefail
cd "$(dirname "$0")/.."
here=$(pwd)
if [ -z "${PYTHON:-}" ]; then
    [ -x .venv/bin/python ] || make setup
    PYTHON=$here/.venv/bin/python
fi
compare=""
if [ "${1:-}" = "--compare" ]; then
    compare=$(cd "$2" && pwd)
    shift 2
fi
log=$(mktemp)
work=$(mktemp -d)
trap 'rm -rf "$log" "$work"' EXIT

# One demo run of the checkout $1 (remaining args: the main command's); sets wall, rss_kib, status.
measure() {
    local checkout=$1
    shift
    local run_dir
    run_dir=$(mktemp -d "$work/run.XXXX")
    status=0
    if [ -x /usr/bin/time ]; then
        # -v: GNU time's report; its "Maximum resident set size" is the largest single process
        # among the command and its children (the Dagster process or a training subprocess).
        (cd "$checkout" && CRPBOT_ROOT=$run_dir/root DAGSTER_HOME=$run_dir/home \
            PYTHONPATH=$checkout /usr/bin/time -v -o "$log" "$PYTHON" -m crpbot_assets.main "$@" \
            >"$run_dir/out.txt" 2>&1) || status=$?
        wall=$(sed -n 's/^\tElapsed (wall clock) time (h:mm:ss or m:ss): //p' "$log")
        rss_kib=$(sed -n 's/^\tMaximum resident set size (kbytes): //p' "$log")
    else
        (cd "$checkout" && CRPBOT_ROOT=$run_dir/root DAGSTER_HOME=$run_dir/home \
            PYTHONPATH=$checkout "$PYTHON" - "$log" "$@" >"$run_dir/out.txt" 2>&1 <<'PY'
import resource, subprocess, sys, time
log, args = sys.argv[1], sys.argv[2:]
start = time.perf_counter()
code = subprocess.call([sys.executable, "-m", "crpbot_assets.main", *args])
wall = time.perf_counter() - start
rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB on Linux
open(log, "w").write(f"{int(wall // 60)}:{wall % 60:05.2f} {rss}\n")
sys.exit(code)
PY
        ) || status=$?
        read -r wall rss_kib <"$log"
    fi
    grep -E "promoted" "$run_dir/out.txt" || true
}

seconds() { # m:ss.ss or h:mm:ss → seconds
    awk -F: '{ s = 0; for (i = 1; i <= NF; i++) s = s * 60 + $i; print s }' <<<"$1"
}

if [ -z "$compare" ]; then
    measure "$here" "$@"
    echo
    echo "main command: exit ${status}, wall ${wall} (m:ss), peak RSS $((rss_kib / 1024)) MiB"
    exit "$status"
fi

measure "$compare" "$@"
before_wall=$wall before_rss=$rss_kib before_status=$status
measure "$here" "$@"
echo
echo "before ($compare): exit ${before_status}, wall ${before_wall} (m:ss), peak RSS $((before_rss / 1024)) MiB"
echo "after  ($here): exit ${status}, wall ${wall} (m:ss), peak RSS $((rss_kib / 1024)) MiB"
awk -v a="$(seconds "$wall")" -v b="$(seconds "$before_wall")" \
    'BEGIN { printf "wall time ratio after/before: %.2fx (target <= 2x): %s\n", a / b, (a <= 2 * b ? "met" : "NOT met") }'
exit "$status"
