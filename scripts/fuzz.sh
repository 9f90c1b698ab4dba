#!/usr/bin/env bash
# Runs every fuzz target of fuzz/ (cargo-fuzz, libFuzzer) one after the other and prints a
# table of executions per target; exits 1 when any target crashes (a panic, a sanitizer
# report, a timeout or running out of memory), naming the input that did it.
#
#   scripts/fuzz.sh              # the long run: 600 s per target, the corpus grows in
#                                # fuzz/corpus-run/ (ignored by git)
#   scripts/fuzz.sh 3600         # an hour per target
#   scripts/fuzz.sh --short      # scripts/test.sh: 6 s per target over the committed seeds
#                                # only (fuzz/corpus/, nothing is written there)
#   scripts/fuzz.sh --short 10 gateway_url api_path   # some targets, 10 s each
#
# Needs the nightly toolchain and cargo-fuzz (scripts/setup.sh installs cargo-fuzz). The
# fuzz crate builds in fuzz/target (or $FUZZ_TARGET_DIR), not in the workspace's target/.
# A crashing input is saved in fuzz/artifacts/<target>/; `scripts/fuzz.sh --repro <target>
# <file>` runs it again. Fix the bug and turn the input into a unit test next to the parser.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

short=0
repro=0
case "${1:-}" in
--short) short=1; shift ;;
--repro) repro=1; shift ;;
esac
if [ "$repro" -eq 0 ]; then
    duration=$([ "$short" -eq 1 ] && echo 6 || echo 600)
    if [[ "${1:-}" =~ ^[0-9]+$ ]]; then
        duration=$1
        shift
    fi
fi

if ! rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    echo "error: the fuzz targets need the nightly toolchain" >&2
    echo "hint: rustup toolchain install nightly --profile minimal" >&2
    exit 1
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "error: cargo-fuzz is not installed" >&2
    echo "hint: scripts/setup.sh (or: cargo install cargo-fuzz --locked)" >&2
    exit 1
fi

cd fuzz
export CARGO_TARGET_DIR=${FUZZ_TARGET_DIR:-$root/fuzz/target}
# cargo-fuzz's defaults (release, debug assertions, AddressSanitizer, sancov); the short
# run builds without optimisation (`--dev`), several times faster to build from scratch
start=$(date +%s)
if [ "$short" -eq 1 ]; then
    cargo +nightly fuzz build --dev
    bin_dir=$CARGO_TARGET_DIR/x86_64-unknown-linux-gnu/debug
else
    cargo +nightly fuzz build
    bin_dir=$CARGO_TARGET_DIR/x86_64-unknown-linux-gnu/release
fi
echo "fuzz: built the targets in $(($(date +%s) - start)) s" >&2

if [ "$repro" -eq 1 ]; then
    [ $# -eq 2 ] || { echo "usage: scripts/fuzz.sh --repro TARGET FILE" >&2; exit 2; }
    exec "$bin_dir/$1" "$2"
fi

if [ $# -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo +nightly fuzz list)
fi

mkdir -p logs
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
crashed=()
rows=()
for t in "${targets[@]}"; do
    [ -d "corpus/$t" ] || { echo "error: no seed corpus fuzz/corpus/$t" >&2; exit 1; }
    mkdir -p "artifacts/$t"
    if [ "$short" -eq 1 ]; then
        # new inputs go to a scratch directory: the committed seeds stay as they are
        grow=$scratch/$t
    else
        grow=corpus-run/$t
    fi
    mkdir -p "$grow"
    log=logs/$t.log
    rc=0
    "$bin_dir/$t" "$grow" "corpus/$t" -max_total_time="$duration" -timeout=30 \
        -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="artifacts/$t/" \
        >"$log" 2>&1 || rc=$?
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || true)
    secs=$(grep -o 'Done [0-9]* runs in [0-9]* second' "$log" | grep -o 'in [0-9]*' | grep -o '[0-9]*' || true)
    if [ "$rc" -eq 0 ]; then
        result="no crash"
    else
        artifact=$(grep -o "Test unit written to [^ ]*" "$log" | tail -1 | sed 's/.* //' || true)
        result="CRASH (exit $rc) ${artifact:+fuzz/$artifact} (fuzz/$log)"
        crashed+=("$t")
    fi
    row=$(printf '| `%s` | %s | %s | %s |' "$t" "${execs:-?}" "${secs:-?}" "$result")
    rows+=("$row")
    echo "$row"
done

echo
echo "scripts/fuzz.sh$([ "$short" -eq 1 ] && echo ' --short') $duration: executions per target"
echo "| target | executions | seconds | result |"
echo "|---|---|---|---|"
printf '%s\n' "${rows[@]}"
echo "fuzz: $((${#targets[@]} - ${#crashed[@]})) of ${#targets[@]} targets ran without a crash in $(($(date +%s) - start)) s"
if [ ${#crashed[@]} -gt 0 ]; then
    echo "error: crashed: ${crashed[*]}; the inputs are in fuzz/artifacts/<target>/" >&2
    echo "hint: scripts/fuzz.sh --repro TARGET FILE shows the crash again" >&2
    exit 1
fi
