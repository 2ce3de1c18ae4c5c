#!/usr/bin/env bash
# The main command's wall time, measured after set-up so that installing packages is not counted.
#
#   bench/demo.sh                 3 and 8 symbols, serial (--jobs 1) vs parallel (--jobs = cores),
#                                 each from an empty root and instance, demo profile
#   bench/demo.sh ARGS...         one run of the main command with ARGS: wall time and peak RSS
#
# PYTHON names the interpreter (default .venv/bin/python, set up by `make setup-demo` if missing).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${PYTHON:-}" ]; then
    [ -x .venv/bin/python ] || make setup-demo
    PYTHON=.venv/bin/python
fi
export CRPBOT_PROFILE="${CRPBOT_PROFILE:-demo}"

if [ "$#" -eq 0 ]; then
    cores=$(nproc)
    eight="BTC,ETH,SOL,DOGE,ADA,XRP,LTC,AVAX"  # the five added symbols train on synthetic data
    declare -A wall
    for symbols in "BTC,ETH,SOL" "$eight"; do
        count=$(tr ',' '\n' <<<"$symbols" | wc -l)
        for jobs in 1 "$cores"; do
            work=$(mktemp -d)
            start=$(date +%s.%N)
            status=0
            CRPBOT_SYMBOLS="$symbols" CRPBOT_ROOT="$work/root" DAGSTER_HOME="$work/home" \
                "$PYTHON" -m crpbot_assets.main --jobs "$jobs" >"$work/out.txt" 2>&1 || status=$?
            seconds=$(echo "$(date +%s.%N) - $start" | bc)
            rm -rf "$work"
            wall[$count-$jobs]=$seconds
            printf '%s symbols, --jobs %s: exit %s, wall %.1f s\n' "$count" "$jobs" "$status" "$seconds"
        done
    done
    echo
    echo "on $cores cores, demo profile (wall seconds; speed-up = serial / parallel):"
    for count in 3 8; do
        printf '%s symbols: serial %7.1f s   parallel (--jobs %s) %7.1f s   speed-up %.2fx\n' \
            "$count" "${wall[$count-1]}" "$cores" "${wall[$count-$cores]}" \
            "$(echo "${wall[$count-1]} / ${wall[$count-$cores]}" | bc -l)"
    done
    exit 0
fi

log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
if [ -x /usr/bin/time ]; then
    # -v: GNU time's report; its "Maximum resident set size" is the largest single process among
    # the command and its children (the main command, a symbol's run or a training subprocess).
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
