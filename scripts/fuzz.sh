#!/usr/bin/env bash
# Coverage-guided fuzzing of every parser with AFL++ through cargo-afl (stable toolchain).
#
#   bash scripts/fuzz.sh [--execs N] [TARGET ...]     (default: every target, 1000000 executions)
#
# Installs cargo-afl and builds AFL++ when they are missing (skipped when there), builds the
# harness (fuzz/src/bin/afl.rs, instrumented, in target/afl), then fuzzes each target from its
# committed seeds (fuzz/corpus/TARGET) until it has run N inputs, with a 2 GiB memory limit
# (a runaway allocation is a crash) and a 1 s timeout (a hang). Findings stay in
# target/afl/out/TARGET/default/{crashes,hangs}; the last lines are RELIABILITY.md's table.
# Not part of the test command (minutes per target); tests/mutation.rs is its bounded twin.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

execs=1000000
targets=()
while [ $# -gt 0 ]; do
    case "$1" in
        --execs) execs="$2"; shift 2 ;;
        *) targets+=("$1"); shift ;;
    esac
done
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(ls fuzz/corpus)
fi

if ! cargo afl --version >/dev/null 2>&1; then
    echo "+ cargo install --locked cargo-afl"
    cargo install --locked cargo-afl
fi
if ! ls "${XDG_DATA_HOME:-$HOME/.local/share}"/afl.rs/rustc-*/afl.rs-*/afl/bin/afl-fuzz >/dev/null 2>&1; then
    echo "+ cargo afl config --build (AFL++ from source)"
    cargo afl config --build
fi
export CARGO_TARGET_DIR=target/afl
echo "+ cargo afl build --release -p tiller-fuzz --features afl --bin tiller-afl"
cargo afl build --release -p tiller-fuzz --features afl --bin tiller-afl

export AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_NO_UI=1 AFL_NO_AFFINITY=1
rows=()
for t in "${targets[@]}"; do
    out="target/afl/out/$t"
    mkdir -p target/afl/out
    rm -rf "$out"
    # AFL++ reads regular files only: the corpus's links to shipped datasets, resolved
    seeds="target/afl/in/$t"
    rm -rf "$seeds" && mkdir -p target/afl/in && cp -rL "fuzz/corpus/$t" "$seeds"
    echo "+ TILLER_FUZZ_TARGET=$t cargo afl fuzz -i $seeds -o $out -E $execs -m 2048 -t 1000"
    TILLER_FUZZ_TARGET="$t" cargo afl fuzz -i "$seeds" -o "$out" -E "$execs" -m 2048 -t 1000 \
        -- target/afl/release/tiller-afl >"$out.log" 2>&1 || { tail -20 "$out.log"; exit 1; }
    stats="$out/default/fuzzer_stats"
    get() { awk -F' *: *' -v k="$1" '$1 == k { print $2 }' "$stats"; }
    crashes=$(ls "$out/default/crashes" 2>/dev/null | grep -vc README || true)
    hangs=$(ls "$out/default/hangs" 2>/dev/null | grep -vc README || true)
    rows+=("| $t | $(get execs_done) | $crashes | $hangs | $(get run_time) s | $(get corpus_count) | $(get bitmap_cvg) |")
    echo "${rows[-1]}"
done
echo
echo "| target | executions | crashes | hangs | time | corpus | edge coverage |"
echo "|---|---|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
