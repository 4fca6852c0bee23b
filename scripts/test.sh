#!/usr/bin/env bash
# Every check, as CI runs it: formatting, lints, all tests (unit, property, snapshot, the C ABI
# program, end-to-end with real processes), and Miri on the shared-memory writer where a
# nightly toolchain with Miri can be had.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/setup.sh

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
echo "== all checks passed"
