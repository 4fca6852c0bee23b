#!/usr/bin/env bash
# Every check, as CI runs it: formatting, lints, all tests (unit, property, snapshot, the C ABI
# program, end-to-end with real processes, the real TT-Metal runtime in mock-cluster mode), Miri
# on the shared-memory writer and a short fuzz run of the legacy protocol where a nightly
# toolchain can be had.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/setup.sh
# The real TT-Metal runtime for crates/cli/tests/ttmetal_real.rs (cached; a few seconds when
# already installed). Without Python 3.12 those tests say SKIPPED, and fail under CI.
echo "== ttnn (the real TT-Metal runtime, mock-cluster mode)"
if TTMEM_TTNN_HOME=$(./scripts/setup-ttnn.sh | tail -n 1); then
    export TTMEM_TTNN_HOME
else
    echo "ttnn: not installed (see above); the real-runtime tests will say why"
fi

echo "== cargo fmt"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo test"
cargo test --workspace --locked

echo "== miri"
miri_ok=0
if cargo +nightly miri --version >/dev/null 2>&1; then
    miri_ok=1
elif rustup toolchain list 2>/dev/null | grep -q nightly \
    && timeout 300 rustup component add --toolchain nightly miri rust-src >/dev/null 2>&1; then
    miri_ok=1
fi
if ((miri_ok)); then
    MIRIFLAGS="-Zmiri-disable-isolation" cargo +nightly miri test -p ttmem-client --lib miri_
    cargo +nightly miri test -p ttmem-region --lib
else
    echo "miri: skipped (no nightly toolchain with Miri on this machine)"
fi
echo "== fuzz (legacy protocol framing and semantics)"
# A short cargo-fuzz run of crates/host/legacy/fuzz where nightly can build it; the property
# tests in crates/host/legacy/tests/props.rs cover the same body on stable either way.
fuzz_ok=0
if rustup toolchain list 2>/dev/null | grep -q nightly; then
    if command -v cargo-fuzz >/dev/null 2>&1 \
        || timeout 600 cargo install --locked cargo-fuzz@0.13.2 >/dev/null 2>&1; then
        fuzz_ok=1
    fi
fi
if ((fuzz_ok)); then
    (cd crates/host/legacy/fuzz \
        && cargo +nightly fuzz run stream -- -max_total_time="${TTMEM_FUZZ_SECONDS:-20}" 2>&1 | tail -n 3)
else
    echo "fuzz: skipped (no nightly toolchain or cargo-fuzz on this machine)"
fi
echo "== all checks passed"
