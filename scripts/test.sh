#!/usr/bin/env bash
# Every check, as CI runs it: formatting, lints, all tests (unit, property, snapshot, the C ABI
# program, end-to-end with real processes, the real TT-Metal runtime in mock-cluster mode), Miri
# on the shared-memory writer and short fuzz runs (legacy protocol, region decoder, API
# requests) where a nightly toolchain can be had.
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

# The Python package (python/), built with maturin into target/python-venv, and into the ttnn
# venv for the plugin's real-runtime test.
echo "== python package"
PY=$(./scripts/setup-python.sh | tail -n 1)

echo "== cargo fmt"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo test"
cargo test --workspace --locked

echo "== mypy --strict (the package's type hints, python/ttmem)"
"$PY" -m mypy --strict --no-incremental python/ttmem
echo "== pytest (python/tests)"
TTMEM_BIN=$PWD/target/debug/ttmem "$PY" -m pytest -q -p no:cacheprovider python/tests

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
echo "== fuzz (legacy protocol, region decoder, API requests)"
# Short cargo-fuzz runs where nightly can build them; on stable the property tests cover the
# same bodies (crates/host/legacy/tests/props.rs, the region decoder's mutation tests,
# crates/host/daemon/tests/api_requests.rs) either way.
fuzz_ok=0
if rustup toolchain list 2>/dev/null | grep -q nightly; then
    if command -v cargo-fuzz >/dev/null 2>&1 \
        || timeout 600 cargo install --locked cargo-fuzz@0.13.2 >/dev/null 2>&1; then
        fuzz_ok=1
    fi
fi
if ((fuzz_ok)); then
    seconds=${TTMEM_FUZZ_SECONDS:-20}
    (cd crates/host/legacy/fuzz \
        && cargo +nightly fuzz run stream -- -max_total_time="$seconds" 2>&1 | tail -n 1)
    (cd crates/region/fuzz && mkdir -p corpus/decode \
        && cargo +nightly fuzz run decode corpus/decode seeds -- -max_total_time="$seconds" -max_len=300000 2>&1 \
            | tail -n 1)
    (cd crates/host/daemon/fuzz \
        && cargo +nightly fuzz run request -- -max_total_time="$seconds" 2>&1 | tail -n 1)
else
    echo "fuzz: skipped (no nightly toolchain or cargo-fuzz on this machine)"
fi
echo "== all checks passed"
