#!/usr/bin/env bash
# Installs everything Tiller's build and tests need, skipping what is already present.
# Safe to run again and again; a second run only checks and prints "ok".
#
#   bash scripts/setup.sh            install what is missing
#   bash scripts/setup.sh --dry-run  only print what would be installed
#
# What it installs (see README.md, "Quick start"):
#   - Debian packages (root only): chromium chromium-driver (headless browser for the
#     end-to-end tests), mesa-vulkan-drivers (lavapipe: Vulkan on the CPU, for the native
#     wgpu tests)
#   - the Rust target wasm32-unknown-unknown, and the rustfmt and clippy components
#   - wasm-bindgen-cli (exactly the wasm-bindgen version in Cargo.lock), built from crates.io
#     with `cargo install --debug` at opt-level 1 (minutes, where a release build takes ~10);
#     `cargo xtask page` (xtask/src/page.rs) builds the page with it
#   - the npm packages of tests/e2e (`npm ci`; playwright-core drives /usr/bin/chromium,
#     no browser is ever downloaded)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

APT_PACKAGES=(chromium chromium-driver mesa-vulkan-drivers)
WASM_TARGET="wasm32-unknown-unknown"

DRY_RUN=0
for arg in "$@"; do
    case "$arg" in
        -n | --dry-run) DRY_RUN=1 ;;
        -h | --help)
            sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'
            exit 0
            ;;
        *)
            echo "setup: unknown argument: $arg (try --help)" >&2
            exit 2
            ;;
    esac
done

# Tools installed by `cargo install` land in $CARGO_HOME/bin.
CARGO_BIN="${CARGO_HOME:-$HOME/.cargo}/bin"
case ":$PATH:" in
    *":$CARGO_BIN:"*) ;;
    *) export PATH="$CARGO_BIN:$PATH" ;;
esac

say() { printf 'setup: %s\n' "$*"; }
die() {
    printf 'setup: error: %s\n' "$*" >&2
    exit 1
}

# Runs a command, or only prints it with --dry-run.
run() {
    if [ "$DRY_RUN" = 1 ]; then
        say "  would run: $*"
    else
        say "  running: $*"
        "$@"
    fi
}

# `cargo install` from a neutral directory, so the project's .cargo/config.toml (if any)
# and its target dir are not used for building the tools (cargo install builds in a
# temporary directory of its own unless CARGO_TARGET_DIR is set, so unset that too).
cargo_install() {
    if [ "$DRY_RUN" = 1 ]; then
        say "  would run: cargo install $*"
    else
        say "  running: cargo install $*"
        (cd "${TMPDIR:-/tmp}" && env -u CARGO_TARGET_DIR -u CARGO_BUILD_TARGET_DIR cargo install "$@")
    fi
}

need_cmd() {
    command -v "$1" > /dev/null 2>&1 || die "$1 is not on PATH; $2"
}

# --- (a) Debian packages ------------------------------------------------------------------
setup_apt() {
    local missing=() pkg
    for pkg in "${APT_PACKAGES[@]}"; do
        if [ "$(dpkg-query -W -f='${Status}' "$pkg" 2> /dev/null || true)" != "install ok installed" ]; then
            missing+=("$pkg")
        fi
    done
    if [ "${#missing[@]}" -eq 0 ]; then
        say "ok: Debian packages already present: ${APT_PACKAGES[*]}"
        return
    fi
    say "Debian packages missing: ${missing[*]}"
    if [ "$(id -u)" != 0 ]; then
        say "not root: cannot install them. As root, run:"
        say "  apt-get update && apt-get install -y ${missing[*]}"
        [ "$DRY_RUN" = 1 ] && return
        exit 1
    fi
    # Wait for another apt/dpkg (if one runs) instead of failing at once.
    local apt_opts=(-o DPkg::Lock::Timeout=600)
    run env DEBIAN_FRONTEND=noninteractive apt-get "${apt_opts[@]}" update
    run env DEBIAN_FRONTEND=noninteractive apt-get "${apt_opts[@]}" install -y "${missing[@]}"
}

# --- (b) wasm32 target --------------------------------------------------------------------
setup_wasm_target() {
    if command -v rustup > /dev/null 2>&1; then
        if rustup target list --installed 2> /dev/null | grep -qx "$WASM_TARGET"; then
            say "ok: Rust target $WASM_TARGET already present"
        else
            say "Rust target $WASM_TARGET missing"
            run rustup target add "$WASM_TARGET"
        fi
    else
        # No rustup: accept a toolchain that already ships the target.
        local sysroot
        sysroot="$(rustc --print sysroot)"
        if [ -d "$sysroot/lib/rustlib/$WASM_TARGET" ]; then
            say "ok: Rust target $WASM_TARGET already present (no rustup)"
        else
            die "Rust target $WASM_TARGET is missing and rustup is not on PATH to add it"
        fi
    fi
}

# --- (b2) rustfmt and clippy (the test command's format check and lints) ------------------
setup_components() {
    local missing=()
    cargo fmt --version > /dev/null 2>&1 || missing+=(rustfmt)
    cargo clippy --version > /dev/null 2>&1 || missing+=(clippy)
    if [ "${#missing[@]}" -eq 0 ]; then
        say "ok: rustfmt and clippy already present"
    elif command -v rustup > /dev/null 2>&1; then
        say "missing Rust components: ${missing[*]}"
        run rustup component add "${missing[@]}"
    else
        say "note: ${missing[*]} missing and no rustup to add them; the test command skips those checks"
    fi
}

# --- (c) wasm-bindgen-cli -----------------------------------------------------------------
# Prints the version of the `wasm-bindgen` crate recorded in Cargo.lock (empty if none).
locked_wasm_bindgen_version() {
    [ -f Cargo.lock ] || return 0
    awk '
        /^\[\[package\]\]/ { name = "" }
        /^name = /         { name = $3 }
        /^version = / && name == "\"wasm-bindgen\"" { gsub(/"/, "", $3); print $3 }
    ' Cargo.lock | sort -u
}

setup_wasm_bindgen() {
    local want have=""
    want="$(locked_wasm_bindgen_version)"
    if [ -z "$want" ]; then
        say "skip: no wasm-bindgen crate in Cargo.lock, so no wasm-bindgen-cli needed yet"
        return
    fi
    if [ "$(printf '%s\n' "$want" | wc -l)" -gt 1 ]; then
        die "Cargo.lock has several wasm-bindgen versions ($(echo "$want" | tr '\n' ' ')); pin one with '=' in Cargo.toml"
    fi
    if command -v wasm-bindgen > /dev/null 2>&1; then
        have="$(wasm-bindgen --version 2> /dev/null | awk '{print $2; exit}' || true)"
    fi
    if [ "$have" = "$want" ]; then
        say "ok: wasm-bindgen-cli $want already present (matches Cargo.lock)"
        return
    fi
    say "wasm-bindgen-cli ${have:-not found}; Cargo.lock wants $want (building it takes a few minutes)"
    # Deliberately without --locked (the CLI's own lock file does not resolve: it names a
    # yanked prerelease). A dev build at opt-level 1 without debug info compiles in a fraction
    # of a release build's time and still runs the page's bindgen in seconds.
    CARGO_PROFILE_DEV_OPT_LEVEL=1 CARGO_PROFILE_DEV_DEBUG=false \
        cargo_install --debug wasm-bindgen-cli --version "$want"
}

# --- (d) npm packages of the end-to-end tests ---------------------------------------------
setup_e2e_npm() {
    local dir="tests/e2e"
    if [ ! -f "$dir/package-lock.json" ]; then
        say "skip: no $dir/package-lock.json, no npm packages to install"
        return
    fi
    need_cmd npm "install Node.js 20 and npm"
    # node_modules is stale when package-lock.json changed since the last `npm ci`:
    # remember the lock file's hash in a stamp inside node_modules.
    local stamp="$dir/node_modules/.tiller-package-lock.sha256" want have=""
    want="$(sha256sum "$dir/package-lock.json" | awk '{print $1}')"
    [ -f "$stamp" ] && have="$(cat "$stamp")"
    if [ -d "$dir/node_modules" ] && [ "$have" = "$want" ]; then
        say "ok: $dir/node_modules already up to date with package-lock.json"
        return
    fi
    if [ -d "$dir/node_modules" ]; then
        say "$dir/node_modules is stale (package-lock.json changed)"
    else
        say "$dir/node_modules missing"
    fi
    # Never let a package download a browser: the tests use Debian's /usr/bin/chromium.
    if [ "$DRY_RUN" = 1 ]; then
        say "  would run: (cd $dir && npm ci --no-audit --no-fund)"
        return
    fi
    say "  running: (cd $dir && npm ci --no-audit --no-fund)"
    (
        cd "$dir"
        PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 PUPPETEER_SKIP_DOWNLOAD=1 \
            npm ci --no-audit --no-fund
    )
    echo "$want" > "$stamp"
}

[ "$DRY_RUN" = 1 ] && say "dry run: nothing will be installed"
need_cmd cargo "install Rust (rustup) first"
need_cmd rustc "install Rust (rustup) first"
setup_apt
setup_wasm_target
setup_components
setup_wasm_bindgen
setup_e2e_npm
say "done"
