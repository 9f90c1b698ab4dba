#!/bin/sh
# The long fuzz run: every target for DURATION seconds each (default 600), JOBS at a time
# (default 2). Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`).
#   fuzz/run.sh 3600        # an hour per target
# Crashes are left in fuzz/artifacts/<target>/; copy each into fuzz/regressions/<target>/.
set -eu
DURATION=${1:-600}
JOBS=${JOBS:-2}
cd "$(dirname "$0")"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
cargo +nightly fuzz build
mkdir -p logs
fails=0
run() {
    t=$1
    # a copy of the committed seeds grows in corpus-run/, the seeds stay small
    mkdir -p "corpus-run/$t"
    if cargo +nightly fuzz run "$t" "corpus-run/$t" "corpus/$t" -- \
        -max_total_time="$DURATION" -rss_limit_mb=2048 -print_final_stats=1 \
        >"logs/$t.log" 2>&1; then
        result=ok
    else
        result=CRASH
    fi
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "logs/$t.log" | grep -o '[0-9]*$' || echo '?')
    echo "$t: $result, $execs executions (logs/$t.log)"
    [ "$result" = ok ]
}
targets=$(cargo +nightly fuzz list)
set -- $targets
while [ $# -gt 0 ]; do
    pids=""
    i=0
    while [ $# -gt 0 ] && [ $i -lt "$JOBS" ]; do
        run "$1" &
        pids="$pids $!"
        shift
        i=$((i + 1))
    done
    for p in $pids; do wait "$p" || fails=$((fails + 1)); done
done
[ "$fails" -eq 0 ] || { echo "$fails target(s) crashed: see fuzz/artifacts/"; exit 1; }
