#!/usr/bin/env bash
# Wall time and peak RSS of the main command (demo profile unless CRPBOT_PROFILE says otherwise),
# measured after set-up so that installing packages is not counted. Every run starts from an empty
# storage root and Dagster instance.
#
#   bench/demo.sh                          3 and 8 symbols, serial (--jobs 1) vs parallel
#                                          (--jobs = cores), and the speed-up
#   bench/demo.sh --compare OTHER [ARGS]   the main command in the checkout OTHER ("before", e.g.
#                                          ../main) and in this one ("after"), one after the other,
#                                          and the ratio of their wall times
#   bench/demo.sh ARGS...                  one run of the main command with ARGS
#
# PYTHON names the interpreter for every checkout (default .venv/bin/python, set up by
# `make setup-demo` when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
here=$(pwd)
if [ -z "${PYTHON:-}" ]; then
    [ -x .venv/bin/python ] || make setup-demo
    PYTHON=$here/.venv/bin/python
fi
export CRPBOT_PROFILE="${CRPBOT_PROFILE:-demo}"
log=$(mktemp)
work=$(mktemp -d)
trap 'rm -rf "$log" "$work"' EXIT

# One run of the main command in checkout $1 (remaining args: the command's); sets wall (m:ss),
# rss_kib and status, and prints the run's promotion lines.
measure() {
    local checkout=$1
    shift
    local run_dir
    run_dir=$(mktemp -d "$work/run.XXXX")
    status=0
    if [ -x /usr/bin/time ]; then
        # -v: GNU time's report; its "Maximum resident set size" is the largest single process
        # among the command and its children (a symbol's run or a training subprocess).
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

if [ "$#" -eq 0 ]; then
    cores=$(nproc)
    eight="BTC,ETH,SOL,DOGE,ADA,XRP,LTC,AVAX" # the five added symbols train on synthetic data
    declare -A took
    for symbols in "BTC,ETH,SOL" "$eight"; do
        count=$(tr ',' '\n' <<<"$symbols" | wc -l)
        for jobs in 1 "$cores"; do
            CRPBOT_SYMBOLS=$symbols measure "$here" --jobs "$jobs" >/dev/null
            took[$count-$jobs]=$(seconds "$wall")
            printf '%s symbols, --jobs %s: exit %s, wall %s (m:ss), peak RSS %s MiB\n' \
                "$count" "$jobs" "$status" "$wall" "$((rss_kib / 1024))"
        done
    done
    echo
    echo "on $cores cores, demo profile (wall seconds; speed-up = serial / parallel):"
    for count in 3 8; do
        awk -v n="$count" -v j="$cores" -v s="${took[$count-1]}" -v p="${took[$count-$cores]}" \
            'BEGIN { printf "%s symbols: serial %7.1f s   parallel (--jobs %s) %7.1f s   speed-up %.2fx\n", n, s, j, p, s / p }'
    done
    exit 0
fi

if [ "$1" != "--compare" ]; then
    measure "$here" "$@"
    echo
    echo "main command: exit ${status}, wall ${wall} (m:ss), peak RSS $((rss_kib / 1024)) MiB"
    exit "$status"
fi

compare=$(cd "$2" && pwd)
shift 2
measure "$compare" "$@"
before_wall=$wall before_rss=$rss_kib before_status=$status
measure "$here" "$@"
echo
echo "before ($compare): exit ${before_status}, wall ${before_wall} (m:ss), peak RSS $((before_rss / 1024)) MiB"
echo "after  ($here): exit ${status}, wall ${wall} (m:ss), peak RSS $((rss_kib / 1024)) MiB"
awk -v a="$(seconds "$wall")" -v b="$(seconds "$before_wall")" \
    'BEGIN { printf "wall time ratio after/before: %.2fx (target <= 2x): %s\n", a / b, (a <= 2 * b ? "met" : "NOT met") }'
exit "$status"
