#!/usr/bin/env bash
# Runs every Tiller test, after installing what is missing (scripts/setup.sh).
# Stages, in order; the first one that fails stops the run with a non-zero exit:
#   1. native tests      cargo fmt --check, cargo clippy (every crate and target, -D warnings),
#                        then the workspace's tests (cargo nextest where installed, else cargo
#                        test; GPU tests on lavapipe; the page's unit tests)
#   2. page build        cargo xtask page (the release wasm build and wasm-bindgen, into dist/),
#                        with clippy-driver wrapping the workspace's crates: the wasm32 build of
#                        tiller-core, tiller-gpu and tiller-web is linted (-D warnings) as it is
#                        compiled, in one pass instead of a separate wasm32 `cargo clippy` that
#                        checked every dependency a second time
#   3. end-to-end tests  node --test --test-concurrency=2 in tests/e2e (headless Chromium, WebGPU
#                        on SwiftShader)
# The last line is a summary of the stages: "N passed, N failed" (", N skipped" if any).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

# Tools that setup.sh installs with `cargo install` live in $CARGO_HOME/bin.
CARGO_BIN="${CARGO_HOME:-$HOME/.cargo}/bin"
case ":$PATH:" in
    *":$CARGO_BIN:"*) ;;
    *) export PATH="$CARGO_BIN:$PATH" ;;
esac
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

TOTAL=3
PASSED=0
FAILED=0
SKIPPED=0
T_START=$SECONDS

fmt_secs() { printf '%dm%02ds' $(($1 / 60)) $(($1 % 60)); }

summary() {
    echo
    echo "==> total time $(fmt_secs $((SECONDS - T_START)))"
    if [ "$SKIPPED" -gt 0 ]; then
        echo "$PASSED passed, $FAILED failed, $SKIPPED skipped"
    else
        echo "$PASSED passed, $FAILED failed"
    fi
}

header() {
    echo
    echo "=============================================================================="
    echo "==> $*"
    echo "=============================================================================="
}

# stage N NAME FUNCTION: runs FUNCTION in a subshell with `set -e` in force, times it,
# counts it, and stops everything if it failed.
stage() {
    local n="$1" name="$2" fn="$3" t0 rc
    header "[$n/$TOTAL] $name"
    t0=$SECONDS
    set +e
    (
        set -euo pipefail
        "$fn"
    )
    rc=$?
    set -e
    local took
    took="$(fmt_secs $((SECONDS - t0)))"
    if [ "$rc" -eq 0 ]; then
        echo "==> [$n/$TOTAL] $name: passed in $took"
        PASSED=$((PASSED + 1))
    elif [ "$rc" -eq 99 ]; then
        echo "==> [$n/$TOTAL] $name: SKIPPED ($took)"
        SKIPPED=$((SKIPPED + 1))
    else
        echo "==> [$n/$TOTAL] $name: FAILED (exit $rc) after $took"
        FAILED=$((FAILED + 1))
        summary
        exit "$rc"
    fi
}

# A stage function returns 99 to mark itself skipped.
skip() {
    echo "==> skipped: $*"
    exit 99
}

native_tests() {
    # Formatting first (rustfmt.toml): seconds, and a diff is a failure.
    if cargo fmt --version >/dev/null 2>&1; then
        echo "+ cargo fmt --all --check"
        cargo fmt --all --check
    else
        echo "note: rustfmt is not part of this toolchain, so formatting is not checked"
    fi
    # Lints, as errors, on every crate and target (tests, examples, the page's native build).
    if cargo clippy --version >/dev/null 2>&1; then
        echo "+ cargo clippy --workspace --all-targets -- -D warnings"
        cargo clippy --workspace --all-targets -- -D warnings
    else
        echo "note: clippy is not part of this toolchain, so lints are not checked"
    fi
    # Every crate, the page's too: tiller-web's unit tests (share links, forms, the worker
    # protocol, the sweep chart's scales) are plain Rust and run natively.
    # cargo-nextest (on these machines) runs every test in its own process, across all test
    # binaries at once: the long GPU golden tests no longer leave a core idle at the end of
    # each binary (3m40s where `cargo test` took 8m50s). It does not run doctests, so those
    # run after it; without nextest, `cargo test` runs both.
    if cargo nextest --version >/dev/null 2>&1; then
        echo "+ cargo nextest run --workspace --no-fail-fast"
        cargo nextest run --workspace --no-fail-fast
        echo "+ cargo test --workspace --doc"
        cargo test --workspace --doc
    else
        echo "+ cargo test --workspace"
        cargo test --workspace
    fi
}

page_build() {
    # clippy-driver as the workspace wrapper lints each workspace crate while it compiles it
    # (what `cargo clippy` does, but with code generation); dependencies build as usual, so a
    # later plain `cargo xtask page` only rebuilds the workspace's own crates.
    local driver
    driver="$(rustup which clippy-driver 2>/dev/null || command -v clippy-driver || true)"
    if [ -n "$driver" ]; then
        echo "+ RUSTC_WORKSPACE_WRAPPER=clippy-driver CLIPPY_ARGS=-D warnings cargo xtask page"
        RUSTC_WORKSPACE_WRAPPER="$driver" CLIPPY_ARGS="-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__" cargo xtask page
    else
        echo "note: clippy-driver is not part of this toolchain, so the wasm32 build is not linted"
        echo "+ cargo xtask page"
        cargo xtask page
    fi
}

e2e_tests() {
    [ -f tests/e2e/package.json ] || skip "no tests/e2e/package.json yet, so no end-to-end tests"
    cd tests/e2e
    # Two test files at a time (node's default on 2 cores is one): each drives its own browser
    # and servers, and most of a test is waiting on the page, so two together take half the
    # time (3m24s against 7m02s, all 52 passing).
    echo "+ (cd tests/e2e && node --test --test-concurrency=2)"
    node --test --test-concurrency=2
}

header "[setup] scripts/setup.sh"
t0=$SECONDS
set +e
bash scripts/setup.sh
rc=$?
set -e
if [ "$rc" -ne 0 ]; then
    echo "==> setup FAILED (exit $rc) after $(fmt_secs $((SECONDS - t0)))"
    FAILED=1
    summary
    exit "$rc"
fi
echo "==> setup done in $(fmt_secs $((SECONDS - t0)))"

stage 1 "native tests (format, lints, unit and GPU tests on lavapipe)" native_tests
stage 2 "page build, its wasm32 crates linted (cargo xtask page under clippy-driver)" page_build
stage 3 "end-to-end browser tests (node --test)" e2e_tests

summary
